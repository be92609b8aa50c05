"""`make cost`: what a paper-scale run will cost, before anything is submitted.

``python -m realfake.tools.cost --configfile config/paper.yaml [--target all_ablation ...]`` asks Snakemake
for the planned jobs (a dry run: every job's rule and wildcards), prices each job with the cost model
behind the rules' resource requests (``resources.PAPER_COSTS``: start-up minutes plus seconds per item on
one GPU, the items a job processes from ``Plan.stage_items``, divided over its data-parallel GPUs) and
writes ``results/plan/cost_<run_name>.csv`` with one row per rule (``rule, jobs, images, gpu_hours,
disk_gb``) and a ``total`` row, and prints it.

What the figures are: expected GPU hours without the factor ``SAFETY`` the runtime requests carry,
from per-item times that are planning assumptions for an A100-class GPU (``resources.Cost``), not
measurements; disk from the sizes in ``DISK_MB``. With ``--from-scratch`` the dry run starts from an
empty folder (the whole plan); without it, from this folder's results (what is left to run).
Cut the grid in config (``tables.table2_seeds``, ``tables.table3_seeds``, fewer ``scales``) and run it
again to see the cost drop.

With ``--throughput fullsize.csv`` (what ``make rehearsal-full DEVICE=cuda`` wrote on one of your
GPUs, or the H200 run kept in ``docs/rehearsal/h200_run1.csv``) the GPU stages it measured
(embed, finetune, generate, classify and shadow) are priced at its measured seconds per item
instead; start-up minutes stay the planning figures.
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

from ..atomic import atomic_path
from ..config import ConfigError, get_dataset, load_config
from ..plan import Plan
from ..resources import PAPER_COSTS

REPO = Path(__file__).resolve().parents[3]
# Disk per item of what a job keeps (planning figures): a 512 px JPEG at quality 95 of a natural
# image is typically 50-100 kB (75 taken; PNG about 4x); a rank-4 SD 1.5 LoRA (797k fp32 values) is
# 3.2 MB; a ResNet-50 model.pt (25.6 M fp32 values) 100 MB; one 768-d fp32 embedding 3 kB.
DISK_MB = {"generate": 0.075, "finetune": 3.2, "classify": 100.0, "shadow": 100.0, "embed": 0.003}
PER_JOB = {"finetune", "classify", "shadow"}  # disk per job, not per item
# the cost-model stages each row of a full-size rehearsal prices (its classify row is the GPU's
# share of a classifier step, data in memory; shadow classifiers are the same step)
MEASURED = {"embed": ["embed"], "finetune": ["finetune"], "generate": ["generate"], "classify": ["classify", "shadow"]}


def measured_costs(path: str | Path) -> dict[str, float]:
    """{cost stage: seconds per item on one GPU} from a full-size rehearsal's fullsize.csv (its GPU rows)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"throughput file {p} not found (make rehearsal-full DEVICE=cuda writes "
                         "results/rehearsal/fullsize.csv)")
    df = pd.read_csv(p)
    missing = {"stage", "device", "seconds_per_item"} - set(df.columns)
    if missing:
        raise ValueError(f"{p} is not a full-size rehearsal table (fullsize.csv): no column {sorted(missing)}")
    out = {}
    for row in df[df.device == "cuda"].itertuples():
        for stage in MEASURED.get(row.stage, []):
            out[stage] = float(row.seconds_per_item)
    if not out:
        raise ValueError(f"{p} has no GPU rows of {sorted(MEASURED)} (run make rehearsal-full DEVICE=cuda on a GPU)")
    return out


def measured_startups(path: str | Path) -> dict[str, float]:
    """{cost stage: start-up minutes per job} from a full-size rehearsal's GPU rows that measured it
    (``startup_s``: imports and model load to the first batch; tables written before the column
    existed have none, and their stages keep the planning minutes)."""
    df = pd.read_csv(path)
    if "startup_s" not in df.columns:
        return {}
    return {stage: float(row.startup_s) / 60 for row in df[(df.device == "cuda") & df.startup_s.notna()].itertuples()
            for stage in MEASURED.get(row.stage, [])}


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


