"""Stage `embed`: image embeddings of the real training images and their per-class means.

Paper scale: CLIP ViT-L/14 (open_clip ``ViT-L-14``, OpenAI weights from a local file), the
projected 768-d embedding. Mini world: ``realfake-tiny-vit``, a seeded random open_clip ViT
whose 64-d output matches the tiny text encoder (a fixed random encoder is used because the
workflow has no image-text data to train a CLIP on; random conv/ViT features still separate
digit classes, which is all the class-mean token needs).
"""

from __future__ import annotations

import logging

import pandas as pd
import torch
from tqdm import tqdm

from .atomic import write_json, write_torch
from .cli import Command, provenance, run, seed_everything
from .images import load_rgb
from .models import create_open_clip, write_random_open_clip
from .settings import ImageEncoder

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_paths(model, preprocess, paths, batch_size: int = 64, device: str = "cpu") -> torch.Tensor:
    out = []
    for i in tqdm(range(0, len(paths), batch_size), desc="embed", mininterval=10):
        x = torch.stack([preprocess(load_rgb(p)) for p in paths[i : i + batch_size]]).to(device)
        out.append(model.encode_image(x).float().cpu())
    return torch.cat(out)


def class_means(emb: torch.Tensor, labels) -> dict[int, torch.Tensor]:
    labels = torch.as_tensor(list(labels))
    return {int(c): emb[labels == c].mean(0) for c in torch.unique(labels)}


def init_main(args, cfg: dict) -> None:
    enc = ImageEncoder.of(cfg)
    write_random_open_clip(enc.model_name, enc.seed, args.checkpoint)


def embed_main(args, cfg: dict) -> None:
    enc = ImageEncoder.of(cfg)
    seed_everything(enc.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, preprocess = create_open_clip(enc.model_name, args.checkpoint)
    model = model.to(device)
    index = pd.read_parquet(args.index)
    train = index[index.split == "train"].reset_index(drop=True)
    emb = embed_paths(model, preprocess, list(train.path), device=device)
    means = class_means(emb, train.label)
    log.info("embedded %d images, dim %d, %d classes", len(emb), emb.shape[1], len(means))
    write_torch({"image_id": list(train.image_id), "label": list(map(int, train.label)), "embedding": emb},
                args.embeddings)
    write_torch({"means": means, "model_name": enc.model_name, "checkpoint": str(args.checkpoint)}, args.means)
    write_json(provenance(cfg, dim=int(emb.shape[1])), args.means + ".meta.json")


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("init", "write the seeded random image encoder (mini world)", init_main)
    p.add_argument("--checkpoint", required=True, help="open_clip checkpoint file to write")
    p = cmd.action("embed", "embed the real training images; per-class means", embed_main)
    p.add_argument("--checkpoint", required=True, help="open_clip weights to load")
    p.add_argument("--index", required=True, help="the dataset's real_index.parquet")
    p.add_argument("--embeddings", required=True, help="embeddings.pt to write")
    p.add_argument("--means", required=True, help="class_means.pt to write")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
