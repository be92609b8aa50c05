"""Long per-image loops (captions, embeddings): images decoded in DataLoader workers, results
written in resumable chunks.

Rows ``[k * size, (k + 1) * size)`` of a loop's output go to ``<out>.chunks/<k>.pt`` (atomically,
one file per chunk) as soon as they are computed. A fingerprint file names what the chunks belong
to (config, input rows, chunk size); a rerun after a crash (SIGKILL included) keeps the chunks of
the same fingerprint and computes only the missing ones, so at IN-1K scale a killed 10-hour BLIP-2
job loses at most one chunk. The stage assembles the final output from the chunks and then calls
:meth:`Chunks.remove`. Nothing here knows about models: the stage passes a function per chunk.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from .atomic import fault_hook, write_torch
from .images import fit_rgb, load_rgb, to_tensor

log = logging.getLogger(__name__)


class Chunks:
    """The chunk folder of one output file. ``n`` rows in chunks of ``size``."""

    def __init__(self, out: str | Path, n: int, size: int, fingerprint, stage: str):
        if size < 1:
            raise ValueError(f"chunk size must be positive, got {size}")
        self.dir = Path(str(out) + ".chunks")
        self.n, self.size, self.stage = n, size, stage
        finger = json.dumps({"fingerprint": fingerprint, "n": n, "size": size}, sort_keys=True, default=str)
        marker = self.dir / "fingerprint.json"
        if self.dir.exists() and not (marker.is_file() and marker.read_text() == finger):
            log.info("discarding %s: written for another config, input or chunk size", self.dir)
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(finger)

    @property
    def count(self) -> int:
        return -(-self.n // self.size)

    def path(self, k: int) -> Path:
        return self.dir / f"{k:06d}.pt"

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.size, min(self.n, (k + 1) * self.size)

    def missing(self) -> list[int]:
        return [k for k in range(self.count) if not self.path(k).is_file()]

    def compute(self, fn: Callable[[int, int], object]) -> None:
        """Call ``fn(lo, hi)`` for every missing chunk and store its result (any torch-saveable
        value with one entry per row)."""
        todo = self.missing()
        if len(todo) < self.count:
            log.info("resuming %s: %d of %d chunks already done", self.dir, self.count - len(todo), self.count)
        for done, k in enumerate(tqdm(todo, desc=f"{self.stage} chunks", mininterval=10), start=1):
            write_torch(fn(*self.bounds(k)), self.path(k))
            fault_hook(self.stage, done)

    def __iter__(self) -> Iterator:
        """The stored chunks in row order (one in memory at a time)."""
        for k in range(self.count):
            yield torch.load(self.path(k), weights_only=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class ImageFiles(torch.utils.data.Dataset):
    """Image files decoded to RGB (and passed through ``transform``, e.g. a CLIP preprocess) in
    the loader's worker processes."""

    def __init__(self, paths: list[str], transform: Callable | None = None):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        im = load_rgb(self.paths[i])
        return im if self.transform is None else self.transform(im)


def image_batches(paths: list[str], batch_size: int, workers: int, transform: Callable | None = None):
    """Batches of decoded images in order: a list of PIL images without ``transform``, else the
    stacked transform outputs. ``workers`` processes decode ahead of the model."""
    collate = list if transform is None else None
    return torch.utils.data.DataLoader(ImageFiles(paths, transform), batch_size=batch_size, num_workers=workers,
                                       collate_fn=collate, shuffle=False)


class ToTensor:
    """Transform: RGB image -> float tensor in [-1, 1] at ``size`` px (as ``images.images_tensor``)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, im):
        return to_tensor([fit_rgb(im, self.size)])[0]