def price(jobs: list[Job], plan: Plan, stages: dict[str, str], s_per_item: dict[str, float] | None = None,
          startup_min: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per rule: jobs, images processed, expected GPU hours, disk (GB), and a total row.
    ``s_per_item`` replaces the cost model's seconds per item of the stages it names, ``startup_min``
    its start-up minutes per job."""
    s_per_item, startup_min = s_per_item or {}, startup_min or {}
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
            per_item = plan.seconds_per_item(stage, w, s_per_item.get(stage))
            starts = plan.segments(stage, w)  # a run in segments (max_job_minutes) pays its start-up per job
            minutes = startup_min.get(stage, cost.minutes)
            r["gpu_hours"] += gpus * (starts * minutes / 60 + items * per_item / 3600 / gpus)
        mb = DISK_MB.get(stage, 0.0)
        r["disk_gb"] += (mb if stage in PER_JOB else mb * items) / 1000
    df = pd.DataFrame(list(rows.values()), columns=["rule", "jobs", "images", "gpu_hours", "disk_gb"])
    total = {"rule": "total", "jobs": int(df.jobs.sum()), "images": int(df.images.sum()),
             "gpu_hours": float(df.gpu_hours.sum()), "disk_gb": float(df.disk_gb.sum())}
    df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    return df.round({"gpu_hours": 1, "disk_gb": 1})


def table_targets(plan: Plan) -> list[str]:
    """Every table (CSV) of the plan's make demo-all targets, in the order the paper numbers them."""
    return [t for t in plan.demo_targets() + plan.ablation_targets() if t.endswith(".csv") and "/tables/" in t]


def per_table(configfiles: list[str], tables: list[str], workdir: Path, plan: Plan, stages: dict[str, str],
              s_per_item: dict[str, float], startup_min: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per table: the jobs, GPU hours and disk of making that table alone from ``workdir``
    (a dry run per table, every job it needs). Not additive: tables share LoRAs, synthetic sets and
    classifiers."""
    rows = []
    for t in tables:
        jobs, _ = parse_dry_run(dry_run(configfiles, [t], workdir))
        total = price(jobs, plan, stages, s_per_item, startup_min).set_index("rule").loc["total"]
        rows.append({"table": Path(t).stem, "jobs": int(total.jobs), "gpu_hours": float(total.gpu_hours),
                     "disk_gb": float(total.disk_gb)})
    return pd.DataFrame(rows, columns=["table", "jobs", "gpu_hours", "disk_gb"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", nargs="+", required=True)
    p.add_argument("--target", nargs="+", default=["all_ablation"], help="Snakemake targets (default: every table)")
    p.add_argument("--from-scratch", action="store_true", help="plan from an empty folder (ignore existing results)")
    p.add_argument("--out", default=None, help="CSV to write (default results/plan/cost_<run_name>.csv)")
    p.add_argument("--per-table", action="store_true",
                   help="also price each table alone (a dry run per table) -> cost_<run_name>_per_table.csv")
    p.add_argument("--throughput", default=None,
                   help="fullsize.csv of make rehearsal-full DEVICE=cuda: price its GPU stages at its measured speed")
    args = p.parse_args(argv)
    try:
        cfg = load_config(*args.configfile)
        measured = measured_costs(args.throughput) if args.throughput else {}
        startups = measured_startups(args.throughput) if args.throughput else {}
    except (ConfigError, ValueError) as exc:
        sys.exit(f"realfake error: {exc}")
    plan = Plan(cfg)
    if not plan.paper_scale:
        sys.exit("realfake error: make cost prices paper-scale runs (models.sd15 set); the mini world runs on "
                 "this CPU in minutes (make demo)")
    files = [str(Path(c).resolve()) for c in args.configfile]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) if args.from_scratch else Path.cwd()
        jobs, _ = parse_dry_run(dry_run(files, args.target, workdir))
        tables = (per_table(files, table_targets(plan), workdir, plan, rule_stages(), measured, startups)
                  if args.per_table else None)
    df = price(jobs, plan, rule_stages(), measured, startups)
    out = Path(args.out or f"results/plan/cost_{cfg['run_name']}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    print(df.to_string(index=False))
    basis = "A100-class planning figures"
    if measured:
        basis = (f"{', '.join(f'{s} {v:.4g} s' for s, v in sorted(measured.items()))} per item measured in "
                 f"{args.throughput}; the other stages at planning figures")
        if startups:
            basis += "; start-up per job measured: " + ", ".join(f"{s} {v:.2g} min" for s, v in sorted(startups.items()))
    print(f"\n{out}: expected GPU hours at the cost model's per-item times ({basis}; no safety factor); "
          "disk for what the jobs keep")
    print(f"priced: {' '.join(args.target)} of {' '.join(args.configfile)}"
          f"{' from an empty results folder' if args.from_scratch else ' (what this folder leaves to run)'}")
    for name in sorted({j.wildcards["dataset"] for j in jobs if "dataset" in j.wildcards}):
        if get_dataset(cfg, name)["shadow_of"] is not None:
            continue  # a LiRA pipeline shadow: the members dataset's half, counted with it
        print(f"real training images of {name}: {plan.train_images(name)} ({plan.train_images_source(name)})")
    if tables is not None:
        side = out.with_name(out.stem + "_per_table.csv")
        with atomic_path(side) as tmp:
            tables.to_csv(tmp, index=False, float_format="%.1f")
        print(f"\n{side}: each table alone, with every job it needs (not additive: tables share LoRAs, "
              f"synthetic sets and classifiers)\n{tables.round(1).to_string(index=False)}")


if __name__ == "__main__":
    main()
