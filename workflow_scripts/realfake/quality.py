"""Stage `quality`: how close each synthetic set is to the real data, before any classifier trains.

Per generation variant, overall and per class, in one feature space:

- FID (Frechet distance of Gaussian fits) and KID (unbiased polynomial-kernel MMD^2 over subsets,
  Binkowski et al. 2018);
- precision and recall of Kynkaanniemi et al. 2019 (k-NN balls of each set as its manifold).

Feature spaces (config ``quality.features``):

- ``inception``: torchvision Inception-v3 pool features (2048-d) from a local weights file
  (``quality.inception``). These are torchvision's ImageNet weights, not the TF-ported FID
  Inception, so absolute values are not comparable with published FIDs; differences between our
  variants are.
- ``clip``: the open_clip image encoder of the visual guidance (``models.clip``; the mini world's
  random tiny ViT).
- ``real_classifier``: penultimate features of the workflow's own classifier trained on real data.
  The mini world's named substitute for Inception: an in-domain trained network, as Inception is
  for ImageNet.

Filter (DISEF-style, ``quality.filter``): score every synthetic image and keep the best
``keep_fraction`` of each class, written as a filtered manifest that classifiers read like any other.
``classifier_confidence`` is the real-data classifier's softmax probability of the intended class
(this uses the real data, so a "synthetic only" classifier trained after it is not purely synthetic:
tables label it); ``clip_score`` is the cosine between the CLIP image embedding and the embedding of
"a photo of a {class name}." (no real data).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .atomic import write_json, write_parquet, write_torch
from .cli import parser, provenance, run, setup
from .data import fit_rgb, frame_images, to_tensor

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- metrics
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), via symmetric eigendecompositions
    (stable for the rank-deficient covariances of small per-class sets)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(half @ sb @ half), 0, None)).sum()
    return float(max(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross, 0.0))


def kid(a: np.ndarray, b: np.ndarray, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """Mean and std over random subsets of the unbiased MMD^2 with kernel (x.y / d + 1)^3."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        return float("nan"), float("nan")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def _pairwise(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    return torch.cat([torch.cdist(a[i : i + chunk], b) for i in range(0, len(a), chunk)])


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour in its own set (itself excluded)."""
    k = min(k, len(x) - 1)
    return torch.cat([torch.cdist(x[i : i + 4096], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), 4096)])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Precision: share of fake samples inside some real sample's k-NN ball; recall: the converse."""
    if len(real) < 2 or len(fake) < 2:
        return float("nan"), float("nan")
    r, f = torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)
    rr, rf = knn_radii(r, k), knn_radii(f, k)
    d = _pairwise(f, r)  # (fake, real)
    precision = (d <= rr[None, :]).any(1).double().mean()
    recall = (d <= rf[:, None]).any(0).double().mean()
    return float(precision), float(recall)


def set_metrics(real: np.ndarray, fake: np.ndarray, qcfg: dict) -> dict:
    p, r = precision_recall(real, fake, qcfg["knn"])
    k, ks = kid(real, fake, qcfg["kid_subsets"], qcfg["kid_subset_size"], qcfg["seed"])
    return {"n_real": len(real), "n_syn": len(fake), "fid": frechet_distance(real, fake), "kid": k, "kid_std": ks,
            "precision": p, "recall": r}


