"""Ground floor: write artifacts so that a crash never leaves a file that looks complete.

Every writer goes to a temporary sibling path first and is renamed into place only
after it was fully written (``os.replace`` is atomic on one filesystem).
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator


def remove_stale(final: Path) -> None:
    """Delete temporaries of ``final`` left by a killed writer (SIGKILL skips every ``finally``).
    Snakemake runs one job per output, so no live writer owns them."""
    prefix = f".{final.name}."
    for old in final.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        if not re.fullmatch(r"[a-z0-9_]{8}", old.name[len(prefix):-4]):  # mkstemp's 8 random characters
            continue
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def fault_hook(stage: str, step) -> None:
    """Test-only fault injection: REALFAKE_TEST_KILL=<stage>:<n> SIGKILLs this process after step n
    of that stage (after its checkpoint or flush), so tests can kill a job at an exact point."""
    if os.environ.get("REALFAKE_TEST_KILL", "") == f"{stage}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _fault_before_rename(final: Path) -> None:
    """Test-only: REALFAKE_TEST_KILL=write:<file name> SIGKILLs the writer after the temporary is
    complete and before it is renamed, the worst moment for a crash."""
    fault_hook("write", final.name)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: Path, directory: bool = False) -> None:
    """Give a finished temporary the mode a plain ``open``/``mkdir`` would have given it under the
    process umask (mkstemp/mkdtemp create 0600/0700: unreadable to the group on a shared cluster)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` on success only."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        publish_mode(tmp)
        _fault_before_rename(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; it replaces ``final`` on success only."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        publish_mode(tmp, directory=True)
        _fault_before_rename(final)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(obj, final: str | os.PathLike) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(df, final: str | os.PathLike) -> None:
    with atomic_path(final) as tmp:
        df.to_parquet(tmp, index=False)


def write_torch(obj, final: str | os.PathLike) -> None:
    """torch.save through a buffer: saving to a path would name the zip's inner folder after the
    (random) temporary file name, and the same content would not give the same bytes."""
    import torch  # only the stages that write tensors need it

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(final) as tmp:
        tmp.write_bytes(buf.getvalue())


def read_torch(path: str | os.PathLike, what: str = "file"):
    """``torch.load`` of a file this workflow wrote, with ``weights_only=True``: tensors, numbers,
    strings and plain containers only, so a crafted file cannot run code. A file holding anything
    else is refused with an error naming it."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"refusing to load {what} {path}: it holds Python objects beyond tensors and plain "
                         f"containers, which realfake never writes and which could run code on loading "
                         f"({first}); delete it and rerun the rule that makes it") from None
