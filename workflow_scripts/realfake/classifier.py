"""The classifier library: models, augmentation, objectives, data sources, the training loop and
prediction. Used by the classify stage and by every stage that trains or scores with a classifier
(privacy's shadow models, quality features and filter, OOD evaluation).

Mini world: ``smallcnn`` (below). Paper scale: any timm model name (ResNet-50).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint, recipes
from .atomic import fault_hook, read_torch
from .chunks import ToTensor, image_batches
from .data import check_table, frame_tensor, read_table
from .distributed import World
from .errors import SegmentDone, segment_stop
from .models import check_local
from .optim import make_optimizer, make_schedule
from .provenance import seed_everything
from .settings import Classify
from .shards import FileList, ShardDataset, as_unit, split_unit

log = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head: enough for 32 px digits, seconds per epoch on CPU."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def build_model(arch: str, num_classes: int, weights: str | None = None, drop_path_rate: float = 0.0) -> nn.Module:
    """smallcnn, or a timm model (with stochastic depth ``drop_path_rate``), optionally from a
    local ImageNet weights file (head re-initialised)."""
    if arch == "smallcnn":
        if weights:
            raise ValueError("classify.pretrained needs a timm architecture, not smallcnn")
        if drop_path_rate:
            raise ValueError("classify.drop_path_rate needs a timm architecture, not smallcnn")
        return SmallCNN(num_classes)
    import timm

    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    if weights:
        check_local(weights, "pretrained classifier weights", "models.resnet50_pretrained")
        return timm.create_model(arch, pretrained=True, num_classes=num_classes,
                                 pretrained_cfg_overlay={"file": str(weights)}, **extra)
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, **extra)


def load_classifier(path, device: str = "cpu") -> nn.Module:
    """A classifier written by this stage (model.pt), in eval mode on ``device``."""
    state = read_torch(path, "classifier")
    model = build_model(state["arch"], state["num_classes"])
    model.load_state_dict(state["state_dict"])
    return model.eval().to(device)


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features before the classification head (SmallCNN: pooled conv features; timm: pre-logits)."""
    if isinstance(model, SmallCNN):
        return model.features(x).mean((2, 3))
    return model.forward_head(model.forward_features(x), pre_logits=True)


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


@torch.no_grad()
def predict_logits(model, frame: pd.DataFrame, size: int, batch_size: int = 256, workers: int = 0,
                   transform=None) -> torch.Tensor:
    """Float logits on CPU for every row of an index frame, on the model's device; ``workers``
    loader processes decode ``batch_size`` images at a time (50k ImageNet val images never sit in
    memory at once). ``transform`` (PIL -> tensor) defaults to the squash-resize to ``size``; pass
    ``recipes.eval_transform`` for the classifier's own test transform."""
    model.eval()
    device = next(model.parameters()).device
    batches = image_batches(list(frame.path), batch_size, workers, transform or ToTensor(size))
    out = [model(x.to(device)).float().cpu() for x in batches]
    return torch.cat(out) if out else torch.zeros(0, 0)


def attribute_bits(labels: torch.Tensor, n_attributes: int) -> torch.Tensor:
    """Multi-label targets of attribute-combination classes: bit j of the label is attribute j
    (the CelebA reader numbers its classes this way)."""
    return ((labels.long()[:, None] >> torch.arange(n_attributes, device=labels.device)) & 1).float()


def evaluate(model, test: pd.DataFrame, size: int, batch_size: int = 256, attributes: list[str] | None = None,
             workers: int = 0, transform=None) -> dict:
    """Top-1 / top-5 on the real test rows; for an attribute dataset, accuracy per attribute
    (logit > 0 means present) and their mean instead."""
    logits = predict_logits(model, test, size, batch_size, workers, transform)
    y = torch.as_tensor(test.label.to_numpy(), dtype=torch.long)
    if attributes:
        hit = ((logits > 0).float() == attribute_bits(y, len(attributes))).float().mean(0) * 100
        acc = {a: float(h) for a, h in zip(attributes, hit)}
        return {"attr_acc": acc, "attributes": list(attributes), "mean_attr_acc": float(np.mean(list(acc.values()))),
                "n_test": len(y)}
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    return {"top1": float((topk[:, 0] == y).float().mean() * 100),
            f"top{k}": float((topk == y[:, None]).any(1).float().mean() * 100), "n_test": len(y)}


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


