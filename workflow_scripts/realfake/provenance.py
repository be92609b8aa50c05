"""Where an artifact came from and how its randomness is seeded: the provenance record every
stage writes beside its outputs (config, config hash, git commit) and the global seeding of
Python, NumPy and torch. Below the libraries, so a training loop or the table writer need not
import the command-line module."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy as np

from .config import config_hash


def seed_everything(seed: int) -> None:
    import torch  # torch-free stages (reporting) import this module too

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(cfg: dict, **extra) -> dict:
    return {"config": cfg, "config_hash": config_hash(cfg), "git_commit": git_commit(), **extra}
