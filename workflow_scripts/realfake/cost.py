"""`make cost`: what a paper-scale run will cost, before anything is submitted.

``python -m realfake.cost --configfile config/paper.yaml [--target all_ablation ...]`` asks Snakemake
for the planned jobs (a dry run: every job's rule and wildcards), prices each job with the cost model
behind the rules' resource requests (``plan.PAPER_COSTS``: start-up minutes plus seconds per item on
one GPU, the items a job processes from ``Plan.stage_items``, divided over its data-parallel GPUs) and
writes ``results/plan/cost_<run_name>.csv`` with one row per rule (``rule, jobs, images, gpu_hours,
disk_gb``) and a ``total`` row, and prints it.

What the figures are: expected GPU hours without the factor ``SAFETY`` the runtime requests carry,
from per-item times that are planning assumptions for an A100-class GPU (``plan.Cost``), not
measurements; disk from the sizes in ``DISK_MB``. With ``--from-scratch`` the dry run starts from an
empty folder (the whole plan); without it, from this folder's results (what is left to run).
Cut the grid in config (``tables.table2_seeds``, ``tables.table3_seeds``, fewer ``scales``) and run it
again to see the cost drop.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .atomic import atomic_path
from .config import ConfigError, load_config
from .plan import PAPER_COSTS, Plan

REPO = Path(__file__).resolve().parents[2]
# Disk per item of what a job keeps (planning figures): a 512 px JPEG at quality 95 of a natural
# image is typically 50-100 kB (75 taken; PNG about 4x); a rank-4 SD 1.5 LoRA (797k fp32 values) is
# 3.2 MB; a ResNet-50 model.pt (25.6 M fp32 values) 100 MB; one 768-d fp32 embedding 3 kB.
DISK_MB = {"generate": 0.075, "finetune": 3.2, "classify": 100.0, "shadow": 100.0, "embed": 0.003}
PER_JOB = {"finetune", "classify", "shadow"}  # disk per job, not per item


@dataclass
class Job:
    rule: str
    wildcards: dict = field(default_factory=dict)


def rule_stages(rules_dir: Path = REPO / "rules") -> dict[str, str]:
    """{rule: cost-model stage} from the rule files: the stage a rule passes to ``res(...)``."""
    out = {}
    for smk in sorted(rules_dir.glob("*.smk")):
        for body in re.split(r"\nrule ", smk.read_text())[1:]:
            name = body.split(":")[0].strip()
            stage = re.search(r'\*\*res\("(\w+)"\)', body)
            if stage:
                out[name] = stage.group(1)
    return out


def parse_dry_run(text: str) -> tuple[list[Job], dict[str, int]]:
    """(every planned job with its wildcards, Snakemake's own per-rule job counts) of a dry run's output."""
    jobs: list[Job] = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("rule ", "localrule ")) and s.endswith(":"):
            jobs.append(Job(s.split()[1].rstrip(":")))
        elif s.startswith("wildcards:") and jobs:
            jobs[-1].wildcards = dict(kv.split("=", 1) for kv in s[len("wildcards:"):].strip().split(", "))
    stats, in_stats = {}, False
    for line in text.splitlines():
        if line.startswith("Job stats:"):
            in_stats = True
        elif in_stats:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
                stats[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return jobs, stats


def dry_run(configfiles: list[str], targets: list[str], workdir: Path) -> str:
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "-n", "--cores", "64", *targets, "--configfile", *configfiles]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"the dry run failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def price(jobs: list[Job], plan: Plan, stages: dict[str, str]) -> pd.DataFrame:
    """One row per rule: jobs, images processed, expected GPU hours, disk (GB), and a total row."""
    rows: dict[str, dict] = {}
    for job in jobs:
        r = rows.setdefault(job.rule, {"rule": job.rule, "jobs": 0, "images": 0, "gpu_hours": 0.0, "disk_gb": 0.0})
        r["jobs"] += 1
        stage = stages.get(job.rule)
        if stage not in PAPER_COSTS:
            continue
        cost, w = PAPER_COSTS[stage], job.wildcards
        _, items = plan.stage_items(stage, w)
        gpus = plan.gpus(stage, w)
        r["images"] += items
        if cost.gpu:
            r["gpu_hours"] += gpus * (cost.minutes / 60 + items * cost.s_per_item / 3600 / gpus)
        mb = DISK_MB.get(stage, 0.0)
        r["disk_gb"] += (mb if stage in PER_JOB else mb * items) / 1000
    df = pd.DataFrame(list(rows.values()), columns=["rule", "jobs", "images", "gpu_hours", "disk_gb"])
    total = {"rule": "total", "jobs": int(df.jobs.sum()), "images": int(df.images.sum()),
             "gpu_hours": float(df.gpu_hours.sum()), "disk_gb": float(df.disk_gb.sum())}
    df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    return df.round({"gpu_hours": 1, "disk_gb": 1})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", nargs="+", required=True)
    p.add_argument("--target", nargs="+", default=["all_ablation"], help="Snakemake targets (default: every table)")
    p.add_argument("--from-scratch", action="store_true", help="plan from an empty folder (ignore existing results)")
    p.add_argument("--out", default=None, help="CSV to write (default results/plan/cost_<run_name>.csv)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(*args.configfile)
    except ConfigError as exc:
        sys.exit(f"realfake error: {exc}")
    plan = Plan(cfg)
    if not plan.paper_scale:
        sys.exit("realfake error: make cost prices paper-scale runs (models.sd15 set); the mini world runs on "
                 "this CPU in minutes (make demo)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) if args.from_scratch else Path.cwd()
        jobs, _ = parse_dry_run(dry_run([str(Path(c).resolve()) for c in args.configfile], args.target, workdir))
    df = price(jobs, plan, rule_stages())
    out = Path(args.out or f"results/plan/cost_{cfg['run_name']}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    print(df.to_string(index=False))
    print(f"\n{out}: expected GPU hours at the cost model's per-item times (A100-class planning figures, "
          "no safety factor); disk for what the jobs keep")


if __name__ == "__main__":
    main()
