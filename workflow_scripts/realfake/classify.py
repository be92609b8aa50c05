"""Stage `classify`: train a classifier on real and/or synthetic images, test on real test data.

``python -m realfake.classify train``: one classifier (one setting, variant, scale and seed) ->
``model.pt``, ``metrics.json`` and ``curve.csv`` (training loss per epoch, test figures every
``classify.validate_every`` epochs). The model, training loop and evaluation live in
:mod:`realfake.classifier`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import checkpoint, distributed
from .atomic import atomic_path, write_json, write_torch
from .classifier import evaluate, train_classifier
from .classifier_data import training_data
from .cli import Command, job_cpus, loader_workers, run
from .data import read_table
from .paths import MIXES
from .provenance import provenance
from .recipes import eval_transform
from .settings import Classify, Dataset, Models

log = logging.getLogger(__name__)


def train_main(args, cfg: dict) -> None:
    world = distributed.init(Classify.of(cfg, args.dataset).gpus, "classify.gpus")
    try:
        train_on(args, cfg, world)
    finally:
        distributed.shutdown(world)


def train_on(args, cfg: dict, world: distributed.World) -> None:
    """Train the replicas (all processes of a data-parallel job), test them and write model.pt and
    metrics.json (rank 0)."""
    ds, c, models = Dataset.of(cfg, args.dataset), Classify.of(cfg, args.dataset), Models.of(cfg)
    index = read_table(args.index, "index")
    num_classes = int(index.label.max()) + 1
    test = index[index.split == "test"]
    size = c.input_size(ds)
    train_workers = c.loader_workers(job_cpus(args, cfg, world.size))
    data = training_data(c, index[index.split == "train"] if args.use_real else None, args.synthetic, size, args.seed,
                         world, train_workers)
    log.info("training %s on %d images (%s real, %d synthetic sets, loader %s%s)", c.arch, len(data),
             "with" if args.use_real else "no", len(args.synthetic), c.loader,
             f": {c.streams} streams read by {train_workers} loader processes" if c.loader == "stream" else "")
    weights = models.resnet50_pretrained if c.pretrained else None
    attributes = ds.attributes
    device = world.device()  # test on the job's GPU, then save from the CPU
    test = test.reset_index(drop=True)
    workers, transform = loader_workers(args, cfg, world.size), eval_transform(c, size)

    def validate(net) -> dict:
        return evaluate(net, test, size, attributes=attributes, workers=workers, transform=transform)

    runs, model, curves = [], None, []
    for k in range(c.replicas):  # replica k: seed * 1000 + k (replica 0 is the seed itself)
        seed = replica_seed(args.seed, k)
        fingerprint = {"cfg": cfg, "seed": seed, "use_real": args.use_real, "synthetic": args.synthetic,
                       "n_train": len(data)}
        ckpt = args.model_out + (".ckpt" if k == 0 else f".r{k}.ckpt")
        curve: list[dict] = []
        trained = train_classifier(data, num_classes, c, seed, weights, ckpt, fingerprint, attributes, world,
                                   segments=args.segments, validate=validate, curve=curve)
        if not world.main:
            continue
        curves += [{"replica": k, **row} for row in curve]
        runs.append(validate(trained.to(device)))
        log.info("test (replica %d of %d, seed %d) %s", k + 1, c.replicas, seed, runs[-1])
        if k == 0:
            model = trained.cpu()  # model.pt is replica 0; its checkpoint goes once both files are written
        else:
            checkpoint.remove(ckpt)
    if not world.main:
        return
    metrics = mean_metrics(runs)
    log.info("test %s", metrics)
    write_torch({"state_dict": model.state_dict(), "arch": c.arch,
                 "num_classes": len(attributes) if attributes else num_classes, "attributes": attributes,
                 "config": cfg, "seed": args.seed}, args.model_out)
    curve_out = args.curve or str(Path(args.metrics).with_name("curve.csv"))
    with atomic_path(curve_out) as tmp:  # one row per replica and epoch; test_* only on tested epochs
        pd.DataFrame(curves).to_csv(tmp, index=False, float_format="%.6f")
    labels = {"setting": args.setting}
    if args.setting != "real":
        labels.update(variant=args.variant, scale=str(args.scale))
    write_json({**metrics, **labels, "n_train": len(data), "use_real": args.use_real, "synthetic": args.synthetic,
                **provenance(cfg, dataset=args.dataset, seed=args.seed)}, args.metrics)
    checkpoint.remove(args.model_out + ".ckpt")


def replica_seed(seed: int, k: int) -> int:
    return seed if k == 0 else seed * 1000 + k


def mean_metrics(runs: list[dict]) -> dict:
    """One replica's metrics as they are; several: the mean of every accuracy, and each replica's
    top-1 (or mean attribute accuracy) under ``replicas_top1``."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            out[key] = float(np.mean([r[key] for r in runs]))
        elif isinstance(value, dict):
            out[key] = {a: float(np.mean([r[key][a] for r in runs])) for a in value}
    main_key = "top1" if "top1" in out else "mean_attr_acc"
    out["replicas_top1"] = [r[main_key] for r in runs]
    return out


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("train", "train one classifier and test it on the real test split", train_main)
    p.add_argument("--dataset", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--index", required=True, help="the dataset's real_index.parquet")
    p.add_argument("--use-real", action="store_true", help="train on the real training split too")
    p.add_argument("--synthetic", nargs="*", default=[], help="synthetic manifest.parquet files")
    p.add_argument("--setting", required=True, choices=["real", *MIXES],
                   help="what the classifier trains on (recorded in metrics.json)")
    p.add_argument("--variant", default="", help="generation variant of the synthetic set (recorded)")
    p.add_argument("--scale", type=int, default=0, help="synthetic set size in multiples of the real set (recorded)")
    p.add_argument("--model-out", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--curve", default=None, help="curve.csv to write: training loss and test figures per epoch "
                   "(default: beside --metrics)")
    p.add_argument("--segments", type=int, default=1, help="jobs the run is split into (max_job_minutes)")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
