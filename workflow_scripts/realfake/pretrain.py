"""Stage `pretrain` (mini world only): build and pretrain the tiny "web" generator."""

from __future__ import annotations

import torch

from .atomic import write_json
from .cli import Command, run
from .provenance import provenance
from .settings import Pretrain
from .tiny_sd import pretrain_base


def base_main(args, cfg: dict) -> None:
    p = Pretrain.of(cfg)
    torch.set_num_threads(p.threads)  # the base model's floats depend on it; --cores must not change them
    pretrain_base(args.out, p, args.image_size)
    write_json(provenance(cfg), args.out + ".meta.json")


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("base", "pretrain the tiny base model and save it as a pipeline folder", base_main)
    p.add_argument("--out", required=True, help="StableDiffusionPipeline folder to write")
    p.add_argument("--image-size", type=int, default=32)
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
