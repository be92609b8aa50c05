"""Classifier optimiser and learning-rate schedule, from timm's factories as the official
``train.py`` builds them (docs/recipes.md), plus the mini world's AdamW + one-cycle.

- ``sgd`` / ``lamb``: timm's ``create_optimizer_v2``, which puts norms and biases (every tensor of
  one dimension) in a group without weight decay: on ResNet-50, 107 tensors at 0 and 54 at
  ``weight_decay``. timm's ``sgd`` is Nesterov momentum 0.9; ``nesterov: false`` is its ``momentum``.
- ``multistep`` / ``cosine``: timm's ``create_scheduler_v2`` with train.py's defaults (warm-up from
  1e-5 over ``warmup_epochs``, min lr 0, no cooldown), stepped once per epoch; timm's multistep
  decay lands at epochs 49/99/149 for milestones 50/100/150.
- ``adamw`` + ``onecycle`` (mini world only, not a paper recipe): torch's AdamW on every tensor and
  one-cycle stepped per optimiser step.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .settings import Classify

DECAY_RATE = 0.2  # multistep: x0.2 at each milestone (train.sh --decay-rate 0.2)
WARMUP_LR = 1e-5  # timm train.py --warmup-lr
TIMM_OPT = {("sgd", True): "sgd", ("sgd", False): "momentum", ("lamb", False): "lamb"}


def make_optimizer(model: nn.Module, c: Classify) -> torch.optim.Optimizer:
    if c.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, TIMM_OPT[(c.optimizer, bool(c.nesterov))], lr=c.lr,
                               weight_decay=c.weight_decay, momentum=0.9)


class Schedule:
    """The learning rate over training. ``after_step()`` follows every optimiser step and
    ``after_epoch(epoch)`` the end of each epoch; ``lr_at_epoch`` is what an epoch starts with (a
    resumed run calls ``start(epoch)``)."""

    def __init__(self, opt: torch.optim.Optimizer, c: Classify, steps_per_epoch: int):
        self.opt, self.per_step = opt, c.schedule == "onecycle"
        if self.per_step:
            self.total = c.epochs * steps_per_epoch
            self.sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=self.total)
            return
        from timm.scheduler import create_scheduler_v2

        self.sched, _ = create_scheduler_v2(opt, sched=c.schedule, num_epochs=c.epochs,
                                            decay_milestones=list(c.milestones), decay_rate=DECAY_RATE,
                                            warmup_epochs=c.warmup_epochs, warmup_lr=WARMUP_LR, min_lr=0.0,
                                            cooldown_epochs=0, step_on_epochs=True)

    def start(self, epoch: int) -> None:
        """Set the learning rate an epoch starts with (per-epoch schedules; resume)."""
        if not self.per_step:
            self.sched.step(epoch)

    def after_step(self) -> None:
        if self.per_step and self.sched.last_epoch < self.total:  # a short last stream batch must not overrun
            self.sched.step()

    def after_epoch(self, epoch: int) -> None:
        if not self.per_step:
            self.sched.step(epoch + 1)

    def state_dict(self) -> dict:
        return self.sched.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sched.load_state_dict(state)


def make_schedule(opt: torch.optim.Optimizer, c: Classify, steps_per_epoch: int) -> Schedule:
    return Schedule(opt, c, steps_per_epoch)
