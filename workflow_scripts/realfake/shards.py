"""Synthetic images stored as tar shards (WebDataset layout: ``<key>.png`` + ``<key>.cls``).

Why tar and not a folder of files: IN-1K at 10x is 12.8M images. As tar shards that is a few
hundred files the cluster filesystem reads sequentially, readable by ``tar``, by the
``webdataset`` package and by :class:`ShardDataset` here; as files it is 12.8M inodes and as many
random opens per classifier epoch.

Writing is resumable and deterministic:

* every header is built by us (ustar, mtime 0, uid/gid 0, mode 644), so the same members give
  the same bytes;
* a job appends to ``<shard>.tar.partial`` and flushes after every batch; a fingerprint file
  ``<shard>.tar.partial.json`` records what the partial file is a prefix of (config, plan, LoRA);
* after a crash (SIGKILL included) a rerun keeps the longest prefix of *whole batches* that is
  complete on disk, truncates the rest and continues, so batches have the same composition as in
  an uninterrupted run and the finished tar is byte-identical;
* only the finished tar (end-of-archive blocks written, fsynced) is renamed to ``<shard>.tar``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from fractions import Fraction
from itertools import islice
import tarfile
from pathlib import Path
from collections.abc import Sequence
from typing import Callable, Iterable, Iterator

import numpy as np

from .images import decode_rgb, load_rgb, to_tensor

log = logging.getLogger(__name__)
BLOCK = 512


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
    info.uname = info.gname = ""
    if len(name.encode()) > 99:
        raise ValueError(f"tar member name longer than 99 bytes: {name!r}")
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _padded(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK * BLOCK


def scan(path: str | os.PathLike, finished: bool = False) -> list[tuple[str, int, int, int]]:
    """Complete members of a (possibly truncated) tar: (name, data offset, size, end offset).

    Stops at the end-of-archive block, at a header that does not parse, or at a member whose
    data runs past the end of the file (the one a crash interrupted). With ``finished`` (a shard
    the workflow closed) anything but a clean end-of-archive block is an error naming the file and
    the byte offset: a shard cut short, cut at a member boundary or with a damaged header would
    otherwise be read as a smaller set without a word."""
    members = []
    size = os.path.getsize(path)
    problem = "it ends without the end-of-archive block (cut at a member boundary?)"
    with open(path, "rb") as f:
        off = 0
        while off + BLOCK <= size:
            f.seek(off)
            buf = f.read(BLOCK)
            if buf.count(0) == BLOCK:
                problem = None
                break
            try:
                info = tarfile.TarInfo.frombuf(buf, "utf-8", "strict")
            except tarfile.HeaderError as exc:
                problem = f"the member header at byte {off} does not parse ({exc})"
                break
            end = off + BLOCK + _padded(info.size)
            if end > size:
                problem = f"member {info.name} at byte {off} runs past the end of the file (cut short)"
                break
            members.append((info.name, off + BLOCK, info.size, end))
            off = end
    if finished and problem:
        raise ValueError(f"damaged synthetic shard {path}: {problem}, after {len(members)} complete members; "
                         "delete it and rerun to regenerate it")
    return members


def synthetic_id(source_id: str, replica: int) -> str:
    """Image id of replica ``replica`` of the synthetic images made from real image ``source_id``."""
    return f"{source_id.replace('/', '_')}_r{replica}"


def shard_key(image_id: str) -> str:
    """Tar member stem of a synthetic image: the image id with '/' and '.' made safe. Two real images
    whose ids differ only in those characters would share keys; indexing refuses them
    (``data.check_keys``)."""
    key = image_id.replace("/", "_").replace(".", "_")
    if len(key.encode()) > 90:  # tar's 100-byte name field counts UTF-8 bytes, not characters
        head = key.encode()[:70].decode(errors="ignore")
        key = head + "_" + hashlib.sha256(image_id.encode()).hexdigest()[:16]
    return key


def member_names(key: str, fmt: str = "png") -> tuple[str, str]:
    return f"{key}.{fmt}", f"{key}.cls"


class ShardWriter:
    """Append-only writer of one shard with resume at batch granularity (see module docstring).

    ``batches`` lists the keys of every batch in generation order; ``fingerprint`` is any JSON
    value identifying what is being generated (a different one discards an old partial file).
    """

    def __init__(self, final: str | os.PathLike, batches: list[list[str]], fingerprint, fmt: str = "png"):
        self.final = Path(final)
        self.partial = self.final.with_name(self.final.name + ".partial")
        self.finger_path = self.final.with_name(self.final.name + ".partial.json")
        self.batches, self.fmt = batches, fmt
        self.final.parent.mkdir(parents=True, exist_ok=True)
        finger = json.dumps(fingerprint, sort_keys=True, default=str)
        self.done_batches = 0
        if self.partial.exists() and self.finger_path.exists() and self.finger_path.read_text() == finger:
            self.done_batches, keep = self._complete_prefix()
            with open(self.partial, "r+b") as f:
                f.truncate(keep)
            log.info("resuming %s: %d of %d batches already complete", self.partial, self.done_batches,
                     len(batches))
        else:
            if self.partial.exists():
                log.info("discarding %s: it was written for a different config or plan", self.partial)
            self.partial.write_bytes(b"")
            self.finger_path.write_text(finger)
        self._f = open(self.partial, "ab")

    def _complete_prefix(self) -> tuple[int, int]:
        members = scan(self.partial)
        pos, keep, done = 0, 0, 0
        for keys in self.batches:
            expected = [n for k in keys for n in member_names(k, self.fmt)]
            got = [m[0] for m in members[pos : pos + len(expected)]]
            if got != expected:
                break
            pos += len(expected)
            keep = members[pos - 1][3]
            done += 1
        return done, keep

    @property
    def pending(self) -> list[list[str]]:
        return self.batches[self.done_batches :]

    def _add(self, name: str, data: bytes) -> None:
        self._f.write(_header(name, len(data)))
        self._f.write(data)
        self._f.write(b"\0" * (_padded(len(data)) - len(data)))

    def write_batch(self, items: Iterable[tuple[str, bytes, int]]) -> None:
        """Append one batch, ``(key, encoded image, label)`` per image, in the planned order."""
        items = list(items)
        expected = self.batches[self.done_batches]
        if [k for k, _, _ in items] != expected:
            raise RuntimeError(f"batch {self.done_batches} of {self.final} has keys out of plan")
        for key, data, label in items:
            img_name, cls_name = member_names(key, self.fmt)
            self._add(img_name, data)
            self._add(cls_name, str(int(label)).encode())
        self._f.flush()
        self.done_batches += 1

    def close(self) -> None:
        """Finish the archive and rename it into place; only call after every batch was written."""
        if self.done_batches != len(self.batches):
            raise RuntimeError(f"{self.final}: {self.done_batches} of {len(self.batches)} batches written")
        self._f.write(b"\0" * (2 * BLOCK))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.partial, self.final)
        self.finger_path.unlink(missing_ok=True)


def iter_shard(path: str | os.PathLike) -> Iterator[tuple[str, bytes, int]]:
    """(key, image bytes, label) for every image of a finished shard, in stored order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"synthetic shard not found: {path} (regenerate it: it is listed in the manifest)")
    pending: dict[str, bytes] = {}
    with open(path, "rb") as f:
        for name, off, size, _ in scan(path, finished=True):
            f.seek(off)
            data = f.read(size)
            key, ext = name.rsplit(".", 1)
            if ext == "cls":
                if key not in pending:
                    raise ValueError(f"corrupt shard {path}: label member {name} without its image")
                yield key, pending.pop(key), int(data)
            else:
                pending[key] = data
    if pending:
        raise ValueError(f"corrupt or truncated shard {path}: {len(pending)} image(s) without labels")


