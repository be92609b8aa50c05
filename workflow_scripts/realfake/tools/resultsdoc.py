"""``docs/results.md`` written from a run's result files: every table of ``results/tables`` with the
commit and config hash its provenance sidecar records, the figures, and time and memory per stage
from ``results/benchmarks``. Numbers are copied as the CSV files spell them, never retyped.

    python -m realfake.tools.resultsdoc --results results --out docs/results.md [--produced-by "make demo-all"]

(``make results-doc``). A table the run did not make is listed as not made; a missing results
folder or one without tables is an error naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..atomic import atomic_path

MAX_ROWS = 60  # longer tables are named with their row count, not printed


@dataclass(frozen=True)
class Section:
    pattern: str  # file name (glob) under results/tables
    title: str
    what: str
    drop: tuple = ()  # columns left out of the printed table (still in the file)


SECTIONS = (
    Section("table1.csv", "Table 1: synthetic, real and real + synthetic training data",
            "Top-1/top-5 % on the real test set, mean ± sample std over seeds; paper numbers beside ours.",
            ("cell", "setting", "top1_per_seed")),
    Section("table2.csv", "Table 2: ablation of the method's components (synthetic only)",
            "Each row adds components (LP latent prior, VG visual guidance, DM distribution matching, FT "
            "fine-tuning); the paper's ImageNet-10/100 numbers beside ours."),
    Section("table3.csv", "Table 3 and Figure 2: scaling the synthetic set",
            "Synthetic only and real + synthetic at every scale; figure `results/figures/fig2_scaling.png`."),
    Section("table4.csv", "Table 4: out-of-distribution test sets", "Top-1 % on each OOD set, every scale."),
    Section("table9.csv", "Table 9: every seed", "Top-1 % per seed; std with ddof 0 as in the paper."),
    Section("table10.csv", "Table 10: attribute accuracy", "Accuracy per attribute and their mean."),
    Section("claims.csv", "The paper's claims, tested on our tables",
            "One-sided exact paired sign-flip test over seeds; `holds` = p < 0.05."),
    Section("table_privacy.csv", "Privacy: LiRA membership inference",
            "AUC and true-positive rates of the three LiRA attacks; figure `results/figures/fig3_lira.png`.",
            ("model",)),
    Section("nearest_*.csv", "Copy check: nearest real image of synthetic queries",
            "Similarity of each query to its nearest real training images; figure `results/figures/fig4_nearest_*.png`."),
    Section("quality.csv", "Synthetic-data quality", "FID, KID, precision and recall per variant; "
            "figure `results/figures/quality.png`."),
    Section("quality_ordering.csv", "Does quality order the variants as accuracy does?",
            "Spearman's rho between each metric and synthetic-only top-1 over the variants."),
    Section("quality_per_class.csv", "Quality per class", "Per-class metrics."),
)


def _cell(v: str) -> str:
    return v.replace("|", "\\|")


def markdown_table(df: pd.DataFrame, drop=()) -> str:
    """A CSV read as text as a Markdown table: ``x_mean``/``x_std`` pairs shown as ``mean ± std``,
    empty columns and ``drop`` left out; each value spelled as in the file."""
    df = df.drop(columns=[c for c in drop if c in df.columns])
    df = df.loc[:, [c for c in df.columns if (df[c] != "").any()]]
    cols = []
    for c in df.columns:
        if c.endswith("_std") and c[:-4] + "_mean" in df.columns:
            continue
        if c.endswith("_mean") and c[:-5] + "_std" in df.columns:
            std = df[c[:-5] + "_std"]
            cols.append((c[:-5] + " (mean ± std)", [f"{m} ± {s}" if s else m for m, s in zip(df[c], std)]))
        else:
            cols.append((c, list(df[c])))
    lines = ["| " + " | ".join(_cell(name) for name, _ in cols) + " |", "|" + "---|" * len(cols)]
    for i in range(len(df)):
        lines.append("| " + " | ".join(_cell(values[i]) for _, values in cols) + " |")
    return "\n".join(lines)


def read_csv_text(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV table ({exc})") from exc


def sidecar(path: Path) -> dict:
    """A table's provenance sidecar (``<table>.json``), empty when the stage writes none."""
    side = Path(str(path) + ".json")
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{side}: provenance sidecar is not valid JSON ({exc})") from exc


def stage_of(rel: Path) -> str:
    """The stage a benchmark file belongs to, from its path under ``results/benchmarks``:
    ``<stage>.tsv``, ``report/...``, ``models/...``, ``<dataset>/<stage>.tsv`` or ``<dataset>/<stage>/...``."""
    parts = rel.parts
    if len(parts) == 1:
        return rel.stem
    if parts[0] in ("report", "models"):
        return parts[0]
    return rel.stem if len(parts) == 2 else parts[1]


