"""Classifier networks: the mini world's ``smallcnn`` and any timm model (ResNet-50 at paper scale),
loaded from a trained ``model.pt`` or from ImageNet weights; the penultimate features."""

from __future__ import annotations

import torch
import torch.nn as nn

from .atomic import read_torch
from .models import check_local


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
