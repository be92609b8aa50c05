"""Stage `classify`: train a classifier on real and/or synthetic images, test on real test data.

``python -m realfake.classify train``: one classifier (one setting, variant, scale and seed) ->
``model.pt`` and ``metrics.json``. The model, training loop and evaluation live in
:mod:`realfake.classifier`.
"""

from __future__ import annotations

import logging

import torch

from . import checkpoint
from .atomic import write_json, write_torch
from .classifier import evaluate, train_classifier, training_data
from .cli import Command, loader_workers, provenance, run
from .data import read_table
from .recipes import eval_transform
from .settings import Classify, Dataset, Models

log = logging.getLogger(__name__)


def train_main(args, cfg: dict) -> None:
    ds, c, models = Dataset.of(cfg, args.dataset), Classify.of(cfg, args.dataset), Models.of(cfg)
    index = read_table(args.index, "index")
    num_classes = int(index.label.max()) + 1
    test = index[index.split == "test"]
    size = c.input_size(ds)
    data = training_data(c, index[index.split == "train"] if args.use_real else None, args.synthetic, size, args.seed)
    log.info("training %s on %d images (%s real, %d synthetic sets, loader %s)", c.arch, len(data),
             "with" if args.use_real else "no", len(args.synthetic), c.loader)
    weights = models.resnet50_pretrained if c.pretrained else None
    fingerprint = {"cfg": cfg, "seed": args.seed, "use_real": args.use_real, "synthetic": args.synthetic,
                   "n_train": len(data)}
    ckpt = args.model_out + ".ckpt"
    attributes = ds.attributes
    model = train_classifier(data, num_classes, c, args.seed, weights, ckpt, fingerprint, attributes)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # test on the job's GPU, then save from the CPU
    metrics = evaluate(model.to(device), test.reset_index(drop=True), size, attributes=attributes,
                       workers=loader_workers(args, cfg), transform=eval_transform(c, size))
    model = model.cpu()
    log.info("test %s", metrics)
    write_torch({"state_dict": model.state_dict(), "arch": c.arch,
                 "num_classes": len(attributes) if attributes else num_classes, "attributes": attributes,
                 "config": cfg, "seed": args.seed}, args.model_out)
    labels = {"setting": args.setting}
    if args.setting != "real":
        labels.update(variant=args.variant, scale=str(args.scale))
    write_json({**metrics, **labels, "n_train": len(data), "use_real": args.use_real, "synthetic": args.synthetic,
                **provenance(cfg, dataset=args.dataset, seed=args.seed)}, args.metrics)
    checkpoint.remove(ckpt)


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("train", "train one classifier and test it on the real test split", train_main)
    p.add_argument("--dataset", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--index", required=True, help="the dataset's real_index.parquet")
    p.add_argument("--use-real", action="store_true", help="train on the real training split too")
    p.add_argument("--synthetic", nargs="*", default=[], help="synthetic manifest.parquet files")
    p.add_argument("--setting", required=True, choices=["real", "syn", "realsyn", "synfilt", "realsynfilt"],
                   help="what the classifier trains on (recorded in metrics.json)")
    p.add_argument("--variant", default="", help="generation variant of the synthetic set (recorded)")
    p.add_argument("--scale", type=int, default=0, help="synthetic set size in multiples of the real set (recorded)")
    p.add_argument("--model-out", required=True)
    p.add_argument("--metrics", required=True)
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
