"""Resumable training checkpoints, tied to the config that wrote them.

A checkpoint lives beside the artifact it leads to (``<artifact>.ckpt``), outside Snakemake's
outputs, so it survives a killed job and ``--rerun-incomplete``. It records a fingerprint (the
config sections and inputs of the training); resuming under a different fingerprint is an error
that names the checkpoint and the keys that differ, never a silent mix of two configs.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import torch

from .atomic import atomic_path, read_torch

log = logging.getLogger(__name__)


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(obj, sort_keys=True, default=str)}


def differing_keys(a: dict, b: dict) -> list[str]:
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def load(path: str | os.PathLike, fingerprint: dict) -> dict | None:
    """The checkpoint's state, or None when there is none; ValueError when it belongs to another config."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = read_torch(path, "checkpoint")
    except Exception as exc:  # a torn file cannot happen (atomic writes), but a foreign one can
        raise ValueError(f"checkpoint {path} is unreadable ({exc}); delete it to start over") from exc
    theirs = json.loads(state["fingerprint"])
    ours = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
    if theirs != ours:
        keys = differing_keys(theirs, ours)
        raise ValueError(f"checkpoint {path} was written under a different config (differs in: "
                         f"{', '.join(keys[:6])}); delete it (or run `make clean-partial`) to start over, "
                         "or restore that config")
    log.info("resuming from %s (%s)", path, state.get("where", ""))
    return state


def save(path: str | os.PathLike, fingerprint: dict, where: str, **state) -> None:
    buf = io.BytesIO()
    torch.save({"fingerprint": json.dumps(fingerprint, sort_keys=True, default=str), "where": where, **state}, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def remove(path: str | os.PathLike) -> None:
    Path(path).unlink(missing_ok=True)
