"""One workflow run per results folder at a time.

Snakemake's own lock folder is removed when any run in the folder ends, even one that had nothing
to do, so a second run of the same targets could start beside a live one (and its clean-up of a
failed job could delete the first run's files). The workflow therefore holds a lock of its own for
the lifetime of the run: an exclusive ``flock`` on ``results/.run.lock``, taken when jobs are about
to start (Snakemake's ``onstart``; dry-runs and the jobs themselves take none) and released by the
operating system when the process ends, however it ends, so no stale lock is ever left behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from .errors import ConfigError

LOCK_NAME = ".run.lock"


class RunLocked(ConfigError):
    """Another run holds the results folder."""


def hold_run_lock(results: str | os.PathLike) -> int:
    """Take the results folder's run lock and return its file descriptor (keep it open for the
    run); raise RunLocked naming the live run (pid, host, start time, command) when another holds it."""
    folder = Path(results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLocked(f"another workflow run is using {folder}/ ({holder}); wait for it to end or stop it "
                        f"first. Two runs in one results folder can delete each other's files. The lock "
                        f"({path}) is released when that process ends") from None
    os.ftruncate(fd, 0)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {stamp}: {' '.join(sys.argv)}\n".encode(), 0)
    return fd
