"""Stage `privacy`: LiRA membership inference (Carlini et al. 2022; paper Fig. 3).

Setup (METHOD.md section 5): the real training pool of ``privacy.pool`` is split into members (the
half kept by dataset ``privacy.members``, ``member_half``) and non-members. Two target classifiers
are attacked: one trained on the members directly, one trained on synthetic data made by the
method from the members only (LoRA fine-tuned on members, latent prior from members). The real
target's shadows are classifiers trained on seeded random halves of the pool; the synthetic
target's (``privacy.synthetic_shadows: pipeline``, the paper's design) each go through the whole
method on their own half (LoRA, generation, classifier on the synthetic set). Each pool image is
"in" for about half of the shadows. Per image, LiRA fits Gaussians to the shadows' logit-scaled confidences:

* online: likelihood ratio of N(mu_in, s_in) vs N(mu_out, s_out) at the target's confidence;
* offline: only the "out" Gaussian: how far above mu_out the target's confidence lies;
* fixed variance: online with one global variance per side instead of per-image ones.

``python -m realfake.privacy shadow|attack``.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from .atomic import write_parquet
from .classifier import predict_logits, train_classifier
from .classifier_data import training_data
from .classifier_models import load_classifier
from .cli import Command, job_cpus, run
from .data import read_table
from .recipes import eval_transform
from .settings import Classify, Dataset, Privacy
from .tables import save_fig, write_table

log = logging.getLogger(__name__)
ATTACKS = ("online", "offline", "fixed_variance")


# ----------------------------------------------------------------------------- statistics
def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)) from raw logits, computed stably as z_y - logsumexp_{j != y} z_j."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    zy = logits[np.arange(len(labels)), labels]
    others = logits.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    m = others.max(axis=1)
    return zy - (m + np.log(np.exp(others - m[:, None]).sum(axis=1)))


def _log_normal(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)


def lira_scores(target: np.ndarray, shadow: np.ndarray, shadow_in: np.ndarray, attack: str,
                eps: float = 1e-6) -> np.ndarray:
    """Membership scores (higher = more likely a member) for each of N examples.

    target: (N,) confidences of the attacked model; shadow: (S, N) shadow confidences;
    shadow_in: (S, N) bool, True where the example was in that shadow's training half.
    """
    shadow, shadow_in = np.asarray(shadow, float), np.asarray(shadow_in, bool)
    n_in, n_out = shadow_in.sum(0), (~shadow_in).sum(0)
    if shadow_in.sum() < 2 or (~shadow_in).sum() < 2:
        raise ValueError("LiRA needs shadow models with and without the examples; raise privacy.shadows")
    masked_in = np.where(shadow_in, shadow, np.nan)
    masked_out = np.where(~shadow_in, shadow, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are handled below
        mu_in, mu_out = np.nanmean(masked_in, 0), np.nanmean(masked_out, 0)
        sd_in, sd_out = np.nanstd(masked_in, 0, ddof=1), np.nanstd(masked_out, 0, ddof=1)
    # global (fixed) variances and the mean in/out shift: the fixed-variance attack, and the fallback
    # for an example seen "in" or "out" by fewer than 2 shadows (few shadows, small classes)
    g_in = np.nanstd((masked_in - mu_in)[:, n_in >= 2], ddof=1) if (n_in >= 2).any() else 1.0
    g_out = np.nanstd((masked_out - mu_out)[:, n_out >= 2], ddof=1) if (n_out >= 2).any() else 1.0
    both = (n_in > 0) & (n_out > 0)
    shift = float(np.mean(mu_in[both] - mu_out[both])) if both.any() else 0.0
    mu_in = np.where(n_in > 0, mu_in, mu_out + shift)
    mu_out = np.where(n_out > 0, mu_out, mu_in - shift)
    if attack == "fixed_variance":
        sd_in, sd_out = np.full(len(n_in), g_in), np.full(len(n_out), g_out)
    sd_in = np.where(n_in >= 2, sd_in, g_in) + eps
    sd_out = np.where(n_out >= 2, sd_out, g_out) + eps
    if attack == "offline":
        return (target - mu_out) / sd_out
    if attack in ("online", "fixed_variance"):
        return _log_normal(target, mu_in, sd_in) - _log_normal(target, mu_out, sd_out)
    raise ValueError(f"unknown LiRA attack {attack!r} (known: {', '.join(ATTACKS)})")


def roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) over every threshold, from (0, 0) to (1, 1); ties handled as one step."""
    scores, is_member = np.asarray(scores, float), np.asarray(is_member, bool)
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], is_member[order]
    last = np.r_[np.diff(s) != 0, True]
    tp, fp = np.cumsum(m)[last], np.cumsum(~m)[last]
    tpr = np.r_[0.0, tp / max(1, m.sum())]
    fpr = np.r_[0.0, fp / max(1, (~m).sum())]
    return fpr, tpr


