"""Stage `data`: lay out the mini world's digits (``digits``), or index a dataset (``index``)."""

from __future__ import annotations

from .atomic import write_json
from .cli import parser, provenance, run, setup
from .config import class_count, get_dataset
from .data import build_index, write_digits_imagefolder


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("action", choices=["digits", "index"])
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", default="", help="digits: folder to write; index: root (default datasets.<name>.root)")
    p.add_argument("--out", help="index: real_index.parquet to write")
    args = p.parse_args(argv)
    cfg = setup(args)
    ds = get_dataset(cfg, args.dataset)
    if args.action == "digits":
        write_digits_imagefolder(args.data_dir, ds["image_size"], ds["test_size"], ds["split_seed"])
        return
    root = args.data_dir or ds["root"]
    index = build_index(ds, root, args.out, expected_classes=class_count(cfg, args.dataset))
    write_json(provenance(cfg, dataset=args.dataset, root=str(root), n_images=len(index)), args.out + ".meta.json")


if __name__ == "__main__":
    run(main)
