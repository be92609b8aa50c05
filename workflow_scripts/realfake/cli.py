"""One command-line pattern for every stage: ``python -m realfake.<stage> <action> --cfg JSON ...``.

Each stage module builds a :class:`Command` with one subcommand per action; every subcommand takes
``--cfg`` (the resolved config as JSON, passed by the rule), ``--log`` and ``--threads``, and its
handler receives ``(args, cfg)``. :func:`run` turns a known bad input into one clear line and exit
status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from .distributed import check_gpus
from .errors import SEGMENT_EXIT, ConfigError, DeviceError, SegmentDone


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--cfg", required=True, help="resolved workflow config as JSON (the rule passes it)")
    p.add_argument("--log", default=None, help="log file (default: stderr only)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPUs granted to the job (Snakemake's {threads}): decode and loader processes. torch's "
                        "own thread count is config key threads, so the numbers do not depend on --cores")
    return p


class Command:
    """A stage's command line: ``action(name, help, handler)`` adds a subcommand and returns its
    parser for the action's own flags; ``main(argv)`` parses, sets up logging and threads, and
    calls the handler with ``(args, cfg)``."""

    def __init__(self, description: str | None):
        self.parser = argparse.ArgumentParser(description=description,
                                              formatter_class=argparse.RawDescriptionHelpFormatter)
        self._sub = self.parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        self._handlers: dict[str, Callable] = {}

    def action(self, name: str, help: str, handler: Callable) -> argparse.ArgumentParser:
        self._handlers[name] = handler
        return self._sub.add_parser(name, help=help, description=help, parents=[_common()])

    def main(self, argv=None):
        args = self.parser.parse_args(argv)
        cfg = setup(args)
        return self._handlers[args.action](args, cfg)


class LineProgress(io.TextIOBase):
    """stderr when it is a rule's log file: a progress bar's carriage-return redraws become lines
    (one per tqdm update: every ``mininterval`` seconds, with count, rate and time left), so the log
    reads top to bottom in an editor or ``tail -f`` instead of being one very long line."""

    def __init__(self, stream):
        self.stream, self.at_line_start = stream, True

    def write(self, text: str) -> int:
        out = []
        for ch in text.replace("\r\n", "\n"):
            if ch in "\r\n":
                if not self.at_line_start:
                    out.append("\n")
                self.at_line_start = True
            else:
                out.append(ch)
                self.at_line_start = False
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def setup(args) -> dict:
    """Configure logging and torch threads; return the config dict. torch runs config ``threads``
    threads, not the job's granted CPUs: Snakemake scales ``{threads}`` down to ``--cores``, and
    CPU reductions (matmul, convolutions) give different floats on different thread counts."""
    if not sys.stderr.isatty() and not isinstance(sys.stderr, LineProgress):
        sys.stderr = LineProgress(sys.stderr)
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log:  # rules also append stderr (progress bars, warnings) to the same file
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(args.log, mode="a")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    cfg = json.loads(args.cfg)
    try:
        import torch
    except ImportError:  # the reporting env has no torch, and needs none
        return cfg
    torch.set_num_threads(int(cfg.get("threads", 1)))
    check_gpus()
    if torch.cuda.is_available():
        logging.getLogger("realfake").info("device: cuda, %d GPU(s): %s", torch.cuda.device_count(),
                                           torch.cuda.get_device_name(0))
    else:
        logging.getLogger("realfake").info("device: cpu, %d torch threads", torch.get_num_threads())
    return cfg


def job_cpus(args, cfg: dict, processes: int = 1) -> int:
    """CPUs of each of a job's ``processes`` (data-parallel) processes: Slurm's grant per GPU when
    the job was submitted with one (``SLURM_CPUS_PER_GPU``), else its share of the job's threads
    (Snakemake's ``{threads}``; config ``threads`` when run by hand)."""
    per_gpu = os.environ.get("SLURM_CPUS_PER_GPU", "")
    if per_gpu.isdigit() and int(per_gpu) > 0:
        return int(per_gpu)
    return max(1, (args.threads or cfg.get("threads", 1)) // processes)


def loader_workers(args, cfg: dict, processes: int = 1) -> int:
    """DataLoader processes of each of a job's ``processes`` (data-parallel) processes for decoding
    test and caption images: its CPUs when more than one (the main process then only feeds the
    device), else none (decode in the main process, the mini world)."""
    cpus = job_cpus(args, cfg, processes)
    return cpus if cpus > 1 else 0


def run(main) -> None:
    """Run a stage's main; a known bad input ends with one clear line, not a traceback."""
    try:
        main()
    except SegmentDone as done:
        logging.getLogger("realfake").info("%s: Snakemake reruns this job to continue (the rule's retries)", done)
        print(f"realfake: {done}; the next job continues from there", file=sys.stderr)
        sys.exit(SEGMENT_EXIT)
    except (ConfigError, DeviceError, FileNotFoundError, ValueError) as exc:
        logging.getLogger("realfake").error("%s", exc)
        print(f"realfake error: {exc}", file=sys.stderr)
        sys.exit(2)
