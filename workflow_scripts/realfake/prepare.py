"""Stage `prepare`: lay out the mini world's digits (``digits``), or index a dataset (``index``)."""

from __future__ import annotations

from .atomic import write_json
from .cli import Command, loader_workers, run
from .config import class_count, get_dataset
from .data import build_index, write_digits_imagefolder
from .provenance import provenance


def digits_main(args, cfg: dict) -> None:
    ds = get_dataset(cfg, args.dataset)
    write_digits_imagefolder(args.data_dir, ds["image_size"], ds["test_size"], ds["split_seed"])


def index_main(args, cfg: dict) -> None:
    ds = get_dataset(cfg, args.dataset)
    root = args.data_dir or ds["root"]
    index = build_index(ds, root, args.out, expected_classes=class_count(cfg, args.dataset),
                        workers=loader_workers(args, cfg), name=args.dataset)
    write_json(provenance(cfg, dataset=args.dataset, root=str(root), n_images=len(index)), args.out + ".meta.json")


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("digits", "write the mini world's digits as train/test class folders", digits_main)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", required=True, help="folder to write")
    p = cmd.action("index", "index a dataset into real_index.parquet", index_main)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", default="", help="dataset root (default: config key datasets.<name>.root)")
    p.add_argument("--out", required=True, help="real_index.parquet to write")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
