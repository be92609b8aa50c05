"""What a classifier trains on: the training set from the real index and the synthetic manifests,
held in memory (mini world) or streamed from tar shards by loader workers (paper scale), split
over data-parallel processes; and the batch augmentations (pad-crop and flip, RandAugment,
mixup/CutMix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from . import recipes
from .data import check_table, frame_tensor, read_table
from .distributed import World
from .settings import Classify
from .shards import FileList, ShardDataset, as_unit, in_stream_order, loader_rounds, split_unit


def augment(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random crop after padding, optional horizontal flip (per sample, seeded)."""
    n, _, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad), value=-1.0)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        x = torch.stack([xp[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if flip:
        m = torch.rand(n, generator=gen) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(-1), x)
    return x


def rand_augment(x: torch.Tensor, num_ops: int, magnitude: int) -> torch.Tensor:
    """torchvision RandAugment per image of a [-1, 1] float batch (on whatever device the batch is);
    its random choices come from torch's global generator, which is seeded and checkpointed."""
    from torchvision.transforms import v2

    ra = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
    u8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return torch.stack([ra(im) for im in u8]).float() / 127.5 - 1.0


def mix_batch(x: torch.Tensor, t: torch.Tensor, gen: torch.Generator, mixup: float, cutmix: float):
    """Mixup or CutMix (one of them per batch, chosen with probability 1/2 when both are on, as in
    timm) of a batch with its reverse; ``t`` are soft targets, mixed by the pasted area fraction.
    lambda ~ Beta(alpha, alpha) is drawn from ``gen`` so a resumed run mixes the same way."""
    if mixup <= 0 and cutmix <= 0:
        return x, t
    use_cutmix = cutmix > 0 and (mixup <= 0 or float(torch.rand(1, generator=gen)) < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen))).beta(alpha, alpha))
    other = x.flip(0)
    if use_cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = (int(v) for v in (torch.randint(h, (1,), generator=gen), torch.randint(w, (1,), generator=gen)))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = other[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * other
    return x, lam * t + (1 - lam) * t.flip(0)


class MemoryData:
    """The whole training set decoded once into a tensor (mini world). ``batches`` yields global
    batches (every process draws the same permutation); the training loop keeps its part."""

    global_batches = True

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, int(np.ceil(len(self) / batch_size)))

    def batches(self, epoch: int, batch_size: int, gen: torch.Generator):
        perm = torch.randperm(len(self.x), generator=gen)
        for i in range(0, len(self.x), batch_size):
            idx = perm[i : i + batch_size]
            yield self.x[idx], self.y[idx]


