"""Stage `embed`: image embeddings of the real training images and their per-class means.

Paper scale: CLIP ViT-L/14 (open_clip ``ViT-L-14``, OpenAI weights from a local file), the
projected 768-d embedding. Mini world: ``realfake-tiny-vit``, a seeded random open_clip ViT
whose 64-d output matches the tiny text encoder (a fixed random encoder is used because the
workflow has no image-text data to train a CLIP on; random conv/ViT features still separate
digit classes, which is all the class-mean token needs).
"""

from __future__ import annotations

import logging

import torch

from .atomic import write_json, write_torch
from .chunks import Chunks
from .cli import Command, loader_workers, run
from .config import config_hash
from .data import read_table
from .encoders import class_means, embed_paths
from .models import create_open_clip, write_random_open_clip
from .provenance import provenance, seed_everything
from .settings import ImageEncoder

log = logging.getLogger(__name__)
CHUNK = 50_000  # images per resumable chunk: a few minutes of ViT-L/14 on one GPU


def init_main(args, cfg: dict) -> None:
    enc = ImageEncoder.of(cfg)
    write_random_open_clip(enc.model_name, enc.seed, args.checkpoint)


def embed_main(args, cfg: dict) -> None:
    enc = ImageEncoder.of(cfg)
    seed_everything(enc.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, preprocess = create_open_clip(enc.model_name, args.checkpoint)
    model = model.to(device)
    index = read_table(args.index, "index")
    train = index[index.split == "train"].reset_index(drop=True)
    paths, workers = list(train.path), loader_workers(args, cfg)
    chunks = Chunks(args.embeddings, len(paths), args.chunk, {"cfg": cfg, "checkpoint": str(args.checkpoint),
                                                              "ids": config_hash(list(train.image_id))}, "embed")
    chunks.compute(lambda lo, hi: embed_paths(model, preprocess, paths[lo:hi], device=device, workers=workers))
    emb = None  # the output file holds every embedding (768 fp32 each: 3.9 GB at IN-1K), filled chunk by chunk
    for k, part in enumerate(chunks):
        if emb is None:
            emb = torch.empty(len(paths), *part.shape[1:])
        lo, hi = chunks.bounds(k)
        emb[lo:hi] = part
    means = class_means(emb, train.label)
    log.info("embedded %d images, dim %d, %d classes", len(emb), emb.shape[1], len(means))
    write_torch({"image_id": list(train.image_id), "label": list(map(int, train.label)), "embedding": emb},
                args.embeddings)
    write_torch({"means": means, "model_name": enc.model_name, "checkpoint": str(args.checkpoint)}, args.means)
    write_json(provenance(cfg, dim=int(emb.shape[1])), args.means + ".meta.json")
    chunks.remove()


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("init", "write the seeded random image encoder (mini world)", init_main)
    p.add_argument("--checkpoint", required=True, help="open_clip checkpoint file to write")
    p = cmd.action("embed", "embed the real training images; per-class means", embed_main)
    p.add_argument("--checkpoint", required=True, help="open_clip weights to load")
    p.add_argument("--index", required=True, help="the dataset's real_index.parquet")
    p.add_argument("--embeddings", required=True, help="embeddings.pt to write")
    p.add_argument("--means", required=True, help="class_means.pt to write")
    p.add_argument("--chunk", type=int, default=CHUNK, help="images per resumable chunk")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
