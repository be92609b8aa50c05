"""Ground floor: image decoding (imports nothing of ours).

Every stage decodes images through here: one RGB conversion, one resize, one error message for a
corrupt file, one tensor layout.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def fit_rgb(im: Image.Image, size: int | None) -> Image.Image:
    """RGB, resized (bicubic) to size x size when it is not already."""
    rgb = im.convert("RGB")
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BICUBIC)
    return rgb


def to_tensor(images):
    """RGB images of one size -> float tensor in [-1, 1], shape (N, 3, H, W)."""
    import torch

    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def load_rgb(path: str | Path, size: int | None = None) -> Image.Image:
    """Open an image as RGB (grayscale/CMYK/palette converted); a clear error names a corrupt file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"corrupt or unreadable image: {path} ({exc})") from exc
    return fit_rgb(rgb, size)


def decode_rgb(data: bytes, size: int | None = None) -> Image.Image:
    """Encoded image bytes (a shard member) -> RGB, resized like ``fit_rgb``."""
    return fit_rgb(Image.open(io.BytesIO(data)), size)


def images_tensor(paths, size: int):
    """Stack image files into a float tensor in [-1, 1], shape (N, 3, size, size)."""
    return to_tensor(load_rgb(p, size) for p in paths)
