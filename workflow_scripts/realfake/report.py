"""Stage `report`: paper tables (CSV + JSON provenance sidecar) and figures (PNG + PDF)."""

from __future__ import annotations

import json
import logging
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .atomic import atomic_path
from .captions import html_table, read_csv_text, section_of
from .cli import Command, run
from .data import frame_images, read_table
from .settings import Tables
from .tables import load_metrics, mean_std, save_fig, summarize, write_table
from .tablespec import table1_spec

log = logging.getLogger(__name__)
PAPER = yaml.safe_load(Path(__file__).with_name("paper_numbers.yaml").read_text())
SAMPLE_CLASSES = 12  # rows of a dataset in the sample figure


def _select(df, dataset, setting, variant="", scale=0):
    sel = df[(df.dataset == dataset) & (df.setting == setting)]
    if setting != "real":
        sel = sel[(sel.variant == variant) & (sel.scale == scale)]
    if sel.empty:
        raise ValueError(f"no metrics for dataset={dataset} setting={setting} variant={variant} scale={scale}")
    return sel


def table1(df: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    t = Tables.of(cfg)
    rows = []
    for ds in sorted(df.dataset.unique()):
        paper = PAPER["table1"].get(ds, {})
        for label, setting, variant, key in (astuple(r) for r in table1_spec(t)):
            s = summarize(_select(df, ds, setting, variant, t.scale))
            rows.append({"dataset": ds, "row": label, "cell": key, "setting": setting, "variant": variant,
                         "scale": t.scale if setting != "real" else 0, **s,
                         "paper_top1": paper.get(key, np.nan)})
    out = pd.DataFrame(rows)
    out["delta_vs_real"] = out.top1_mean - out.groupby("dataset").top1_mean.transform("first")
    out["paper_delta_vs_real"] = [paper_delta_vs_real(r.dataset, r.cell) for r in out.itertuples()]
    return out


def paper_delta_vs_real(dataset: str, cell: str) -> float:
    """The paper's difference to real only of a table 1 cell: the stated real + synthetic gain
    (Sec. 4.1), or the difference of two cells the text gives; NaN where it gives neither."""
    if cell == "real":
        return np.nan
    if cell == "realsyn_method" and dataset in PAPER["realsyn_gain"]:
        return float(PAPER["realsyn_gain"][dataset])
    cells = PAPER["table1"].get(dataset, {})
    return float(cells[cell] - cells["real"]) if cell in cells and "real" in cells else np.nan


def component_flags(variant: dict, loras: dict) -> dict:
    lora = loras.get(variant["lora"]) if variant["lora"] else None
    return {"latent_prior": bool(variant["latent_prior"]),
            "visual_guidance": variant["guidance"] != "none" or bool(lora and lora["guidance"] != "none"),
            "distribution_matching": bool(lora and lora["dm_weight"] > 0),
            "finetune": lora is not None}


def table2(df: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    t = Tables.of(cfg)
    rows = []
    for ds in sorted(df.dataset.unique()):
        for v in t.table2_variants:
            flags = component_flags(cfg["variants"][v], cfg["loras"])
            key = "".join(str(int(flags[k])) for k in
                          ("latent_prior", "visual_guidance", "distribution_matching", "finetune"))
            paper = PAPER["table2"].get(key, {})
            rows.append({"dataset": ds, "variant": v, "label": cfg["variants"][v]["label"] or v, **flags,
                         "scale": t.table2_scale, **summarize(_select(df, ds, "syn", v, t.table2_scale)),
                         "paper_in10_top1": paper.get("imagenet10", np.nan),
                         "paper_in100_top1": paper.get("imagenet100", np.nan)})
    return pd.DataFrame(rows)


def crossover(scales, syn, real: float) -> float:
    """Smallest synthetic scale at which synthetic-only accuracy reaches real-only (linear
    interpolation between measured scales); NaN when it never does within the measured range."""
    pts = sorted(zip(scales, syn))
    for (s0, a0), (s1, a1) in zip([(None, None)] + pts[:-1], pts):
        if a1 >= real:
            if s0 is None or a0 >= real:
                return float(s1)
            return float(s0 + (real - a0) * (s1 - s0) / (a1 - a0))
    return float("nan")


def table3(df: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Scaling (paper Tab. 3 / Fig. 2): top-1/top-5 at every configured scale, with and without real data."""
    method = Tables.of(cfg).table1_method
    rows = []
    for ds in sorted(df.dataset.unique()):
        real = summarize(_select(df, ds, "real"))
        paper = PAPER.get("table3", {}).get(ds, {})
        syn_means = {}
        for setting in ("syn", "realsyn"):
            for scale in cfg["scales"]:
                sel = _select(df, ds, setting, method, scale)
                s = summarize(sel)
                if setting == "syn":
                    syn_means[scale] = s["top1_mean"]
                rows.append({"dataset": ds, "setting": setting, "variant": method, "scale": scale, **s,
                             "real_top1_mean": real["top1_mean"], "delta_vs_real": s["top1_mean"] - real["top1_mean"],
                             "paper_top1": paper.get(f"{setting}_{scale}x", np.nan)})
        cross = crossover(list(syn_means), list(syn_means.values()), real["top1_mean"])
        for r in rows:
            if r["dataset"] == ds:
                r["crossover_scale"] = cross
                r["paper_crossover_scale"] = paper.get("crossover", np.nan)
    return pd.DataFrame(rows)


def scaling_figure(table: pd.DataFrame, outs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    datasets = sorted(table.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sub = table[table.dataset == ds]
        for setting, label, style in (("syn", "synthetic only", "o-"), ("realsyn", "real + synthetic", "s-")):
            g = sub[sub.setting == setting].sort_values("scale")
            ax.errorbar(g.scale, g.top1_mean, yerr=g.top1_std, fmt=style, capsize=3, label=label)
        real = sub.real_top1_mean.iloc[0]
        ax.axhline(real, color="k", ls="--", lw=1, label=f"real only ({real:.1f} %)")
        cross = sub.crossover_scale.iloc[0]
        if np.isfinite(cross):
            ax.axvline(cross, color="grey", ls=":", lw=1)
            ax.annotate(f"crossover {cross:.1f}x", (cross, real), textcoords="offset points", xytext=(4, -14), fontsize=8)
        else:
            ax.text(0.02, 0.02, "synthetic only stays below real only\nat every measured scale",
                    transform=ax.transAxes, fontsize=8)
        ax.set_xscale("log")
        ax.set_xticks(sorted(sub.scale.unique()), [f"{s}x" for s in sorted(sub.scale.unique())])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("synthetic set size (multiples of the real training set)")
        ax.set_ylabel("top-1 accuracy on real test set (%)")
        ax.set_title(f"{ds}: scaling (mean ± std over {int(sub.n_seeds.max())} seeds)")
        ax.legend(fontsize=8, loc="center right")
        ax.grid(alpha=0.3)
    save_fig(fig, outs)
    plt.close(fig)


def table10(df: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Attribute datasets (paper Tab. 10, CelebA): accuracy of each attribute and their mean, for
    table 1's rows (real only, the baselines, ours, real + ours); mean and std over seeds.
    The paper's Tab. 10 numbers are not legible in its text, so no paper column."""
    rows = []
    for ds in sorted(df.dataset.unique()):
        for label, setting, variant, key in (astuple(r) for r in table1_spec(Tables.of(cfg))):
            sel = _select(df, ds, setting, variant, Tables.of(cfg).scale)
            attrs = [c[4:] for c in sel.columns if c.startswith("acc_") and sel[c].notna().all()]
            if not attrs:
                raise ValueError(f"{ds}: metrics without per-attribute accuracy (is datasets.{ds}.attributes set?)")
            accs = sel[[f"acc_{a}" for a in attrs]]
            for name, values in [*((a, accs[f"acc_{a}"]) for a in attrs), ("mean", accs.mean(axis=1))]:
                mean, std = mean_std(values)
                rows.append({"dataset": ds, "row": label, "cell": key, "attribute": name, "acc_mean": mean,
                             "acc_std": std, "n_seeds": len(sel), "seeds": " ".join(str(s) for s in sorted(sel.seed))})
    out = pd.DataFrame(rows)
    real = out[out.cell == "real"].set_index(["dataset", "attribute"]).acc_mean
    out["delta_vs_real"] = out.acc_mean - real.loc[list(zip(out.dataset, out.attribute))].to_numpy()
    return out


def table9(df: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Multi-seed results (paper Tab. 9): every seed's top-1 beside mean and std, table 1's rows.
    The std is the paper's convention, the population std (ddof 0: its three IN-10 runs give 0.29,
    where the sample std would give 0.36); the column names say so."""
    t1 = table1(df, cfg)
    rows = []
    for _, r in t1.iterrows():
        sel = _select(df, r.dataset, r.setting, r.variant, r.scale if r.setting != "real" else 0)
        per_seed = {f"top1_seed{int(s)}": float(v) for s, v in zip(sel.seed, sel.top1)}
        paper = PAPER["table9"].get(r.dataset, {}) if r.cell == "syn_method" else {}
        rows.append({"dataset": r.dataset, "row": r.row, "cell": r.cell, **per_seed, "top1_mean": r.top1_mean,
                     "top1_std_ddof0": float(np.std(sel.top1.to_numpy(dtype=float), ddof=0)), "n_seeds": r.n_seeds,
                     "paper_top1_mean": paper.get("mean", np.nan), "paper_top1_std_ddof0": paper.get("std", np.nan)})
    return pd.DataFrame(rows)


COMPONENTS = ("latent_prior", "visual_guidance", "distribution_matching", "finetune")


CLAIM_ALPHA = 0.05
CLAIM_TEST = "one-sided exact paired sign-flip test over seeds"


def per_seed(row) -> dict[int, float]:
    """{seed: top-1} of one table row (its ``seeds`` and ``top1_per_seed`` columns)."""
    seeds = [int(s) for s in str(row["seeds"]).split()]
    values = [float(v) for v in str(row["top1_per_seed"]).split()]
    return dict(zip(seeds, values))


def sign_flip_p(diffs) -> float:
    """One-sided p-value of the exact paired sign-flip (randomisation) test of H0 "the differences
    are symmetric about 0" against "their mean is above 0": the share of the 2^n sign patterns whose
    mean is at least the observed one. No normality assumed; with n seeds the smallest possible p
    is 2^-n (5 seeds: 0.031, 3 seeds: 0.125, so 3 seeds can never pass alpha 0.05)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return float("nan")
    signs = np.array(np.meshgrid(*[[1.0, -1.0]] * len(d))).reshape(len(d), -1).T
    return float(np.mean((signs * np.abs(d)).mean(1) >= d.mean() - 1e-9))


def claim_row(ds: str, claim: str, diffs_by_seed: dict[int, float], pairs: int, pairs_positive: int) -> dict:
    """One claim judged on its per-seed paired differences (``holds``: p < CLAIM_ALPHA)."""
    diffs = [diffs_by_seed[s] for s in sorted(diffs_by_seed)]
    p = sign_flip_p(diffs)
    return {"dataset": ds, "claim": claim, "delta_top1": float(np.mean(diffs)) if diffs else float("nan"),
            "pairs": pairs, "pairs_positive": pairs_positive, "seeds": len(diffs),
            "seeds_positive": int(sum(d > 0 for d in diffs)), "p_value": p,
            "holds": bool(p < CLAIM_ALPHA) if not np.isnan(p) else None, "test": CLAIM_TEST}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    """Per-seed differences a - b over the seeds both rows have."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def ood_claims(t4: pd.DataFrame, method: str) -> list[dict]:
    """Paper Sec. 4.4 on table 4: on each OOD set, ours synthetic only at the largest scale beats
    real only (the paper: on Sketch, R and A), and real + ours beats real only."""
    rows = []
    for (ds, oset), g in t4.groupby(["dataset", "ood_set"], sort=False):
        real = g[g.setting == "real"]
        ours = g[(g.setting == "syn") & (g.variant == method)]
        if real.empty or ours.empty:
            continue
        top = ours.sort_values("scale").iloc[-1]
        pairs = [(f"{oset}: synthetic only ({method} {int(top.scale)}x) beats real only", top)]
        pairs += [(f"{oset}: real + synthetic beats real only", r) for _, r in g[g.setting == "realsyn"].iterrows()]
        for claim, row in pairs:
            d = paired(per_seed(row), per_seed(real.iloc[0]))
            rows.append(claim_row(ds, claim, d, 1, int(np.mean(list(d.values())) > 0) if d else 0))
    return rows


def claims(t1: pd.DataFrame, t2: pd.DataFrame | None, t4: pd.DataFrame | None = None, method: str = "") -> pd.DataFrame:
    """The paper's qualitative claims, checked on our numbers (never edited by hand).

    Every claim is a comparison of rows trained with the same seeds: the per-seed differences
    (for an ablation component, the per-seed mean over its with/without pairs) are tested with
    :func:`sign_flip_p`; ``holds`` is True when p < 0.05, False when not (including "not shown
    with this many seeds"), empty with fewer than 2 seeds.
    """
    rows = []
    for ds, g in t1.groupby("dataset"):
        g = g.set_index("cell")

        def cmp(claim, a, b):
            d = paired(per_seed(g.loc[a]), per_seed(g.loc[b]))
            mean = np.mean(list(d.values())) if d else 0.0
            rows.append(claim_row(ds, claim, d, 1, int(mean > 0)))

        cmp("synthetic only: method beats text-to-image baseline", "syn_method", "syn_baseline")
        cmp("real + synthetic beats real only", "realsyn_method", "real")
    if t2 is not None:
        for ds, g in t2.groupby("dataset"):
            for comp in COMPONENTS:
                diffs = []  # one {seed: difference} per (with, without) pair of variants
                for _, row in g[g[comp]].iterrows():
                    want = {c: (row[c] if c != comp else False) for c in COMPONENTS}
                    match = g[np.logical_and.reduce([g[c] == v for c, v in want.items()])]
                    if len(match) == 1:
                        diffs.append(paired(per_seed(row), per_seed(match.iloc[0])))
                if diffs:
                    seeds = sorted(set.intersection(*(set(d) for d in diffs)))
                    by_seed = {s: float(np.mean([d[s] for d in diffs])) for s in seeds}
                    rows.append(claim_row(ds, f"adding {comp.replace('_', ' ')} helps (ablation pairs)", by_seed,
                                          len(diffs), int(sum(np.mean(list(d.values())) > 0 for d in diffs))))
    if t4 is not None:
        rows += ood_claims(t4, method)
    return pd.DataFrame(rows)


def ablation_figure(table: pd.DataFrame, outs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(table.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 0.45 * len(table) / len(datasets) + 1.5),
                             squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sub = table[table.dataset == ds].iloc[::-1]
        ax.barh(sub.label, sub.top1_mean, xerr=sub.top1_std, color="#4C72B0", capsize=3)
        ax.set_xlabel("top-1 accuracy on real test set (%)")
        ax.set_title(f"{ds}: classifier trained on synthetic data only ({sub.scale.iloc[0]}x)\n"
                     f"(mean ± std over {int(sub.n_seeds.max())} seeds)")
        ax.set_xlim(0, 100)
        ax.grid(axis="x", alpha=0.3)
    save_fig(fig, outs)
    plt.close(fig)


def shown_classes(labels, at_most: int = SAMPLE_CLASSES) -> list[int]:
    """The classes a sample figure shows: all of them, or ``at_most`` evenly spaced ones (IN-1K
    would otherwise be 1000 rows of subplots)."""
    labels = sorted(int(c) for c in labels)
    if len(labels) <= at_most:
        return labels
    return [labels[round(k * (len(labels) - 1) / (at_most - 1))] for k in range(at_most)]


def samples_figure(index_files: dict, manifests: dict, outs, per_class: int = 4) -> None:
    """Rows = classes (at most ``SAMPLE_CLASSES`` per dataset); columns = real images, then each
    variant's synthetic images. Only the shown classes' manifest rows are read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for ds, index_file in index_files.items():
        index = read_table(index_file, "index")
        train = index[index.split == "train"]
        labels = shown_classes(train.label.unique())
        groups = [("real", train)] + [(v, pd.read_parquet(m, columns=["label", "shard", "member"],
                                                          filters=[("label", "in", labels)]))
                                      for v, m in manifests[ds].items()]
        panels.append((ds, labels, groups))
    n_rows = sum(len(p[1]) for p in panels)
    n_cols = per_class * (1 + max(len(p[2]) - 1 for p in panels))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 0.55, n_rows * 0.6 + 0.6), squeeze=False)
    r = 0
    for ds, labels, groups in panels:
        for lab in labels:
            c = 0
            for name, df in groups:
                images = frame_images(df[df.label == lab].head(per_class))
                for k in range(per_class):
                    ax = axes[r, c]
                    ax.axis("off")
                    if k < len(images):
                        ax.imshow(images[k])
                    if r == 0 and k == 0:
                        ax.set_title(name, fontsize=8, loc="left")
                    c += 1
            axes[r, 0].text(-0.3, 0.5, f"{ds}:{lab}", transform=axes[r, 0].transAxes, ha="right",
                            va="center", fontsize=7)
            r += 1
    fig.suptitle("real vs synthetic training images (first replicate seed)", fontsize=9)
    save_fig(fig, outs)
    plt.close(fig)


def _meta(path: str) -> dict:
    """The provenance sidecar (``<file>.meta.json``) its stage wrote next to an index or manifest."""
    meta = Path(str(path) + ".meta.json")
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found: it names the dataset (and variant) of {path}; rerun the "
                                "stage that wrote it")
    return json.loads(meta.read_text())


def samples_main(args, cfg: dict) -> None:
    """Datasets and variants are read from the index and manifest sidecars, in the order given."""
    index_files = {_meta(f)["dataset"]: f for f in args.index}
    manifests: dict = {}
    for f in args.manifest:
        m = _meta(f)
        if m["dataset"] not in index_files:
            raise ValueError(f"manifest {f} is of dataset {m['dataset']!r}, which no --index file is")
        manifests.setdefault(m["dataset"], {})[m["variant"]] = f
    samples_figure(index_files, manifests, [args.out] + args.figure)


def claims_main(args, cfg: dict) -> None:
    t1 = pd.read_csv(args.table1)
    t2 = pd.read_csv(args.table2) if args.table2 else None
    t4 = pd.read_csv(args.table4) if args.table4 else None
    sources = [args.table1] + [t for t in (args.table2, args.table4) if t]
    write_table(claims(t1, t2, t4, Tables.of(cfg).table1_method), args.out, cfg, sources)


TABLES = {"table1": table1, "table2": table2, "table3": table3, "table9": table9, "table10": table10}
FIGURES = {"table2": ablation_figure, "table3": scaling_figure}


def table_main(args, cfg: dict) -> None:
    table = TABLES[args.action](load_metrics(args.metrics), cfg)
    write_table(table, args.out, cfg, args.metrics)
    if args.html:  # the page the Snakemake report shows: the table as written, with its caption
        with atomic_path(args.html) as tmp:
            tmp.write_text(html_table(read_csv_text(args.out), section_of(Path(args.out).name)))
    if args.action in FIGURES and args.figure:
        FIGURES[args.action](table, args.figure)
    log.info("wrote %s (%d rows)", args.out, len(table))


def main(argv=None) -> None:
    cmd = Command(__doc__)
    for name, fn in TABLES.items():
        p = cmd.action(name, (fn.__doc__ or f"paper {name}").strip().splitlines()[0], table_main)
        p.add_argument("--metrics", nargs="+", required=True, help="classifier metrics.json files")
        p.add_argument("--out", required=True, help=f"{name}.csv to write")
        p.add_argument("--html", default=None, help=f"{name}.html to write (the table with its caption)")
        if name in FIGURES:
            p.add_argument("--figure", nargs="*", default=[], help="figure files (png, pdf)")
    p = cmd.action("samples", "real vs synthetic sample grid", samples_main)
    p.add_argument("--index", nargs="+", required=True, help="real_index.parquet of each dataset")
    p.add_argument("--manifest", nargs="+", required=True, help="synthetic manifest.parquet files")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--figure", nargs="*", default=[], help="further formats of the same figure (pdf)")
    p = cmd.action("claims", "the paper's qualitative claims checked on our tables", claims_main)
    p.add_argument("--table1", required=True, help="table1.csv")
    p.add_argument("--table2", default=None, help="table2.csv (ablation claims)")
    p.add_argument("--table4", default=None, help="table4.csv (OOD claims)")
    p.add_argument("--out", required=True, help="claims.csv to write")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