class Objective:
    """What the classifier is trained on: classes (cross-entropy, or BCE on one-hot targets as in
    the IN-1K recipe) or attributes (multi-label BCE on the label's attribute bits). Label smoothing
    and mixup/CutMix act on the targets as in timm's train.py: smoothed one-hot targets are mixed
    and scored with timm's soft-target losses; without mixing, hard labels go to (label-smoothing)
    cross-entropy."""

    def __init__(self, num_classes: int, c: Classify, attributes: list[str] | None = None):
        self.attributes = attributes
        self.outputs = len(attributes) if attributes else num_classes
        self.bce = bool(attributes) or c.loss == "bce"
        self.mixup, self.cutmix, self.smoothing = c.mixup, c.cutmix, c.label_smoothing
        self.hard = recipes.hard_label_loss(self.smoothing)
        self.soft = None if not (self.bce or self.mixup > 0 or self.cutmix > 0) else recipes.soft_target_loss(self.bce)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        if self.attributes:
            return attribute_bits(y, self.outputs)
        return recipes.smooth(F.one_hot(y, self.outputs).float(), self.smoothing)

    def loss(self, model, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """x, y on the model's device; mixing draws from ``gen``."""
        if self.soft is None:  # hard labels: cross-entropy, with label smoothing when configured
            return self.hard(model(x), y)
        x, t = mix_batch(x, self.targets(y), gen, self.mixup, self.cutmix)
        return self.soft(model(x).float(), t)


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
    """Worker processes stream tar shards (and real files) through a seeded shuffle buffer. The
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
                 world: World = World()):
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
        filtered = {as_unit(u)[0] for u in mine if counts[as_unit(u)[0]] < shard_rows(as_unit(u)[0])}
        keep = manifest_members(manifests, filtered) if filtered else {}  # a filtered manifest decides which members
        self.dataset = ShardDataset(mine, size, seed, c.shuffle_buffer, files=files[world.rank :: world.size],
                                    shard_images=sum(units[u] for u in mine), keep=keep, transform=transform,
                                    rank=world.rank)
        self.workers, self.world = c.num_workers, world

    def __len__(self):
        return self.n

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, int(np.ceil(max(self.rank_rows) / (batch_size // self.world.size))))

    def batches(self, epoch: int, batch_size: int, gen: torch.Generator):
        self.dataset.set_epoch(epoch)
        local = batch_size // self.world.size
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=local, num_workers=self.workers)
        batches = ((x, torch.as_tensor(y, dtype=torch.long)) for x, y in loader)
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


def train_classifier(data, num_classes: int, c: Classify, seed: int, weights: str | None = None,
                     ckpt_path: str | None = None, fingerprint: dict | None = None,
                     attributes: list[str] | None = None, world: World = World(), on_step=None,
                     segments: int = 1):
    """Train on ``data`` (MemoryData or StreamData); checkpoints every ``checkpoint_every`` epochs
    when ``ckpt_path`` is given and resumes from one (same fingerprint only) with identical results.
    With ``attributes`` the model has one output per attribute (multi-label).

    Data parallel (``world`` of N processes): DistributedDataParallel averages the gradients of
    the processes' parts of each global batch of ``classify.batch_size``; every process draws the
    same augmentation and mixing randomness (per-row draws for the whole batch, then its part), so
    the processes stay in step and rank 0's checkpoint resumes them all. Batch norm statistics are
    per process, as in the official torchrun runs (no SyncBN). ``on_step()`` is called after every
    optimiser step (the full-size rehearsal times steps with it). ``segments`` > 1: the run stops at
    the end of its segment of epochs, saves the checkpoint and raises ``SegmentDone``."""
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    device = world.device()
    objective = Objective(num_classes, c, attributes)
    model = build_model(c.arch, objective.outputs, weights, c.drop_path_rate).to(device)
    opt = make_optimizer(model, c)
    steps_per_epoch = data.steps_per_epoch(c.batch_size)
    sched = make_schedule(opt, c, steps_per_epoch)
    start = 0
    state = checkpoint.load(ckpt_path, fingerprint) if ckpt_path else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        start = state["epoch"] + 1
    sched.start(start)
    net = model
    if world.size > 1:  # built after loading: DDP starts every process from rank 0's weights
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = c.amp and device.type == "cuda"
    every = c.checkpoint_every
    taken = state.get("taken", 0) if state is not None else 0  # optimiser steps so far
    stop = segment_stop(start, c.epochs, segments)
    if stop < c.epochs and not ckpt_path:
        raise ValueError("classifier training in segments needs a checkpoint path")
    for epoch in tqdm(range(start, stop), desc="classify", mininterval=10, initial=start,
                      total=c.epochs, disable=not world.main):
        net.train()
        seen = torch.zeros(2, dtype=torch.float64)  # loss x rows, rows
        for xb, yb in data.batches(epoch, c.batch_size, gen):
            if len(yb) < 2 * (world.size if data.global_batches else 1):
                continue
            if c.transform == "simple":  # timm transforms augmented each image in the loader already
                xb = augment(xb, gen, c.pad_crop, c.random_flip)
            if data.global_batches:  # the same global batch on every process: keep this one's rows
                rows = world.part(len(yb))
                xb, yb = xb[rows], yb[rows]
            xb = xb.to(device, non_blocking=True)
            if c.randaugment_ops:
                xb = rand_augment(xb, c.randaugment_ops, c.randaugment_magnitude)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = objective.loss(net, xb, yb.to(device), gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            taken += 1
            sched.after_step()
            seen += torch.tensor([float(loss.detach()) * len(yb), len(yb)], dtype=torch.float64)  # waits for the device
            if on_step is not None:
                on_step()
        sched.after_epoch(epoch)
        world.average([seen])  # over all processes' rows: the global batch's mean loss
        log.info("epoch %d train loss %.6f", epoch, float(seen[0] / seen[1].clamp_min(1)))
        if ckpt_path and ((every and (epoch + 1) % every == 0) or epoch + 1 == stop) and epoch + 1 < c.epochs:
            if world.main:
                checkpoint.save(ckpt_path, fingerprint, f"epoch {epoch + 1} of {c.epochs}", epoch=epoch,
                                model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                                gen=gen.get_state(), rng=torch.get_rng_state(), taken=taken)
            world.barrier()
            fault_hook("classify", epoch + 1)
    if stop < c.epochs:
        raise SegmentDone(f"classifier segment ended at epoch {stop} of {c.epochs}; checkpoint {ckpt_path}")
    if taken == 0:
        raise ValueError(f"the classifier took no optimiser step in {c.epochs} epochs: {len(data)} training images "
                         f"give no batch of at least 2 (classify.batch_size {c.batch_size}); its metrics would be "
                         "those of its random initial weights")
    return model.cpu()


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
                  world: World = World()):
    """The classifier's training data as ``classify.loader`` and ``classify.transform`` ask:
    worker processes streaming shards and files through the recipe's per-image transform (this
    process's part of them), or (mini world) the whole set decoded once at ``size``."""
    if c.loader == "stream":  # manifests read for shard counts only: no row per synthetic image in memory
        return StreamData(real, manifests, size, seed, c, recipes.train_transform(c, size), world)
    train = training_set(real, manifests)
    return MemoryData(frame_tensor(train, size), torch.as_tensor(train.label.to_numpy(), dtype=torch.long))
