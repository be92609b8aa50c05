"""Stage `nearest`: do synthetic images copy real ones? (paper Fig. 4, copy detection).

For seeded synthetic queries, the top-k real training images by inner product of L2-normalised
copy-detection descriptors. Paper scale: SSCD (``sscd_disc_large``, ResNeXt-101 DISC, TorchScript
file at ``models.sscd``, width checked on load; images resized to 288 px short side, ImageNet normalisation, 1024-d). Mini world
(``models.sscd: null``): the named substitute ``pixels16``, the 16x16 grayscale thumbnail, mean-
centred and L2-normalised, a classic near-duplicate descriptor; no trained copy detector exists in
the mini world. Writes ``nearest.csv`` (every query's top-k) and ``fig4_nearest.{png,pdf}``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .cli import Command, run
from .data import frame_image_chunks, frame_images, read_table
from .models import check_local
from .settings import Models, Nearest
from .tables import save_fig, write_table

log = logging.getLogger(__name__)
CHUNK = 2048  # real images decoded and described at a time


def pixels16(images) -> np.ndarray:
    """Substitute descriptor: 16x16 grayscale, mean-centred, unit norm."""
    from PIL import Image

    arr = np.stack([np.asarray(im.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float64).ravel()
                    for im in images])
    arr -= arr.mean(axis=1, keepdims=True)
    return arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-8)


def load_sscd(path: str, width: int | None = None):
    """The SSCD TorchScript model; with ``width`` (``nearest.descriptor_width``) one small probe
    image checks that it gives descriptors of that width (``sscd_disc_large``, the paper's
    ResNeXt-101, gives 1024; ``sscd_disc_mixup``, a ResNet-50, gives 512)."""
    p = check_local(path, "SSCD TorchScript file", "models.sscd")
    try:
        model = torch.jit.load(str(p), map_location="cpu").eval()
    except RuntimeError as exc:
        raise ValueError(f"{p} is not a TorchScript model (config key models.sscd): {exc}") from exc
    if width is not None:
        with torch.no_grad():
            got = model(torch.zeros(1, 3, 64, 64)).shape[-1]
        if got != width:
            raise ValueError(f"{p} gives {got}-d descriptors, not the {width} of config key "
                             "nearest.descriptor_width: the paper's copy check uses sscd_disc_large (ResNeXt-101, "
                             "1024-d); sscd_disc_mixup is the 512-d ResNet-50 (config key models.sscd)")
    return model


@torch.no_grad()
def sscd_descriptors(model, images, batch_size: int = 32) -> np.ndarray:
    """SSCD preprocessing (resize 288 short side, ImageNet mean/std), L2-normalised descriptors.
    Images of equal preprocessed shape are batched together (aspect ratios differ in real data)."""
    from PIL import Image

    device = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def prep(im):
        w, h = im.size
        s = 288 / min(w, h)
        im = im.convert("RGB").resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - mean) / std

    xs = [prep(im) for im in images]
    out = [None] * len(xs)
    by_shape: dict = {}
    for n, x in enumerate(xs):
        by_shape.setdefault(tuple(x.shape), []).append(n)
    for members in by_shape.values():
        for i in range(0, len(members), batch_size):
            part = members[i : i + batch_size]
            feats = torch.nn.functional.normalize(model(torch.stack([xs[n] for n in part]).to(device)).float(), dim=1)
            for n, f in zip(part, feats.cpu()):
                out[n] = f
    return torch.stack(out).numpy() if out else np.zeros((0, 0), np.float32)


def top_matches(query: np.ndarray, real: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and similarities of the k most similar real descriptors for every query (descending;
    ties to the lower index)."""
    best = TopK(len(query), k)
    best.update(query @ real.T, np.arange(len(real)))
    return best.idx, best.sim


