"""The table and figure writer every stage reports through: metrics loading, mean/std over seeds,
CSV tables with their JSON provenance sidecar, figures as PNG + PDF without timestamps (so the same
numbers give the same bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_json
from .provenance import provenance


def load_metrics(files) -> pd.DataFrame:
    rows = []
    for f in files:
        m = json.loads(Path(f).read_text())
        rows.append({"dataset": m["dataset"], "setting": m["setting"], "variant": m.get("variant", ""),
                     "scale": int(m.get("scale", 0)), "seed": m["seed"], "top1": m.get("top1", np.nan),
                     "top5": m.get("top5", np.nan), "file": str(f),
                     **{f"acc_{a}": m["attr_acc"][a] for a in m.get("attributes") or []}})  # config order
    return pd.DataFrame(rows)


def mean_std(values: pd.Series) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single value) over seeds."""
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(df: pd.DataFrame) -> dict:
    """Mean, sample std and count of top-1/top-5 over seeds, and each seed's top-1 (in the order of
    ``seeds``: paired comparisons between rows match them by seed)."""
    (m1, s1), (m5, s5) = mean_std(df.top1), mean_std(df.top5)
    by_seed = df.sort_values("seed")
    return {"top1_mean": m1, "top1_std": s1, "top5_mean": m5, "top5_std": s5, "n_seeds": len(df),
            "seeds": " ".join(str(s) for s in by_seed.seed),
            "top1_per_seed": " ".join(f"{v:.4f}" for v in by_seed.top1)}


def write_table(table: pd.DataFrame, out: str, cfg: dict, inputs, float_format: str = "%.2f", **extra) -> None:
    """A result table as CSV plus its ``.json`` provenance sidecar (config, its hash, git commit,
    seeds, the input files, and ``extra``); every table of the workflow is written through here."""
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format=float_format)
    seeds = {"seeds": cfg["seeds"]} if "seeds" in cfg else {}
    write_json(provenance(cfg, **seeds, inputs=sorted(map(str, inputs)), **extra), out + ".json")


def save_fig(fig, outs) -> None:
    for out in outs:
        fmt = Path(out).suffix.lstrip(".")
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata={"CreationDate": None}
                        if fmt == "pdf" else {"Software": None})