def roc_summary(scores, is_member) -> dict:
    fpr, tpr = roc(scores, is_member)
    auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))

    def tpr_at(x):
        ok = fpr <= x
        return float(tpr[ok].max()) if ok.any() else 0.0

    return {"auc": auc, "tpr_at_0.1%_fpr": tpr_at(0.001), "tpr_at_1%_fpr": tpr_at(0.01),
            "balanced_accuracy": float(np.max(1 - (fpr + (1 - tpr)) / 2))}


def shadow_half(pool: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """Bool mask of the pool's rows in shadow k's training half (class-stratified, seeded)."""
    rng = np.random.default_rng([seed, k])
    mask = np.zeros(len(pool), bool)
    for _, idx in pool.groupby("label").indices.items():
        take = rng.choice(idx, size=len(idx) // 2, replace=False)
        mask[take] = True
    return mask


def pool_of(index_file: str) -> pd.DataFrame:
    index = read_table(index_file, "index")
    return index[index.split == "train"].sort_values("image_id").reset_index(drop=True)


def shadow_main(args, cfg: dict) -> None:
    p = Privacy.of(cfg)
    ds = Dataset.of(cfg, p.pool)
    c = Classify.of(cfg, p.pool).replace(checkpoint_every=0)
    pool = pool_of(args.index)
    mask = shadow_half(pool, args.k, p.seed)
    train = pool[mask]
    size = c.input_size(ds)
    seed = p.seed * 1000 + args.k
    data = training_data(c, train, [], size, seed, workers=c.loader_workers(job_cpus(args, cfg)))
    model = train_classifier(data, int(pool.label.max()) + 1, c, seed)
    log.info("shadow %d trained on %d of %d pool images", args.k, int(mask.sum()), len(pool))
    write_parquet(pd.DataFrame({"image_id": pool.image_id, "label": pool.label, "in_train": mask,
                                "confidence": confidences(model, pool, c, size)}), args.out)


def confidences(model, pool: pd.DataFrame, c: Classify, size: int) -> np.ndarray:
    """A classifier's logit-scaled confidence on every pool image (the test transform)."""
    logits = predict_logits(model, pool, size, transform=eval_transform(c, size)).numpy()
    return logit_confidence(logits, pool.label.to_numpy())


def in_pool(pool: pd.DataFrame, index_file: str, what: str, pool_file: str) -> np.ndarray:
    """Bool mask of the pool images that ``index_file``'s training split holds; each must be a pool image."""
    ids = set(pool_of(index_file).image_id)
    if not ids <= set(pool.image_id):
        raise ValueError(f"{index_file}: {what} are not all in the pool {pool_file}")
    return pool.image_id.isin(ids).to_numpy()


def score_main(args, cfg: dict) -> None:
    """A pipeline shadow (privacy.synthetic_shadows pipeline): the classifier trained on synthetic
    data made from the shadow's half of the pool (its own LoRA and set), scored on the whole pool."""
    p = Privacy.of(cfg)
    c = Classify.of(cfg, p.pool)
    pool = pool_of(args.index)
    mask = in_pool(pool, args.half_index, "the shadow's images", args.index)
    log.info("pipeline shadow %s: made from %d of %d pool images", args.model, int(mask.sum()), len(pool))
    write_parquet(pd.DataFrame({"image_id": pool.image_id, "label": pool.label, "in_train": mask,
                                "confidence": confidences(load_classifier(args.model), pool, c,
                                                          c.input_size(Dataset.of(cfg, p.pool)))}), args.out)


def read_shadows(files: list[str], pool: pd.DataFrame, index_file: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidences, in-half masks), each (shadows, pool images), of shadow score files."""
    shadows = [pd.read_parquet(f) for f in files]
    for f, sh in zip(files, shadows):
        if list(sh.image_id) != list(pool.image_id):
            raise ValueError(f"shadow file {f} scores other images than the pool {index_file}")
    return (np.stack([sh.confidence.to_numpy() for sh in shadows]),
            np.stack([sh.in_train.to_numpy() for sh in shadows]))


TARGETS = {"real_target": "real members", "synthetic_target": "synthetic from members"}


def attack_main(args, cfg: dict) -> None:
    p = Privacy.of(cfg)
    c = Classify.of(cfg, p.pool)
    size = c.input_size(Dataset.of(cfg, p.pool))
    pool = pool_of(args.index)
    is_member = in_pool(pool, args.members_index, "member images", args.index)
    # the real target's shadows train on real halves; the synthetic target's go through the
    # pipeline when --synthetic-shadows are given (the paper's design), else the real ones
    shadow_files = {"real_target": args.shadows, "synthetic_target": args.synthetic_shadows or args.shadows}
    kinds = {"real_target": "real data", "synthetic_target": "pipeline" if args.synthetic_shadows else "real data"}
    rows, curves = [], {}
    targets = {name: getattr(args, key) for key, name in TARGETS.items()}
    for key, name in TARGETS.items():
        model_file = targets[name]
        conf, shadow_in = read_shadows(shadow_files[key], pool, args.index)
        target = confidences(load_classifier(model_file), pool, c, size)
        for attack in ATTACKS:
            scores = lira_scores(target, conf, shadow_in, attack)
            rows.append({"target": name, "attack": attack, **roc_summary(scores, is_member),
                         "members": int(is_member.sum()), "non_members": int((~is_member).sum()),
                         "shadows": len(conf), "shadow_kind": kinds[key], "model": model_file})
            curves[(name, attack)] = roc(scores, is_member)
    table = pd.DataFrame(rows)
    inputs = [args.index, args.members_index, *args.shadows, *(args.synthetic_shadows or []),
              *(f"{n}={m}" for n, m in targets.items())]
    write_table(table, args.out, cfg, inputs, "%.4f")
    lira_figure(curves, table, args.figure)


def lira_figure(curves: dict, table: pd.DataFrame, outs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ATTACKS), figsize=(4.2 * len(ATTACKS), 4), squeeze=False)
    for ax, attack in zip(axes[0], ATTACKS):
        for (name, att), (fpr, tpr) in curves.items():
            if att != attack:
                continue
            auc = table[(table.target == name) & (table.attack == attack)].auc.iloc[0]
            ax.plot(np.clip(fpr, 1e-4, 1), np.clip(tpr, 1e-4, 1), label=f"{name} (AUC {auc:.3f})")
        ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"LiRA, {attack.replace('_', ' ')}")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_fig(fig, outs)
    plt.close(fig)


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("shadow", "train shadow classifier k on its seeded half of the pool", shadow_main)
    p.add_argument("--index", required=True, help="the pool dataset's real_index.parquet")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--out", required=True)
    p = cmd.action("score", "score the pool with a pipeline shadow's synthetic-data classifier", score_main)
    p.add_argument("--index", required=True, help="the pool dataset's real_index.parquet")
    p.add_argument("--half-index", required=True, help="the shadow's derived dataset's real_index.parquet")
    p.add_argument("--model", required=True, help="model.pt of the classifier trained on the shadow's synthetic set")
    p.add_argument("--out", required=True)
    p = cmd.action("attack", "LiRA against the two target classifiers; table and figure", attack_main)
    p.add_argument("--index", required=True, help="the pool dataset's real_index.parquet")
    p.add_argument("--members-index", required=True)
    p.add_argument("--shadows", nargs="+", required=True, help="real-data shadows' scores")
    p.add_argument("--synthetic-shadows", nargs="*", default=[],
                   help="pipeline shadows' scores (the synthetic target's; default: --shadows)")
    p.add_argument("--real-target", required=True, help="model.pt of the classifier trained on the members")
    p.add_argument("--synthetic-target", required=True,
                   help="model.pt of the classifier trained on synthetic data made from the members")
    p.add_argument("--out", required=True)
    p.add_argument("--figure", nargs="*", default=[])
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
