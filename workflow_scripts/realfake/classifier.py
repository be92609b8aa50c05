"""The classifier training loop, its objectives and prediction. Used by the classify stage and by
every stage that trains or scores with a classifier (privacy's shadow models, quality features and
filter, OOD evaluation). Networks are in ``classifier_models``, the training data and batch
augmentations in ``classifier_data``, optimiser and schedule in ``optim``."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint, recipes
from .atomic import fault_hook
from .chunks import ToTensor, image_batches
from .classifier_data import augment, mix_batch, rand_augment
from .classifier_models import build_model
from .distributed import World
from .errors import SegmentDone, segment_stop
from .optim import make_optimizer, make_schedule
from .provenance import seed_everything
from .settings import Classify

log = logging.getLogger(__name__)


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


def train_classifier(data, num_classes: int, c: Classify, seed: int, weights: str | None = None,
                     ckpt_path: str | None = None, fingerprint: dict | None = None,
                     attributes: list[str] | None = None, world: World = World(), on_step=None,
                     segments: int = 1, validate=None, curve: list | None = None):
    """Train on ``data`` (MemoryData or StreamData); checkpoints every ``checkpoint_every`` epochs
    when ``ckpt_path`` is given and resumes from one (same fingerprint only) with identical results.
    With ``attributes`` the model has one output per attribute (multi-label).

    Data parallel (``world`` of N processes): DistributedDataParallel averages the gradients of
    the processes' parts of each global batch of ``classify.batch_size``; every process draws the
    same augmentation and mixing randomness (per-row draws for the whole batch, then its part), so
    the processes stay in step and rank 0's checkpoint resumes them all. Batch norm statistics are
    per process, as in the official torchrun runs (no SyncBN). ``on_step()`` is called after every
    optimiser step (the full-size rehearsal times steps with it). ``segments`` > 1: the run stops at
    the end of its segment of epochs, saves the checkpoint and raises ``SegmentDone``.

    ``curve`` (a list the caller owns) gets one dict per epoch: ``epoch``, ``train_loss`` and, every
    ``classify.validate_every`` epochs and after the last, the ``test_*`` figures of ``validate(model)``
    (rank 0 only; run under a forked RNG, so training draws the same numbers with or without it).
    The curve so far is kept in the checkpoint and comes back on resume."""
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    device = world.device()
    objective = Objective(num_classes, c, attributes)
    model = build_model(c.arch, objective.outputs, weights, c.drop_path_rate).to(device)
    if device.type == "cuda":  # cuDNN's fast layout for convolutions; the CPU path stays as it was
        model = model.to(memory_format=torch.channels_last)
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
        if curve is not None:
            curve[:] = state.get("curve", [])
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
            if device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
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
        row = {"epoch": epoch + 1, "train_loss": float(seen[0] / seen[1].clamp_min(1))}
        tests = validate is not None and c.validate_every and (
            (epoch + 1) % c.validate_every == 0 or epoch + 1 == c.epochs)
        if tests and world.main:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                row.update({f"test_{k}": v for k, v in validate(model).items() if isinstance(v, float)})
        if tests:
            world.barrier()  # the other processes wait for rank 0's test
        if curve is not None:
            curve.append(row)
        tested = "".join(f", {k.replace('_', ' ')} {v:.2f}" for k, v in row.items() if k.startswith("test_"))
        log.info("epoch %d train loss %.6f%s", epoch, row["train_loss"], tested)
        if ckpt_path and ((every and (epoch + 1) % every == 0) or epoch + 1 == stop) and epoch + 1 < c.epochs:
            if world.main:
                checkpoint.save(ckpt_path, fingerprint, f"epoch {epoch + 1} of {c.epochs}", epoch=epoch,
                                model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                                gen=gen.get_state(), rng=torch.get_rng_state(), taken=taken,
                                curve=list(curve or []))
            world.barrier()
            fault_hook("classify", epoch + 1)
    if stop < c.epochs:
        raise SegmentDone(f"classifier segment ended at epoch {stop} of {c.epochs}; checkpoint {ckpt_path}")
    if taken == 0:
        raise ValueError(f"the classifier took no optimiser step in {c.epochs} epochs: {len(data)} training images "
                         f"give no batch of at least 2 (classify.batch_size {c.batch_size}); its metrics would be "
                         "those of its random initial weights")
    return model.cpu()