def compare(real: np.ndarray, real_labels, fake: np.ndarray, fake_labels, qcfg: dict) -> pd.DataFrame:
    """One row for the whole set (class ``all``) and one per class."""
    real_labels, fake_labels = np.asarray(real_labels), np.asarray(fake_labels)
    rows = [{"class": "all", **set_metrics(real, fake, qcfg)}]
    for c in tqdm(np.unique(real_labels), desc="quality per class", mininterval=10):
        rows.append({"class": str(int(c)), **set_metrics(real[real_labels == c], fake[fake_labels == c], qcfg)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- feature extractors
class Extractor:
    """PIL images -> float32 feature rows, batched, no gradients."""

    name = "?"

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare(self, images) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    @torch.no_grad()
    def batched(self, images, fn) -> torch.Tensor:
        """``fn`` (a network) over ``prepare``d batches of the images, as one float CPU tensor."""
        out = [fn(self.prepare(images[i : i + self.batch_size]).to(self.device)).float().cpu()
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros((0, 0))

    def __call__(self, images) -> np.ndarray:
        return self.batched(images, self.forward).numpy()


class ClassifierFeatures(Extractor):
    """Penultimate features (and softmax scores) of a classifier written by the classify stage."""

    def __init__(self, model_file: str, size: int, batch_size: int = 64):
        from .classify import load_classifier

        super().__init__(batch_size)
        self.model = load_classifier(model_file).to(self.device)
        self.size = size
        self.name = f"real_classifier ({self.model.__class__.__name__} trained on real data: {model_file})"

    def prepare(self, images):
        return to_tensor([fit_rgb(im, self.size) for im in images])

    def forward(self, x):
        from .classify import penultimate

        return penultimate(self.model, x)

    def confidence(self, images, labels) -> np.ndarray:
        """Softmax probability of each image's intended class."""
        p = self.batched(images, self.model).softmax(1)
        return p[torch.arange(len(p)), torch.as_tensor(np.asarray(labels), dtype=torch.long)].numpy()


class InceptionFeatures(Extractor):
    """torchvision Inception-v3 2048-d pool features from a local state-dict file."""

    def __init__(self, weights: str, batch_size: int = 64):
        from torchvision.models import inception_v3

        from .models import check_local

        super().__init__(batch_size)
        check_local(weights, "Inception-v3 weights file", "quality.inception")
        model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        what = f"{weights} is not a torchvision Inception-v3 state dict (config key quality.inception)"
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            missing, _ = model.load_state_dict(state, strict=False)
        except (RuntimeError, TypeError, AttributeError, OSError) as exc:
            raise ValueError(f"{what}: {str(exc).splitlines()[-1].strip()}") from exc
        if missing:
            raise ValueError(f"{what}: {len(missing)} missing keys, e.g. {missing[0]}")
        model.fc = torch.nn.Identity()
        self.model = model.eval().to(self.device)
        self.name = f"inception (torchvision Inception-v3 pool, {weights})"

    def prepare(self, images):
        x = (to_tensor([fit_rgb(im, 299) for im in images]) + 1) / 2
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        return (x - mean) / std

    def forward(self, x):
        return self.model(x)


class ClipFeatures(Extractor):
    """open_clip image embeddings (L2-normalised), and CLIP scores against class-name prompts."""

    def __init__(self, model_name: str, checkpoint: str, batch_size: int = 64):
        from .models import create_open_clip

        super().__init__(batch_size)
        self.model, self.preprocess = create_open_clip(model_name, checkpoint)
        self.model = self.model.to(self.device)
        self.model_name = model_name
        self.name = f"clip (open_clip {model_name}, {checkpoint})"

    def prepare(self, images):
        return torch.stack([self.preprocess(im) for im in images])

    def forward(self, x):
        return torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def clip_score(self, images, class_names) -> np.ndarray:
        import open_clip

        names = list(class_names)
        prompts = sorted(set(names))
        tok = open_clip.get_tokenizer(self.model_name)
        text = torch.nn.functional.normalize(self.model.encode_text(tok([f"a photo of a {n}." for n in prompts])
                                                                    .to(self.device)).float(), dim=-1).cpu()
        img = torch.as_tensor(self(images))
        rows = torch.as_tensor([prompts.index(n) for n in names])
        return (img * text[rows]).sum(1).numpy()


def classifier_size(cfg: dict, dataset: str) -> int:
    from .config import classify_settings, get_dataset

    return classify_settings(cfg, dataset)["image_size"] or get_dataset(cfg, dataset)["image_size"]


def extractor(cfg: dict, dataset: str, classifier: str | None, encoder: str | None) -> Extractor:
    q = cfg["quality"]
    if q["features"] == "inception":
        if not q["inception"]:
            raise ValueError("quality.features is inception but quality.inception (a local weights file) is null")
        return InceptionFeatures(q["inception"], q["batch_size"])
    if q["features"] == "clip":
        return ClipFeatures(cfg["image_encoder"]["model_name"], encoder, q["batch_size"])
    return ClassifierFeatures(classifier, classifier_size(cfg, dataset), q["batch_size"])


# ----------------------------------------------------------------------------- frames
def real_train(index_file: str, max_per_class: int | None, seed: int) -> pd.DataFrame:
    index = pd.read_parquet(index_file)
    train = index[index.split == "train"].sort_values("image_id").reset_index(drop=True)
    return _cap(train, max_per_class, seed)


def _cap(frame: pd.DataFrame, max_per_class: int | None, seed: int) -> pd.DataFrame:
    """A seeded per-class sample of at most ``max_per_class`` rows (all rows when null)."""
    if max_per_class is None:
        return frame
    rng = np.random.default_rng(seed)
    keep = [idx if len(idx) <= max_per_class else np.sort(rng.choice(idx, max_per_class, replace=False))
            for _, idx in sorted(frame.groupby("label").indices.items())]
    return frame.iloc[np.concatenate(keep)].reset_index(drop=True)


def chunked(fn, frame: pd.DataFrame, chunk: int = 1024, desc: str = "features") -> np.ndarray:
    """``fn(images, rows)`` over the frame's rows, decoding ``chunk`` images at a time (a 10x IN-1K
    set never sits in memory)."""
    out = [fn(frame_images(frame.iloc[i : i + chunk]), frame.iloc[i : i + chunk]) for i in
           tqdm(range(0, len(frame), chunk), desc=desc, mininterval=10)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def features_of(ext: Extractor, frame: pd.DataFrame) -> np.ndarray:
    return chunked(lambda images, rows: ext(images), frame)


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
    method, filt = cfg["tables"]["table1_method"], cfg["quality"]
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
    order = {v: i for i, v in enumerate(cfg["tables"]["table2_variants"] + [method])}
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

    from .report import save_fig

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


def table_main(cfg: dict, args) -> None:
    from .report import load_metrics, write_table

    sets = pd.concat([pd.read_parquet(f) for f in args.set], ignore_index=True)
    metrics = load_metrics(args.metrics) if args.metrics else pd.DataFrame()
    table = quality_table(sets, metrics, cfg)
    write_table(table, args.out, cfg, args.set + args.metrics, "%.5g")
    out = Path(args.out)
    write_table(per_class_table(sets), str(out.with_name(out.stem + "_per_class.csv")), cfg, args.set, "%.5g")
    order = ordering(table)
    write_table(order, str(out.with_name(out.stem + "_ordering.csv")), cfg, args.set + args.metrics, "%.3f")
    for r in order.itertuples():
        log.info("%s %s: Spearman rho vs synthetic-only top-1 %.2f over %d variants (%s)", r.dataset, r.metric,
                 r.spearman_rho_vs_syn_top1, r.n_variants, "agrees" if r.agrees else "does not agree")
    if args.figure:
        quality_figure(table, args.figure)


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("action", choices=["real", "set", "filter", "table"])
    p.add_argument("--dataset", help="real/set/filter: dataset name")
    p.add_argument("--index", help="real/set/filter: real_index.parquet")
    p.add_argument("--set", nargs="*", default=[], help="set: variant seed scale which; table: set parquet files")
    p.add_argument("--metrics", nargs="*", default=[], help="table: classifier metrics.json files")
    p.add_argument("--figure", nargs="*", default=[], help="table: figure files (png, pdf)")
    p.add_argument("--manifest", help="set/filter: the synthetic manifest.parquet")
    p.add_argument("--classifier", help="model.pt of the real-data classifier (real_classifier features or filter)")
    p.add_argument("--encoder", help="open_clip checkpoint (clip features or clip_score filter)")
    p.add_argument("--real-features", help="real: file to write; set: file to read")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    cfg = setup(args)
    from .config import get_dataset

    q = cfg["quality"]
    if args.action == "table":
        return table_main(cfg, args)
    get_dataset(cfg, args.dataset)
    if args.action == "real":
        train = real_train(args.index, q["max_per_class"], q["seed"])
        ext = extractor(cfg, args.dataset, args.classifier, args.encoder)
        feats = features_of(ext, train)
        log.info("real features: %d images, dim %d, extractor %s", *feats.shape, ext.name)
        write_torch({"features": torch.as_tensor(feats), "label": train.label.to_numpy().tolist(),
                     "image_id": list(train.image_id), "extractor": ext.name}, args.out)
        return
    manifest = pd.read_parquet(args.manifest)
    if args.action == "filter":
        method = q["filter"]
        if method == "none":
            raise ValueError("quality.filter is none: no filtered manifest is planned (set classifier_confidence "
                             "or clip_score)")
        if method == "classifier_confidence":
            scorer = ClassifierFeatures(args.classifier, classifier_size(cfg, args.dataset), q["batch_size"])
            scores = chunked(lambda images, rows: scorer.confidence(images, rows.label), manifest, desc="filter")
        else:
            scorer = ClipFeatures(cfg["image_encoder"]["model_name"], args.encoder, q["batch_size"])
            scores = chunked(lambda images, rows: scorer.clip_score(images, rows.class_name), manifest, desc="filter")
        kept = keep_best(manifest, scores, q["keep_fraction"])
        log.info("filter %s kept %d of %d synthetic images (keep_fraction %.2f); mean score kept %.4f, dropped %.4f",
                 method, len(kept), len(manifest), q["keep_fraction"], kept.filter_score.mean(),
                 np.mean(np.setdiff1d(scores, kept.filter_score.to_numpy())) if len(kept) < len(manifest) else
                 float("nan"))
        write_parquet(kept, args.out)
        return
    real = torch.load(args.real_features, map_location="cpu", weights_only=False)
    syn = _cap(manifest.sort_values("image_id").reset_index(drop=True), q["max_per_class"], q["seed"])
    ext = extractor(cfg, args.dataset, args.classifier, args.encoder)
    if ext.name != real["extractor"]:
        raise ValueError(f"{args.real_features} holds features of {real['extractor']!r}, not of {ext.name!r}: "
                         "rerun the real features")
    feats = features_of(ext, syn)
    table = compare(real["features"].numpy(), real["label"], feats, syn.label.to_numpy(), q)
    overall = table.iloc[0]
    log.info("%s: FID %.3f KID %.5f precision %.3f recall %.3f (%d real, %d synthetic)", args.manifest,
             overall.fid, overall.kid, overall.precision, overall.recall, overall.n_real, overall.n_syn)
    variant, seed, scale, which = args.set
    write_parquet(table.assign(dataset=args.dataset, variant=variant, seed=int(seed), scale=int(scale), which=which,
                               extractor=ext.name), args.out)
    write_json(provenance(cfg, extractor=ext.name, manifest=args.manifest), args.out + ".meta.json")


if __name__ == "__main__":
    run(main)
