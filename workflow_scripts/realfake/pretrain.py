"""Stage `pretrain` (mini world only): build and pretrain the tiny "web" generator."""

from __future__ import annotations

from .cli import parser, provenance, run, setup
from .atomic import write_json
from .tiny_sd import pretrain_base


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="StableDiffusionPipeline folder to write")
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args(argv)
    cfg = setup(args)
    pretrain_base(args.out, cfg["pretrain"], args.image_size)
    write_json(provenance(cfg), args.out + ".meta.json")


if __name__ == "__main__":
    run(main)
