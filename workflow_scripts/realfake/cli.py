"""Shared command-line plumbing: logging to the rule's log file, threads, JSON config."""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import numpy as np


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cfg", required=True, help="resolved workflow config as JSON (the rule passes it)")
    p.add_argument("--log", default=None, help="log file (default: stderr only)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: config key threads)")
    return p


def setup(args) -> dict:
    """Configure logging and torch threads; return the config dict."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log:  # rules also append stderr (progress bars, warnings) to the same file
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(args.log, mode="a")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    cfg = json.loads(args.cfg)
    import torch

    torch.set_num_threads(args.threads or cfg.get("threads", 1))
    return cfg


def seed_everything(seed: int) -> None:
    import torch

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
    from .config import config_hash

    return {"config": cfg, "config_hash": config_hash(cfg), "git_commit": git_commit(), **extra}


def fault_hook(stage: str, step) -> None:
    """Test-only fault injection: REALFAKE_TEST_KILL=<stage>:<n> SIGKILLs this process after step n
    of that stage (after its checkpoint or flush), so tests can kill a job at an exact point."""
    import os
    import signal

    if os.environ.get("REALFAKE_TEST_KILL", "") == f"{stage}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def run(main) -> None:
    """Run a stage's main; a known bad input ends with one clear line, not a traceback."""
    from .config import ConfigError

    try:
        main()
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        logging.getLogger("realfake").error("%s", exc)
        print(f"realfake error: {exc}", file=sys.stderr)
        sys.exit(2)
