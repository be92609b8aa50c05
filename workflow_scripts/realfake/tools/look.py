"""How far a set's images are from the look of the mini world's real digits (docs/mini-world.md,
"The mini recipe and why").

The real digits are 8x8 images upsampled to 32 px, so they hold almost nothing finer than an 8x8 grid;
the base model draws crisp font digits. ``above_grid_share`` measures that: the share of an image's
(mean-removed) energy left after box-averaging it to the grid and upsampling back bilinearly. It is
1.0 for a one-pixel checkerboard and small for an image that is an upsampled grid image (0.04 for
the real digits: box-averaging is not the exact inverse of their bilinear upsample).

    python -m realfake.tools.look --real-index results/mini/real_index.parquet \\
        --set base='results/synthetic/mini/base/s*/2x/shards/*.tar' \\
        --set ours='results/synthetic/mini/ours/s*/2x/shards/*.tar' --vae results/base_model/tiny/vae

prints one row per set (images, mean share) and, with ``--vae``, the real training images after a
round trip through that VAE (encode, take the mean latent, decode): the closest the generator can
come to the real look.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
from PIL import Image

from ..images import decode_rgb, images_tensor, load_rgb
from ..shards import iter_shard


def gray(im: Image.Image) -> np.ndarray:
    """Mean of the RGB channels, in [0, 1]."""
    return np.asarray(im.convert("RGB"), dtype=np.float64).mean(axis=2) / 255.0


def above_grid_share(x: np.ndarray, grid: int = 8) -> float:
    """Share of the mean-removed energy of a square grayscale image (values in [0, 1]) that a
    ``grid`` x ``grid`` box average, upsampled back bilinearly, does not keep. NaN for a flat image."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"expected a square grayscale image, got shape {x.shape}")
    size = x.shape[0]
    im = Image.fromarray(x.astype(np.float32), mode="F")
    back = im.resize((grid, grid), Image.BOX).resize((size, size), Image.BILINEAR)
    resid = x - np.asarray(back, dtype=np.float64)
    total = ((x - x.mean()) ** 2).sum()
    return float((resid**2).sum() / total) if total > 0 else float("nan")


def shard_images(pattern: str) -> Iterator[np.ndarray]:
    """Grayscale arrays of the images in the shards matching a glob pattern, one at a time."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no shard matches {pattern}")
    return (gray(decode_rgb(data, None)) for p in paths for _, data, _ in iter_shard(p))


def real_paths(index: str, split: str = "train") -> list[str]:
    """The image paths of one split of a real_index.parquet."""
    df = pd.read_parquet(index, columns=["path", "split"])
    return df.loc[df["split"] == split, "path"].tolist()


def vae_round_trip(vae_dir: str, paths: list[str], batch: int = 64) -> Iterator[np.ndarray]:
    """Grayscale arrays of the images after encoding (mean latent) and decoding with a diffusers VAE,
    ``batch`` images at a time."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    for i in range(0, len(paths), batch):
        with torch.no_grad():
            x = images_tensor(paths[i : i + batch], None)
            y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        yield from (((a.mean(0) + 1) / 2).numpy().astype(np.float64) for a in y)


def summary(name: str, images: Iterable[np.ndarray], grid: int) -> dict:
    """One table row: the image count and the mean share (flat images, whose share is NaN, left out)."""
    n, total, counted = 0, 0.0, 0
    for x in images:
        n += 1
        share = above_grid_share(x, grid)
        if not np.isnan(share):
            total, counted = total + share, counted + 1
    return {"set": name, "images": n, "above_grid_share": round(total / counted, 3) if counted else float("nan")}


def table(real_index: str, sets: dict[str, str], vae: str | None = None, grid: int = 8) -> pd.DataFrame:
    paths = real_paths(real_index)
    rows = [summary("real (train split)", (gray(load_rgb(p)) for p in paths), grid)]
    if vae:
        rows.append(summary("real through the VAE", vae_round_trip(vae, paths), grid))
    rows += [summary(name, shard_images(pattern), grid) for name, pattern in sets.items()]
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real-index", required=True, help="results/<dataset>/real_index.parquet")
    p.add_argument("--set", action="append", default=[], metavar="NAME=GLOB", help="a synthetic set's shard tars")
    p.add_argument("--vae", default=None, help="a diffusers VAE folder (e.g. results/base_model/tiny/vae)")
    p.add_argument("--grid", type=int, default=8)
    args = p.parse_args(argv)
    sets = {}
    for item in args.set:
        name, sep, pattern = item.partition("=")
        if not sep or not name or not pattern:
            p.error(f"--set wants NAME=GLOB, got {item!r}")
        sets[name] = pattern
    print(table(args.real_index, sets, args.vae, args.grid).to_string(index=False))


if __name__ == "__main__":
    sys.exit(main())