class TopK:
    """Running top-k of every query over blocks of real descriptors: the real set is never held,
    only k indices and similarities per query."""

    def __init__(self, n_queries: int, k: int):
        self.k = k
        self.idx = np.zeros((n_queries, 0), np.int64)
        self.sim = np.zeros((n_queries, 0))

    def update(self, sim_block: np.ndarray, rows: np.ndarray) -> None:
        """Merge a (queries, block) similarity block whose columns are the real rows ``rows``."""
        cand_sim = np.concatenate([self.sim, sim_block], axis=1)
        cand_idx = np.concatenate([self.idx, np.broadcast_to(np.asarray(rows, np.int64), sim_block.shape)], axis=1)
        order = np.lexsort((cand_idx, -cand_sim), axis=1)[:, : self.k]  # by similarity, then index
        self.idx = np.take_along_axis(cand_idx, order, axis=1)
        self.sim = np.take_along_axis(cand_sim, order, axis=1)


def figure(queries, real_images, idx, sim, outs, descriptor: str, show: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(queries)
    fig, axes = plt.subplots(n, 1 + show, figsize=(1.6 * (1 + show), 1.7 * n + 0.5), squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(queries[r])
        axes[r, 0].set_title("synthetic query", fontsize=7)
        for c in range(show):
            axes[r, c + 1].imshow(real_images[idx[r, c]])
            axes[r, c + 1].set_title(f"real #{c + 1}, sim {sim[r, c]:.2f}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle(f"nearest real training images by {descriptor} similarity", fontsize=9)
    fig.tight_layout()
    save_fig(fig, outs)
    plt.close(fig)


def search_main(args, cfg: dict) -> None:
    n = Nearest.of(cfg)
    index = read_table(args.index, "index")
    real = index[index.split == "train"].reset_index(drop=True)
    man = read_table(args.manifest, "manifest")
    if n.queries > len(man):
        raise ValueError(f"config key nearest.queries: {n.queries} queries but {args.manifest} has {len(man)} images")
    pick = np.sort(np.random.default_rng(n.seed).choice(len(man), n.queries, replace=False))
    queries = man.iloc[pick].reset_index(drop=True)
    q_images = frame_images(queries)
    sscd = Models.of(cfg).sscd
    if sscd:
        model, name = load_sscd(sscd, n.descriptor_width), "SSCD"
        model = model.to("cuda" if torch.cuda.is_available() else "cpu")
        describe = lambda images: sscd_descriptors(model, images)  # noqa: E731
    else:
        name, describe = "pixels16 (substitute for SSCD)", pixels16
    qd = describe(q_images)
    k = min(n.top_k, len(real))
    best = TopK(len(queries), k)
    for pos, images in tqdm(frame_image_chunks(real, chunk=CHUNK), total=-(-len(real) // CHUNK), desc="nearest",
                            mininterval=10):
        best.update(qd @ describe(images).T, pos)
    idx, sim = best.idx, best.sim
    rows = []
    for q in range(len(queries)):
        for rank in range(k):
            rows.append({"query": queries.image_id[q], "query_source": queries.source_image[q], "rank": rank + 1,
                         "real": real.image_id[idx[q, rank]], "similarity": float(sim[q, rank]),
                         "is_source": real.image_id[idx[q, rank]] == queries.source_image[q], "descriptor": name})
    table = pd.DataFrame(rows)
    write_table(table, args.out, cfg, [args.index, args.manifest], "%.4f", descriptor=name)
    shown = sorted({int(i) for i in idx[:, : min(3, k)].ravel()})  # only the matched real images are loaded
    r_images = dict(zip(shown, frame_images(real.iloc[shown])))
    figure(q_images, r_images, idx, sim, args.figure, name, show=min(3, k))
    top1 = table[table["rank"] == 1]
    log.info("top-1 similarity mean %.3f; top-1 match is the query's own source image for %d of %d queries",
             top1.similarity.mean(), int(top1.is_source.sum()), len(top1))



def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("search", "top-k real training images of seeded synthetic queries; table and figure", search_main)
    p.add_argument("--index", required=True, help="the dataset's real_index.parquet")
    p.add_argument("--manifest", required=True, help="the synthetic set's manifest.parquet")
    p.add_argument("--out", required=True, help="nearest.csv")
    p.add_argument("--figure", nargs="+", required=True)
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
