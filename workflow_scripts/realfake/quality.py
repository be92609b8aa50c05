"""Stage `quality`: how close each synthetic set is to the real data, before any classifier trains.

Per generation variant, overall and per class, in one feature space (``quality.features``, see
:mod:`realfake.features`): FID, KID, precision and recall (:mod:`realfake.quality_metrics`).

Filter (DISEF-style, ``quality.filter``): score every synthetic image and keep the best
``keep_fraction`` of each class, written as a filtered manifest that classifiers read like any other.
``classifier_confidence`` is the real-data classifier's softmax probability of the intended class
(this uses the real data, so a "synthetic only" classifier trained after it is not purely synthetic:
tables label it); ``clip_score`` is the cosine between the CLIP image embedding and the embedding of
"a photo of a {class name}." (no real data).

``python -m realfake.quality real|set|filter|table``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .atomic import read_torch, write_json, write_parquet, write_torch
from .cli import Command, run
from .data import read_table
from .features import ClassifierFeatures, ClipFeatures, cap_per_class, chunked, extractor, features_of, real_train
from .provenance import provenance
from .quality_metrics import compare
from .settings import Classify, Dataset, ImageEncoder, Quality, Tables
from .tables import load_metrics, save_fig, write_table

log = logging.getLogger(__name__)


def keep_best(manifest: pd.DataFrame, scores: np.ndarray, keep_fraction: float) -> pd.DataFrame:
    """The best-scoring ``keep_fraction`` of each class (rounded half up, at least one image), in
    manifest order."""
    m = manifest.assign(filter_score=np.asarray(scores, np.float64))
    keep = []
    for _, idx in m.groupby("label").indices.items():
        n = max(1, int(np.floor(len(idx) * keep_fraction + 0.5)))  # half rounds up
        order = np.argsort(-m.filter_score.to_numpy()[idx], kind="stable")
        keep.append(idx[order[:n]])
    return m.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)


# ----------------------------------------------------------------------------- tables and figure
METRICS = {"fid": -1, "kid": -1, "precision": 1, "recall": 1}  # +1: higher is better


def quality_table(sets: pd.DataFrame, metrics: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """One row per dataset, variant and set (whole manifest or filtered): quality metrics and the
    top-1 of classifiers trained on that set, each as mean and std over replicate seeds."""
    overall = sets[sets["class"] == "all"]
    method, filt = Tables.of(cfg).table1_method, cfg["quality"]
    rows = []
    for (ds, variant, which, scale), g in overall.groupby(["dataset", "variant", "which", "scale"], sort=False):
        label = cfg["variants"][variant]["label"]
        if which == "filtered":
            label += f" + filter {filt['filter']} (keep {filt['keep_fraction']:.0%})"
        row = {"dataset": ds, "variant": variant, "set": which, "label": label, "scale": int(scale),
               "n_seeds": len(g), "n_real": int(g.n_real.iloc[0]), "n_syn": int(g.n_syn.mean())}
        for m in METRICS:
            row[m] = float(g[m].mean())
            row[f"{m}_std"] = float(g[m].std(ddof=1)) if len(g) > 1 else 0.0
        for mix in ("syn", "realsyn"):
            setting = mix + ("filt" if which == "filtered" else "")
            sel = metrics[(metrics.dataset == ds) & (metrics.setting == setting) & (metrics.variant == variant)
                          & (metrics.scale == scale)] if len(metrics) else metrics
            row[f"{mix}_top1"] = float(sel.top1.mean()) if len(sel) else float("nan")
        row["extractor"] = g.extractor.iloc[0]
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {v: i for i, v in enumerate(Tables.of(cfg).table2_variants + [method])}
    rank = {"variant": order, "set": {"manifest": 0, "filtered": 1}}
    return table.sort_values(["dataset", "set", "variant"], key=lambda c: c.map(rank[c.name]) if c.name in rank else c,
                             kind="stable").reset_index(drop=True)


def ordering(table: pd.DataFrame) -> pd.DataFrame:
    """Does each quality metric order the variants (whole sets) as synthetic-only top-1 does?
    Spearman's rho between the metric and top-1; ``agrees`` when its sign is the expected one."""
    rows = []
    for ds, g in table[table.set == "manifest"].groupby("dataset"):
        g = g.dropna(subset=["syn_top1"])
        for m, sign in METRICS.items():
            rho = g[m].rank().corr(g.syn_top1.rank()) if len(g) > 2 else float("nan")
            rows.append({"dataset": ds, "metric": m, "better_is": "higher" if sign > 0 else "lower",
                         "spearman_rho_vs_syn_top1": rho, "n_variants": len(g),
                         "agrees": bool(np.sign(rho) == sign) if np.isfinite(rho) else False})
    return pd.DataFrame(rows)


