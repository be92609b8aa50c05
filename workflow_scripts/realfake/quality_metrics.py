"""Set-quality metrics on feature rows: FID, KID and precision/recall, overall and per class.

- FID (Frechet distance of Gaussian fits) and KID (unbiased polynomial-kernel MMD^2 over subsets,
  Binkowski et al. 2018);
- precision and recall of Kynkaanniemi et al. 2019 (k-NN balls of each set as its manifold).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .settings import Quality


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


PAIRWISE_BYTES = 256 * 2**20  # memory of one block of distances (float64)


def _rows_per_block(n_cols: int) -> int:
    return max(1, PAIRWISE_BYTES // (8 * max(1, n_cols)))


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour in its own set (itself excluded);
    distances in blocks of rows (256 MB each), never the n x n matrix."""
    k = min(k, len(x) - 1)
    step = _rows_per_block(len(x))
    return torch.cat([torch.cdist(x[i : i + step], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), step)])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Precision: share of fake samples inside some real sample's k-NN ball; recall: the converse.
    One pass over blocks of fake rows against all real rows (memory: one 256 MB block, not the
    fake x real matrix: 20 GB at 50k x 50k)."""
    if len(real) < 2 or len(fake) < 2:
        return float("nan"), float("nan")
    r, f = torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)
    rr, rf = knn_radii(r, k), knn_radii(f, k)
    inside = torch.zeros(len(f), dtype=torch.bool)  # fake sample inside some real ball
    covered = torch.zeros(len(r), dtype=torch.bool)  # real sample inside some fake ball
    step = _rows_per_block(len(r))
    for i in range(0, len(f), step):
        d = torch.cdist(f[i : i + step], r)  # (fake block, real)
        inside[i : i + step] = (d <= rr[None, :]).any(1)
        covered |= (d <= rf[i : i + step, None]).any(0)
    return float(inside.double().mean()), float(covered.double().mean())


def set_metrics(real: np.ndarray, fake: np.ndarray, q: Quality) -> dict:
    p, r = precision_recall(real, fake, q.knn)
    k, ks = kid(real, fake, q.kid_subsets, q.kid_subset_size, q.seed)
    return {"n_real": len(real), "n_syn": len(fake), "fid": frechet_distance(real, fake), "kid": k, "kid_std": ks,
            "precision": p, "recall": r}


def compare(real: np.ndarray, real_labels, fake: np.ndarray, fake_labels, q: Quality) -> pd.DataFrame:
    """One row for the whole set (class ``all``) and one per class."""
    real_labels, fake_labels = np.asarray(real_labels), np.asarray(fake_labels)
    rows = [{"class": "all", **set_metrics(real, fake, q)}]
    for c in tqdm(np.unique(real_labels), desc="quality per class", mininterval=10):
        rows.append({"class": str(int(c)), **set_metrics(real[real_labels == c], fake[fake_labels == c], q)})
    return pd.DataFrame(rows)