def read_images(shard: str | os.PathLike, keys: Iterable[str] | None = None, size: int | None = None) -> dict:
    """{key: RGB PIL image} for the wanted keys of one shard (all if ``keys`` is None)."""
    want = None if keys is None else set(keys)
    out = {}
    for key, data, _ in iter_shard(shard):
        if want is None or key in want:
            out[key] = decode_rgb(data, size, where=f"member {key} of shard {shard}")
    if want is not None and want - out.keys():
        missing = sorted(want - out.keys())
        raise ValueError(f"shard {shard} lacks {len(missing)} image(s) the manifest lists, e.g. {missing[0]}")
    return out


try:  # torch is a dependency of every stage that reads shards for training
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError:  # pragma: no cover
    IterableDataset = object


def interleave(sources: list, rng: random.Random, open_at_once: int = 8) -> Iterator:
    """Items of several iterables mixed: up to ``open_at_once`` are read at a time, the next item
    drawn from a random open one; an exhausted source is replaced by the next waiting one."""
    waiting = list(sources)
    active: list[Iterator] = []
    while waiting or active:
        while waiting and len(active) < open_at_once:
            active.append(iter(waiting.pop(0)))
        k = rng.randrange(len(active))
        try:
            yield next(active[k])
        except StopIteration:
            active.pop(k)


