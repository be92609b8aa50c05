"""Classifier recipes: the image transforms, targets and loss a ``classify`` section describes.

Two transform families (``classify.transform``):

- ``simple`` (mini world): every image squash-resized to the input size once, in [-1, 1]; the
  training loop pads-and-crops, flips and (optionally) applies torchvision RandAugment per batch.
- ``timm``: what timm's ``train.py`` does, and so what the paper's classifier numbers include
  (the official ``train.sh`` runs it): per image, ``timm.data.create_transform`` with
  RandomResizedCrop (``scale``, ``ratio``, ``train_interpolation``), horizontal flip, ColorJitter
  or an auto-augment policy (``rand-m7-mstd0.5``), normalised with the model's mean and std; tests
  use timm's eval transform (resize to size / crop_pct, centre crop). The transform runs in the
  loader's worker processes on the decoded image, never on a squashed copy.

timm's transforms draw from Python's ``random``, NumPy's and torch's global generators. To stay
deterministic whatever the worker count and across resumes, :class:`Seeded` runs each call under
its own seed (derived from the run seed, epoch, worker and position) and restores the caller's
generator states afterwards.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .chunks import ToTensor
from .settings import Classify
from .shards import Seeded  # noqa: F401 (part of the recipes API; lives with the loader that uses it)


def data_config(c: Classify, size: int) -> dict:
    """timm's resolved data config (mean, std, interpolation, crop_pct, crop_mode) of
    ``classify.arch`` at ``size`` from its default pretrained config (timm's defaults for a model
    without one, e.g. smallcnn); ``classify.crop_pct`` overrides the model's own."""
    import timm
    from timm.data import resolve_data_config

    args = {"input_size": (3, size, size)}
    if c.crop_pct is not None:
        args["crop_pct"] = c.crop_pct
    pretrained = timm.models.get_pretrained_cfg(c.arch) if timm.is_model(c.arch) else None
    return resolve_data_config(args, pretrained_cfg=None if pretrained is None else pretrained.to_dict())


def train_transform(c: Classify, size: int) -> Callable | None:
    """The per-image training transform (PIL RGB -> normalised tensor), or None for ``simple``
    (images are squash-resized and augmented per batch in the training loop)."""
    if c.transform == "simple":
        return None
    from timm.data import create_transform

    dc = data_config(c, size)
    return create_transform(size, is_training=True, scale=tuple(c.scale), ratio=tuple(c.ratio),
                            hflip=0.5 if c.random_flip else 0.0, vflip=0.0, color_jitter=c.color_jitter,
                            auto_augment=c.auto_augment, interpolation=c.train_interpolation,
                            mean=dc["mean"], std=dc["std"])


def eval_transform(c: Classify, size: int) -> Callable:
    """The test-time transform: squash-resize to [-1, 1] (``simple``) or timm's eval transform."""
    if c.transform == "simple":
        return ToTensor(size)
    from timm.data import create_transform

    dc = data_config(c, size)
    return create_transform(size, is_training=False, interpolation=dc["interpolation"], mean=dc["mean"],
                            std=dc["std"], crop_pct=dc["crop_pct"], crop_mode=dc.get("crop_mode"))


def smooth(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """One-hot targets with label smoothing as timm builds them (on = 1 - s + s/n, off = s/n)."""
    if smoothing <= 0:
        return targets
    return targets * (1.0 - smoothing) + smoothing / targets.shape[1]


def hard_label_loss(smoothing: float) -> Callable:
    """Cross-entropy on hard labels: plain, or timm's LabelSmoothingCrossEntropy."""
    if smoothing <= 0:
        return F.cross_entropy
    from timm.loss import LabelSmoothingCrossEntropy

    return LabelSmoothingCrossEntropy(smoothing=smoothing)


def soft_target_loss(bce: bool) -> Callable:
    """Loss on soft (smoothed and/or mixed) targets: timm's BinaryCrossEntropy or
    SoftTargetCrossEntropy, the losses timm's train.py picks with mixup on."""
    from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

    return BinaryCrossEntropy(smoothing=0.0) if bce else SoftTargetCrossEntropy()