class StreamData:
    """Worker processes stream tar shards (and real files) through ``classify.streams`` seeded
    shuffle streams per process (``ShardDataset``); the order of the images and their augmentation
    depend on the streams, not on the ``workers`` that decode them. The
    manifests are read in record batches for their shard column only (dictionary-encoded: a count
    per shard, never a string per row); a shard whose every row the manifests list is streamed
    whole, and only a filtered manifest's shards carry a key set, read for those shards' rows alone.
    So setting up a 12.8 M-row 10x set holds its shard names and counts, not its member names.

    Data parallel (``world``): each process streams its own shards (``split_shards``, balanced by
    rows) and every N-th real file, so no image is read by two processes. ``batches`` yields this
    process's batches of batch_size / N rows, the same number on every process in an epoch (enough
    for the process with the most rows; ``fixed_batches``)."""

    global_batches = False

    def __init__(self, real: pd.DataFrame | None, manifests: list[str], size: int, seed: int, c, transform=None,
                 world: World = World(), workers: int = 0):
        counts: dict[str, int] = {}
        for m in manifests:
            for shard, n in manifest_shard_counts(m).items():
                counts[shard] = counts.get(shard, 0) + n
        files = FileList([] if real is None else real.path, [] if real is None else real.label)
        if not files and not counts:
            raise ValueError("classifier has no training data: neither real data nor a synthetic manifest was given")
        self.n = len(files) + sum(counts.values())
        units = rank_units(counts, world.size)
        parts = split_shards(units, world.size)
        self.rank_rows = [len(range(r, len(files), world.size)) + sum(units[u] for u in part)
                          for r, part in enumerate(parts)]
        mine = parts[world.rank]
        shards = {as_unit(u)[0] for u in mine}  # each shard once, however many parts of it this process reads
        filtered = {s for s in shards if counts[s] < shard_rows(s)}  # a filtered manifest decides which members
        keep = manifest_members(manifests, filtered) if filtered else {}
        self.dataset = ShardDataset(mine, size, seed, c.shuffle_buffer, files=files[world.rank :: world.size],
                                    shard_images=sum(units[u] for u in mine), keep=keep, transform=transform,
                                    rank=world.rank, streams=c.streams)
        self.workers, self.world = workers, world  # Classify.loader_workers: at most c.streams

    def __len__(self):
        return self.n

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, int(np.ceil(max(self.rank_rows) / (batch_size // self.world.size))))

    def batches(self, epoch: int, batch_size: int, gen: torch.Generator):
        self.dataset.set_epoch(epoch)
        local = batch_size // self.world.size
        chunks = in_stream_order(loader_rounds(self.dataset, self.workers))
        batches = ((x, torch.as_tensor(y, dtype=torch.long)) for x, y in chunks)
        yield from fixed_batches(batches, local, self.steps_per_epoch(batch_size))


def rank_units(counts: dict[str, int], n: int) -> dict:
    """{stream unit: rows} for ``n`` data-parallel processes: the shards whole, or, when there are
    fewer shards than processes, each shard cut into interleaved parts (``shards.split_unit``) so
    that every process has rows to stream."""
    if len(counts) >= n or not counts:
        return dict(counts)
    k = -(-n // len(counts))
    return {u: len(range(u[1], rows, u[2])) for shard, rows in counts.items() for u in split_unit(shard, k)}


def split_shards(counts: dict, n: int) -> list[list]:
    """Shards over ``n`` processes, balanced by rows (largest first, each to the least loaded
    process; ties to the lower rank); each process's shards keep the manifests' order."""
    names = list(counts)
    if n == 1:
        return [names]
    load, owner = [0] * n, {}
    for i in sorted(range(len(names)), key=lambda i: (-counts[names[i]], i)):
        r = load.index(min(load))
        owner[i] = r
        load[r] += counts[names[i]]
    return [[names[i] for i in range(len(names)) if owner[i] == r] for r in range(n)]


def fixed_batches(batches, size: int, steps: int):
    """Exactly ``steps`` batches of ``size`` rows from a stream of (x, y) batches of any size (a
    loader's workers each end on a short batch): rows carry over into the next batch, and once the
    stream ends the last batches are topped up with the epoch's first rows, as torch's
    DistributedSampler pads. Rows beyond ``steps`` x ``size`` are not read."""
    first, kept = [], 0  # the epoch's first ``size`` rows, in pieces

    def rows():
        nonlocal kept
        for x, y in batches:
            if kept < size:
                first.append((x[: size - kept], y[: size - kept]))
                kept += len(first[-1][1])
            yield x, y
        if not first:
            raise ValueError("this process's part of the training data is empty: fewer images than data-parallel "
                             "processes")
        while True:
            yield from first

    xs, ys, have, done = [], [], 0, 0
    for x, y in rows():
        xs.append(x)
        ys.append(y)
        have += len(y)
        while have >= size and done < steps:
            xb, yb = torch.cat(xs), torch.cat(ys)
            yield xb[:size], yb[:size]
            done += 1
            xs, ys, have = [xb[size:]], [yb[size:]], have - size
        if done == steps:
            return


def shard_rows(shard: str) -> float:
    """Images a finished shard holds, from its rows file (``<k>.tar`` -> ``<k>.parquet``, written
    by the same job); infinity when that file is not there (then the manifest's keys are used)."""
    rows = Path(shard).with_suffix(".parquet")
    return pq.ParquetFile(rows).metadata.num_rows if rows.is_file() else float("inf")


MANIFEST_BATCH = 1 << 20  # manifest rows per record batch read while setting up a stream loader


def open_manifest(path: str, columns: list[str]) -> pq.ParquetFile:
    """A manifest opened for record batches of ``columns``, its shard column dictionary-encoded
    (``data.check_table`` names a missing file or column)."""
    check_table(path, "manifest", columns)
    return pq.ParquetFile(path, read_dictionary=["shard"])


def manifest_shard_counts(path: str) -> dict[str, int]:
    """Rows per shard of a manifest, in order of first appearance, reading the shard column as a
    dictionary (codes, not strings) one record batch at a time."""
    counts: dict[str, int] = {}
    pf = open_manifest(path, ["shard"])
    for batch in pf.iter_batches(batch_size=MANIFEST_BATCH, columns=["shard"]):
        col = batch.column(0)
        if col.null_count:
            raise ValueError(f"{path}: {col.null_count} rows have no shard")
        codes = col.indices.to_numpy(zero_copy_only=False)
        n = np.bincount(codes, minlength=len(col.dictionary))
        first = np.unique(codes, return_index=True)
        names = col.dictionary.to_pylist()
        for code in first[0][np.argsort(first[1])]:
            counts[names[code]] = counts.get(names[code], 0) + int(n[code])
    return counts


def manifest_members(manifests: list[str], shards: set[str]) -> dict[str, set[str]]:
    """{shard: member keys (file name without extension)} for the rows of ``shards`` only."""
    keep: dict[str, set[str]] = {s: set() for s in shards}
    for m in manifests:
        pf = open_manifest(m, ["shard", "member"])
        for batch in pf.iter_batches(batch_size=MANIFEST_BATCH, columns=["shard", "member"]):
            col = batch.column(0)
            names = np.array(col.dictionary.to_pylist(), dtype=object)
            codes = col.indices.to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(np.isin(names, list(shards))[codes])
            if not len(rows):
                continue
            members = batch.column(1).take(rows).to_pylist()
            for shard, member in zip(names[codes[rows]], members):
                keep[shard].add(member.rsplit(".", 1)[0])
    return keep


def training_set(real: pd.DataFrame | None, manifests: list[str]) -> pd.DataFrame:
    """Rows (path, or shard and member; label) of the real training rows and the manifests."""
    parts = [] if real is None else [real[["path", "label"]]]
    for m in manifests:  # manifest or filtered manifest; only the columns the loaders need
        parts.append(read_table(m, "manifest", columns=["shard", "member", "label"]))
    if not parts:
        raise ValueError("classifier has no training data: neither real data nor a synthetic manifest was given")
    return pd.concat(parts, ignore_index=True)


def training_data(c: Classify, real: pd.DataFrame | None, manifests: list[str], size: int, seed: int,
                  world: World = World(), workers: int = 0):
    """The classifier's training data as ``classify.loader`` and ``classify.transform`` ask:
    ``workers`` loader processes streaming shards and files through the recipe's per-image
    transform (this process's part of them), or (mini world) the whole set decoded once at ``size``."""
    if c.loader == "stream":  # manifests read for shard counts only: no row per synthetic image in memory
        return StreamData(real, manifests, size, seed, c, recipes.train_transform(c, size), world, workers)
    train = training_set(real, manifests)
    return MemoryData(frame_tensor(train, size), torch.as_tensor(train.label.to_numpy(), dtype=torch.long))