def stream_order(files: list, shards: list, n_shard_items: int, rng: random.Random, buffer: int,
                 read_shard, open_at_once: int = 8) -> Iterator:
    """The order one loader worker yields its items in: real files and shard items mixed in
    proportion, shards interleaved (``interleave``), then a seeded shuffle buffer. ``read_shard``
    maps a shard to its items; kept apart from decoding so the rehearsal can measure the class mix
    of batches on label-only shards at IN-1K row counts."""
    file_items = iter(files)
    if buffer:
        shards = rng.sample(shards, len(shards))
        order = rng.sample(range(len(files)), len(files))  # the permutation sample(files) would draw
        file_items = (files[j] for j in order)
    its = {"f": file_items, "s": interleave([read_shard(s) for s in shards], rng, open_at_once)}
    left = {"f": len(files), "s": n_shard_items}

    def source():
        while its:
            if len(its) == 1:
                yield from next(iter(its.values()))
                return
            pick = "f" if rng.random() * max(1, left["f"] + left["s"]) < left["f"] else "s"
            try:
                yield next(its[pick])
                left[pick] = max(0, left[pick] - 1)
            except StopIteration:
                del its[pick]

    buf = []
    for item in source():
        if not buffer:
            yield item
            continue
        buf.append(item)
        if len(buf) >= buffer:
            yield buf.pop(rng.randrange(len(buf)))
    rng.shuffle(buf)
    yield from buf


class FileList(Sequence):
    """(path, label) pairs of image files held as one Arrow string array and a numpy label array:
    no Python object per image, so 1.28 M real training images cost their bytes (not ~200 bytes of
    tuple and string objects each) and forked loader workers share the pages instead of touching
    every object's reference count. Items are built as they are read; a step slice (a worker's
    share) is another FileList."""

    def __init__(self, paths, labels):
        import pyarrow as pa

        self.paths = paths if isinstance(paths, pa.Array) else pa.array(paths, type=pa.large_string())
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        if isinstance(i, slice):
            idx = np.arange(len(self))[i]
            return FileList(self.paths.take(idx), self.labels[idx])
        return self.paths[int(i)].as_py(), int(self.labels[i])


def as_unit(unit) -> tuple[str, int, int]:
    """A stream unit: a whole shard (its path) or ``(path, part, parts)``, the shard's streamed
    members whose ordinal ``i`` has ``i % parts == part``."""
    return (unit, 0, 1) if isinstance(unit, str) else tuple(unit)


def split_unit(unit, k: int) -> list[tuple[str, int, int]]:
    """A unit cut into ``k`` interleaved parts that together hold its members once each."""
    shard, part, parts = as_unit(unit)
    return [(shard, part + parts * j, parts * k) for j in range(k)]


def _weight(units: list) -> Fraction:
    """Shards' worth of a list of units (a part of p counts 1/p)."""
    return sum((Fraction(1, as_unit(u)[2]) for u in units), Fraction(0))