def per_class_table(sets: pd.DataFrame) -> pd.DataFrame:
    per = sets[sets["class"] != "all"]
    cols = ["n_real", "n_syn", *METRICS]
    return (per.groupby(["dataset", "variant", "which", "scale", "class"], sort=False)[cols].mean()
            .reset_index().rename(columns={"which": "set"}))


def quality_figure(table: pd.DataFrame, outs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(table.dataset.unique())
    fig, axes = plt.subplots(len(datasets), 2, figsize=(12, 4.8 * len(datasets)), squeeze=False)
    for (ax1, ax2), ds in zip(axes, datasets):
        sub = table[table.dataset == ds]
        for _, r in sub.iterrows():
            marker = "s" if r.set == "filtered" else "o"
            ax1.errorbar(r.fid, r.syn_top1, xerr=r.fid_std, fmt=marker, color="#C44E52" if r.set == "filtered"
                         else "#4C72B0", capsize=2)
            ax1.annotate(r.variant + (" (filtered)" if r.set == "filtered" else ""), (r.fid, r.syn_top1),
                         fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax1.set_xlabel(f"FID to real training images (lower is closer)\nfeatures: {sub.extractor.iloc[0][:60]}",
                       fontsize=8)
        ax1.set_ylabel("top-1 (%) of classifier trained on the synthetic set")
        ax1.set_title(f"{ds}: set quality vs downstream accuracy (mean over {int(sub.n_seeds.max())} seeds)")
        ax1.grid(alpha=0.3)
        y = np.arange(len(sub))
        names = [v + (" (filtered)" if s == "filtered" else "") for v, s in zip(sub.variant, sub.set)]
        ax2.barh(y - 0.2, sub.precision, height=0.4, label="precision (fidelity)", color="#4C72B0")
        ax2.barh(y + 0.2, sub.recall, height=0.4, label="recall (coverage)", color="#55A868")
        ax2.set_yticks(y, names, fontsize=7)
        ax2.invert_yaxis()
        ax2.set_xlim(0, 1)
        ax2.set_xlabel("share of samples inside the other set's k-NN manifold")
        ax2.set_title(f"{ds}: precision and recall (Kynkaanniemi et al. 2019)")
        ax2.legend(fontsize=7, loc="lower right")
        ax2.grid(axis="x", alpha=0.3)
    save_fig(fig, outs)
    plt.close(fig)


def table_main(args, cfg: dict) -> None:
    sets = pd.concat([pd.read_parquet(f) for f in args.sets], ignore_index=True)
    metrics = load_metrics(args.metrics) if args.metrics else pd.DataFrame()
    table = quality_table(sets, metrics, cfg)
    write_table(table, args.out, cfg, args.sets + args.metrics, "%.5g")
    out = Path(args.out)
    write_table(per_class_table(sets), str(out.with_name(out.stem + "_per_class.csv")), cfg, args.sets, "%.5g")
    order = ordering(table)
    write_table(order, str(out.with_name(out.stem + "_ordering.csv")), cfg, args.sets + args.metrics, "%.3f")
    for r in order.itertuples():
        log.info("%s %s: Spearman rho vs synthetic-only top-1 %.2f over %d variants (%s)", r.dataset, r.metric,
                 r.spearman_rho_vs_syn_top1, r.n_variants, "agrees" if r.agrees else "does not agree")
    if args.figure:
        quality_figure(table, args.figure)


def _classifier_size(cfg: dict, dataset: str) -> int:
    """Input size of the dataset's real-data classifier (its features and its confidence)."""
    return Classify.of(cfg, dataset).input_size(Dataset.of(cfg, dataset))


def _extractor(args, cfg: dict, q: Quality):
    size = _classifier_size(cfg, args.dataset)
    return extractor(q, ImageEncoder.of(cfg).model_name, size, args.classifier, args.encoder, args.inception)


def real_main(args, cfg: dict) -> None:
    q = Quality.of(cfg)
    ext = _extractor(args, cfg, q)
    train = real_train(args.index, q.max_per_class, q.seed)
    feats = features_of(ext, train)
    log.info("real features: %d images, dim %d, extractor %s", *feats.shape, ext.name)
    write_torch({"features": torch.as_tensor(feats), "label": train.label.to_numpy().tolist(),
                 "image_id": list(train.image_id), "extractor": ext.name}, args.out)


def set_main(args, cfg: dict) -> None:
    q = Quality.of(cfg)
    ext = _extractor(args, cfg, q)
    manifest = read_table(args.manifest, "manifest")
    real = read_torch(args.real_features, "real features")
    syn = cap_per_class(manifest.sort_values("image_id").reset_index(drop=True), q.max_per_class, q.seed)
    if ext.name != real["extractor"]:
        raise ValueError(f"{args.real_features} holds features of {real['extractor']!r}, not of {ext.name!r}: "
                         "rerun the real features")
    feats = features_of(ext, syn)
    table = compare(real["features"].numpy(), real["label"], feats, syn.label.to_numpy(), q)
    overall = table.iloc[0]
    log.info("%s: FID %.3f KID %.5f precision %.3f recall %.3f (%d real, %d synthetic)", args.manifest,
             overall.fid, overall.kid, overall.precision, overall.recall, overall.n_real, overall.n_syn)
    write_parquet(table.assign(dataset=args.dataset, variant=args.variant, seed=args.seed, scale=args.scale,
                               which=args.which, extractor=ext.name), args.out)
    write_json(provenance(cfg, extractor=ext.name, manifest=args.manifest), args.out + ".meta.json")


def filter_main(args, cfg: dict) -> None:
    q = Quality.of(cfg)
    if q.filter == "none":
        raise ValueError("quality.filter is none: no filtered manifest is planned (set classifier_confidence "
                         "or clip_score)")
    manifest = read_table(args.manifest, "manifest")
    if q.filter == "classifier_confidence":
        scorer = ClassifierFeatures(args.classifier, _classifier_size(cfg, args.dataset), q.batch_size)
        scores = chunked(lambda images, rows: scorer.confidence(images, rows.label), manifest, desc="filter")
    else:
        scorer = ClipFeatures(ImageEncoder.of(cfg).model_name, args.encoder, q.batch_size)
        scores = chunked(lambda images, rows: scorer.clip_score(images, rows.class_name), manifest, desc="filter")
    kept = keep_best(manifest, scores, q.keep_fraction)
    log.info("filter %s kept %d of %d synthetic images (keep_fraction %.2f); mean score kept %.4f, dropped %.4f",
             q.filter, len(kept), len(manifest), q.keep_fraction, kept.filter_score.mean(),
             np.mean(np.setdiff1d(scores, kept.filter_score.to_numpy())) if len(kept) < len(manifest) else
             float("nan"))
    write_parquet(kept, args.out)


# ----------------------------------------------------------------------------- CLI
def _set_flags(p, manifest_help: str) -> None:
    """Flags of the actions that read one dataset's synthetic set."""
    p.add_argument("--dataset", required=True)
    p.add_argument("--index", required=True, help="the dataset's real_index.parquet")
    p.add_argument("--manifest", required=True, help=manifest_help)


def _scorer_flags(p) -> None:
    p.add_argument("--classifier", help="model.pt of the real-data classifier (real_classifier features or filter)")
    p.add_argument("--encoder", help="open_clip checkpoint (clip features or clip_score filter)")
    p.add_argument("--inception", help="Inception-v3 state dict (inception features; default quality.inception)")


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("real", "features of the real training images", real_main)
    p.add_argument("--dataset", required=True)
    p.add_argument("--index", required=True, help="the dataset's real_index.parquet")
    _scorer_flags(p)
    p.add_argument("--out", required=True, help="real_features.pt to write")
    p = cmd.action("set", "quality metrics of one synthetic set against the real features", set_main)
    _set_flags(p, "the set's manifest.parquet or filtered.parquet")
    p.add_argument("--real-features", required=True, help="real_features.pt of the same extractor")
    p.add_argument("--variant", required=True, help="the set's generation variant (recorded)")
    p.add_argument("--seed", type=int, required=True, help="the set's replicate seed (recorded)")
    p.add_argument("--scale", type=int, required=True, help="the set's scale (recorded)")
    p.add_argument("--which", required=True, choices=["manifest", "filtered"], help="whole or filtered set")
    _scorer_flags(p)
    p.add_argument("--out", required=True, help="the set's quality rows (.parquet)")
    p = cmd.action("filter", "keep the best-scoring share of each class", filter_main)
    _set_flags(p, "the set's manifest.parquet")
    _scorer_flags(p)
    p.add_argument("--out", required=True, help="filtered.parquet to write")
    p = cmd.action("table", "quality.csv, its per-class and ordering tables and the figure", table_main)
    p.add_argument("--sets", nargs="+", required=True, help="quality rows of every set (.parquet)")
    p.add_argument("--metrics", nargs="*", default=[], help="classifier metrics.json files")
    p.add_argument("--figure", nargs="*", default=[], help="figure files (png, pdf)")
    p.add_argument("--out", required=True, help="quality.csv to write")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
