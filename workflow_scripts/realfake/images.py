"""Ground floor: image decoding (imports nothing of ours).

Every stage decodes images through here: one RGB conversion, one resize, one error message for a
corrupt file, one tensor layout.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def as_rgb(im: Image.Image) -> Image.Image:
    """RGB from any mode. 16-bit grayscale (PNG/TIFF ``I;16``, and ``I`` holding values above 255) is
    scaled to 8 bits (x255/65535); Pillow's own conversion clips it, so an ordinary 16-bit image
    would come out almost all white. Float images have no agreed range and are refused."""
    if im.mode in WIDE_MODES:
        arr = np.asarray(im).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{im.mode} image with values outside 0..65535")
        if im.mode != "I" or (arr.size and arr.max() > 255):
            arr = arr * (255.0 / 65535.0)
        im = Image.fromarray(np.rint(arr).astype(np.uint8), "L")
    elif im.mode == "F":
        raise ValueError("floating-point image (mode F) has no defined pixel range: save it as 8- or 16-bit")
    return im.convert("RGB")


EXIF_ORIENTATION = 0x0112


def upright(im: Image.Image) -> Image.Image:
    """The image as every viewer shows it: a photo whose EXIF orientation says it was stored sideways
    or mirrored (phones and cameras do this) is rotated to match; others are returned as they are."""
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # an unreadable EXIF block: Pillow's own decoding of the pixels still decides
        return im
    return im if orientation in (None, 1) else ImageOps.exif_transpose(im)


def not_a_file(path: Path) -> str:
    """Why ``path`` (which is not a regular file) cannot be an image, for the skip message."""
    if path.is_symlink() and not path.exists():
        return "a symbolic link that leads nowhere or in a loop"
    if not path.exists():
        return "not found"
    mode = path.stat().st_mode
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return f"{what}, not an image file"
    return "not a regular file"


def fit_rgb(im: Image.Image, size: int | None) -> Image.Image:
    """RGB, resized (bicubic) to size x size when it is not already."""
    rgb = as_rgb(im)
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BICUBIC)
    return rgb


def to_tensor(images):
    """RGB images of one size -> float tensor in [-1, 1], shape (N, 3, H, W)."""
    import torch

    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def _open_rgb(source, where) -> Image.Image:
    """Decode a file path or byte stream to RGB, upright; anything that does not decode is a
    ValueError naming ``where`` (the file, or the shard and member)."""
    try:
        with Image.open(source) as im:
            im.load()
            return as_rgb(upright(im))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"corrupt or unreadable image: {where} ({exc})") from exc


def load_rgb(path: str | Path, size: int | None = None) -> Image.Image:
    """Open an image as RGB (grayscale/CMYK/palette converted, EXIF orientation applied); a clear error
    names a corrupt file. Only regular files are opened (a FIFO named ``x.jpg`` would block the job)."""
    if not Path(path).is_file():
        why = not_a_file(Path(path))
        raise FileNotFoundError(f"image not found: {path}" + ("" if why == "not found" else f" ({why})"))
    return fit_rgb(_open_rgb(path, path), size)


def decode_rgb(data: bytes, size: int | None = None, where: str = "image bytes") -> Image.Image:
    """Encoded image bytes (a shard member) -> RGB, resized like ``fit_rgb``; bytes that do not
    decode are an error naming ``where`` they came from (the shard and member)."""
    return fit_rgb(_open_rgb(io.BytesIO(data), where), size)


def images_tensor(paths, size: int):
    """Stack image files into a float tensor in [-1, 1], shape (N, 3, size, size)."""
    return to_tensor(load_rgb(p, size) for p in paths)
