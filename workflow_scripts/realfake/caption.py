"""Stage `caption`: BLIP-2 captions of the real training images -> captions.parquet.

Greedy decoding, short captions, batched. With ``caption.model: null`` (the mini world and the
datasets where the paper uses no caption) it writes empty captions in the same schema.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from .atomic import write_json, write_parquet
from .chunks import Chunks
from .cli import Command, loader_workers, run
from .config import config_hash
from .data import read_table
from .encoders import caption_paths, load_blip2
from .provenance import provenance
from .settings import Caption, Models

log = logging.getLogger(__name__)
COLUMNS = ["image_id", "label", "class_name", "caption"]
CHUNK = 10_000  # images per resumable chunk: about 8 minutes of BLIP-2 on one GPU


def captions_main(args, cfg: dict) -> None:
    """Captions in chunks of ``--chunk`` images (resumable after a kill), then one parquet file."""
    settings, models = Caption.of(cfg), Models.of(cfg)
    index = read_table(args.index, "index")
    train = index[index.split == "train"].reset_index(drop=True)
    paths = list(train.path)
    if models.blip2 is None:
        log.info("models.blip2 is null: writing %d empty captions", len(train))
        captions = [""] * len(train)
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        processor, model = load_blip2(models.blip2, device, dtype)
        chunks = Chunks(args.out, len(paths), args.chunk, {"cfg": cfg, "ids": config_hash(list(train.image_id))},
                        "caption")
        workers = loader_workers(args, cfg)
        chunks.compute(lambda lo, hi: caption_paths(processor, model, paths[lo:hi], settings.batch_size,
                                                    settings.max_new_tokens, workers))
        captions = [c for part in chunks for c in part]
    df = pd.DataFrame({"image_id": train.image_id, "label": train.label, "class_name": train.class_name,
                       "caption": captions})[COLUMNS]
    write_parquet(df, args.out)
    write_json(provenance(cfg, n=len(df)), args.out + ".meta.json")
    if models.blip2 is not None:
        chunks.remove()


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("captions", "caption every real training image", captions_main)
    p.add_argument("--index", required=True, help="the dataset's real_index.parquet")
    p.add_argument("--out", required=True, help="captions.parquet to write")
    p.add_argument("--chunk", type=int, default=CHUNK, help="images per resumable chunk")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