def worker_units(units: list, wid: int, nw: int) -> list:
    """Loader worker ``wid`` of ``nw``'s units: every ``nw``-th unit when there are at least as many
    units as workers; otherwise one part of a unit, the unit cut among the workers that share it,
    so every worker streams images and none is read twice, whatever the number of shards."""
    if len(units) >= nw or not units:
        return units[wid::nw]
    n = len(units)
    sharing = len(range(wid % n, nw, n))
    return [split_unit(units[wid % n], sharing)[wid // n]]


def _lazy(fn, *args):
    """An iterable that calls ``fn(*args)`` only when first iterated (a shard opens when read)."""
    yield from fn(*args)


class Seeded:
    """``transform(image)`` run under its own seed: Python's, NumPy's and torch's global generators
    are seeded for the call and restored afterwards, so the result depends on the seed alone."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, image, seed: int):
        import torch  # shards is imported by torch-free stages (reporting); only loaders call this

        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            try:
                return self.transform(image)
            finally:
                random.setstate(py)
                np.random.set_state(npy)


STREAM_CHUNK = 16  # images a loader stream hands over at a time (one round)


def chunk_rounds(streams: dict, chunk: int = STREAM_CHUNK) -> Iterator[list]:
    """Rounds over several streams ({number: iterator}): round r holds the r-th ``chunk`` items of
    every stream not yet exhausted, as (number, items) in number order. The order of a set of
    streams is that of its rounds, whoever reads them: a loader worker reading some of the streams
    yields one round per round of them all, so merging the workers' rounds by number gives the
    same sequence for any worker count."""
    active = dict(sorted(streams.items()))
    while active:
        out = []
        for v in list(active):
            items = list(islice(active[v], chunk))
            if len(items) < chunk:
                del active[v]
            if items:
                out.append((v, items))
        if out:
            yield out


class ShardDataset(IterableDataset):
    """Stream (image tensor in [-1, 1], label) from tar shards and image files, through a fixed
    number of seeded **streams**: stream v of ``streams`` reads every ``streams``-th shard (or a
    part of one, ``worker_units``) and every ``streams``-th file, shards interleaved (several open
    at once) and shuffled per epoch with its own seeded buffer (``stream_order``). No per-image file
    opens for synthetic data. ``keep`` ({shard: set of keys}) streams only those images of the
    shards it names (a filtered manifest); other shards are read whole. ``transform`` (a per-image
    training transform, e.g. timm's) is applied to each decoded image at its own size, under a seed
    drawn from (seed, epoch, stream).

    DataLoader workers split the streams (worker w of n reads streams w, w + n, ...) and yield
    rounds (``chunk_rounds``): ``(round, [(stream, images, labels), ...])``, ``STREAM_CHUNK``
    images per stream and round. ``in_stream_order`` merges them back, so the images, their order
    and their augmentation depend on the seed, the epoch and ``streams``, never on the number of
    workers: a job gets the same classifier with 1 or 15 decode processes. ``rank`` (of a
    data-parallel job) makes its streams' seeds differ from the other processes'."""

    def __init__(self, shards: list[str], size: int, seed: int = 0, shuffle_buffer: int = 0,
                 files: list[tuple[str, int]] | None = None, shard_images: int = 0,
                 keep: dict[str, set[str]] | None = None, transform=None, rank: int = 0, streams: int = 1,
                 chunk: int = STREAM_CHUNK):
        self.shards, self.size, self.seed, self.buffer = list(shards), size, seed, shuffle_buffer
        self.files = files if isinstance(files, FileList) else list(files or [])
        self.shard_images, self.keep = shard_images, keep or {}
        self.transform = None if transform is None else Seeded(transform)
        self.epoch, self.rank, self.streams, self.chunk = 0, rank, streams, chunk

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _decode(self, data, aug: random.Random):
        """Shard member bytes or a real image's path -> tensor in [-1, 1], shape (3, size, size),
        or the transform's output for the image at its own size."""
        size = self.size if self.transform is None else None
        if isinstance(data, tuple):  # (shard, key, bytes) of a shard member
            shard, key, raw = data
            im = decode_rgb(raw, size, where=f"member {key} of shard {shard}")
        else:
            im = load_rgb(data, size)
        if self.transform is not None:
            return self.transform(im, aug.getrandbits(63))
        return to_tensor([im])[0]

    def _read(self, unit):
        shard, part, parts = as_unit(unit)
        want = self.keep.get(shard)
        i = 0
        for key, data, label in iter_shard(shard):
            if want is None or key in want:
                if i % parts == part:
                    yield (shard, key, data), label
                i += 1

    def stream(self, v: int) -> Iterator:
        """(image tensor, label) of stream ``v``, in its seeded order for this epoch."""
        g = self.rank * self.streams + v  # the stream's number across a data-parallel job
        rng = random.Random(f"{self.seed}|{self.epoch}|{g}")
        aug = random.Random(f"{self.seed}|{self.epoch}|{g}|augment")
        mine = worker_units(self.shards, v, self.streams)
        files = self.files[v :: self.streams]
        # this stream's share of the images, by the sizes of its shards and parts (exact fractions)
        n_shard = int(self.shard_images * _weight(mine) / _weight(self.shards)) if self.shards else 0
        for data, label in stream_order(files, [_lazy(self._read, s) for s in mine], n_shard, rng, self.buffer,
                                        lambda s: s):
            yield self._decode(data, aug), label

    def __iter__(self):
        """This loader worker's rounds (all streams' in the main process)."""
        import torch

        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        mine = {v: self.stream(v) for v in range(wid, self.streams, nw)}
        for r, chunks in enumerate(chunk_rounds(mine, self.chunk)):
            yield r, [(v, torch.stack([x for x, _ in items]), torch.as_tensor([y for _, y in items]))
                      for v, items in chunks]

    def samples(self, workers: int = 0) -> Iterator:
        """(image tensor, label) one at a time in stream order, read by ``workers`` loader processes."""
        for x, y in in_stream_order(loader_rounds(self, workers)):
            yield from zip(x, y.tolist())


def loader_rounds(dataset: ShardDataset, workers: int):
    """A DataLoader over a ShardDataset's rounds: items as the workers yield them (no batching)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=None, num_workers=workers)


def in_stream_order(rounds) -> Iterator:
    """(images, labels) chunks in stream order from a loader's ``(round, chunks)`` items. torch's
    DataLoader hands over the workers' items in turn (worker 0's first, worker 1's first, ...;
    a worker that is done is skipped) and each worker yields one item per round, so every item of
    round r comes before any of round r + 1: a round's chunks are sorted by stream and passed on
    when the next round begins."""
    current, held = 0, []
    for r, chunks in rounds:
        if r < current:
            raise RuntimeError(f"loader item of round {r} after round {current}: the loader must keep its workers' "
                               "order (in_order=True)")
        if r > current:
            for _, x, y in sorted(held, key=lambda c: c[0]):
                yield x, y
            current, held = r, []
        held.extend(chunks)
    for _, x, y in sorted(held, key=lambda c: c[0]):
        yield x, y