def stage_times(bench_dir: Path) -> pd.DataFrame:
    """Jobs, summed wall-clock minutes and the largest peak memory per stage, from Snakemake's
    ``benchmark:`` files (one per job)."""
    rows = []
    for f in sorted(bench_dir.rglob("*.tsv")):
        try:
            b = pd.read_csv(f, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ValueError(f"{f}: not a Snakemake benchmark file ({exc})") from exc
        if b.empty or "s" not in b.columns:
            raise ValueError(f"{f}: not a Snakemake benchmark file (no 's' column)")
        rss = pd.to_numeric(b.get("max_rss", pd.Series([float("nan")])), errors="coerce").max()
        rows.append({"stage": stage_of(f.relative_to(bench_dir)), "s": float(b.s.iloc[-1]), "rss": rss})
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "minutes", "peak_memory_gb"])
    df = pd.DataFrame(rows)
    out = df.groupby("stage").agg(jobs=("s", "size"), minutes=("s", "sum"), peak=("rss", "max")).reset_index()
    out["minutes"] = (out.minutes / 60).round(1)
    out["peak_memory_gb"] = (out.pop("peak") / 1024).round(2)
    out = out.sort_values("minutes", ascending=False)
    total = pd.DataFrame([{"stage": "all jobs", "jobs": int(out.jobs.sum()), "minutes": round(df.s.sum() / 60, 1),
                           "peak_memory_gb": round(df.rss.max() / 1024, 2)}])
    return pd.concat([out, total], ignore_index=True)


def _provenance_line(files: list[Path]) -> str:
    sides = [sidecar(f) for f in files]
    commits = sorted({s.get("git_commit", "unknown")[:12] for s in sides if s})
    hashes = sorted({s.get("config_hash", "") for s in sides if s.get("config_hash")})
    if not commits:
        return "No provenance sidecar."
    return f"Commit {', '.join(f'`{c}`' for c in commits)}, config hash {', '.join(f'`{h}`' for h in hashes)}."


def render(results: Path, produced_by: str | None = None) -> str:
    tables = results / "tables"
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {results} not found: run the workflow first (make demo)")
    found = sorted(tables.glob("*.csv")) if tables.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no result tables in {tables}: run the workflow first (make demo)")
    sides = [sidecar(f) for f in found]
    commits = sorted({s["git_commit"] for s in sides if s.get("git_commit")})
    out = ["# Results", "",
           f"Generated by `python -m realfake.tools.resultsdoc --results {results}` (`make results-doc`) from the "
           f"files in `{tables}`; do not edit by hand. Regenerate after a run.", ""]
    if produced_by:
        out += [f"The result files were made by: {produced_by}", ""]
    out += [f"Code commit(s) recorded in the tables' sidecars: {', '.join(f'`{c}`' for c in commits) or 'none'}.", ""]
    shown: set[Path] = set()
    missing = []
    for sec in SECTIONS:
        files = sorted(tables.glob(sec.pattern))
        if not files:
            missing.append(sec.pattern)
            continue
        out += [f"## {sec.title}", "", sec.what, ""]
        for f in files:
            shown.add(f)
            df = read_csv_text(f)
            out.append(f"`{f}` ({len(df)} rows). {_provenance_line([f])}")
            out.append("")
            out.append(markdown_table(df, sec.drop) if len(df) <= MAX_ROWS else
                       f"Longer than {MAX_ROWS} rows: read the file.")
            out.append("")
    others = [f for f in found if f not in shown]
    if others:
        out += ["## Other tables", ""]
        for f in others:
            out += [f"`{f}`", "", markdown_table(read_csv_text(f)), ""]
    if missing:
        out += ["Not made by this run: " + ", ".join(f"`{m}`" for m in missing) + ".", ""]
    figures = sorted((results / "figures").glob("*.png"))
    if figures:
        out += ["## Figures", "", *(f"- `{f}`" for f in figures), ""]
    bench = results / "benchmarks"
    if bench.is_dir():
        times = stage_times(bench)
        out += ["## Time and memory per stage", "",
                f"From the {int(times.jobs.iloc[-1]) if len(times) else 0} job benchmark files in `{bench}` "
                "(Snakemake's `benchmark:`): jobs, their summed wall-clock minutes (jobs may have run side "
                "by side) and the largest peak resident memory of one job.", "",
                markdown_table(times.astype(str)), ""]
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results", help="the run's results folder")
    p.add_argument("--out", default="docs/results.md", help="Markdown file to write")
    p.add_argument("--produced-by", default=None, help="how the results were made (commands, machine)")
    args = p.parse_args(argv)
    try:
        text = render(Path(args.results), args.produced_by)
    except (FileNotFoundError, ValueError) as exc:
        print(f"realfake error: {exc}", file=sys.stderr)
        sys.exit(2)
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
