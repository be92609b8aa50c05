"""Stage `ood`: ImageNet classifiers on ImageNet-V2, -Sketch, -R and -A (paper Tab. 4).

The OOD sets are labelled by WordNet id. A classifier of an ImageNet-kind dataset knows that
dataset's classes (all 1000, or a class list such as IN-100): only OOD images of those classes are
scored, and for ImageNet-R and -A (200 classes each) the logits are masked to the classes the set
has before argmax / top-5, the published protocol. With a 1K classifier this is exactly the standard
evaluation; with IN-100 it is the IN-100 subset of each set.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import torch

from .atomic import write_json
from .classifier import predict_logits
from .classifier_models import load_classifier
from .classlists import imagenet_1k_wnids, read_classlist
from .cli import Command, run
from .datasets import ood
from .errors import ConfigError
from .provenance import provenance
from .recipes import eval_transform
from .settings import Classify, Dataset, Ood, Tables
from .tables import summarize, write_table

log = logging.getLogger(__name__)
SETS = {"v2": "ImageNet-V2", "sketch": "ImageNet-Sketch", "r": "ImageNet-R", "a": "ImageNet-A"}


def classifier_classes(ds: Dataset) -> list[str]:
    """WordNet ids in the classifier's label order (the imagenet reader's order)."""
    return sorted(read_classlist(ds.classlist)) if ds.classlist else imagenet_1k_wnids()


def ood_index(kind: str, root, classes: list[str]) -> tuple[pd.DataFrame, list[int] | None]:
    """Test rows of one OOD set relabelled to the classifier's classes, and the logit mask
    (classifier positions of the set's classes; None = no masking)."""
    wnids_1k = imagenet_1k_wnids()
    index, mask_1k = ood(kind, root, wnids_1k)
    pos = {w: i for i, w in enumerate(classes)}
    index = index[index.class_name.isin(pos)].copy()  # class_name holds the WordNet id
    index["label"] = index.class_name.map(pos).astype(int)
    mask = None if mask_1k is None else sorted(pos[wnids_1k[m]] for m in mask_1k if wnids_1k[m] in pos)
    if mask is not None and len(mask) == len(classes):
        mask = None
    return index.reset_index(drop=True), mask


def masked_topk(logits: torch.Tensor, labels: torch.Tensor, mask: list[int] | None) -> dict:
    if mask is not None:
        keep = torch.full((logits.shape[1],), float("-inf"))
        keep[torch.as_tensor(mask)] = 0.0
        logits = logits + keep
    k = min(5, logits.shape[1] if mask is None else len(mask))
    top = logits.topk(k, dim=1).indices
    return {"top1": float((top[:, 0] == labels).float().mean() * 100),
            "top5": float((top == labels[:, None]).any(1).float().mean() * 100), "k": k}


def evaluate_set(model, kind: str, root, classes: list[str], size: int, batch_size: int, transform=None) -> dict:
    index, mask = ood_index(kind, root, classes)
    if index.empty:
        raise ValueError(f"{SETS[kind]} at {root} has no images of the classifier's {len(classes)} classes")
    logits = predict_logits(model, index, size, batch_size, transform=transform)
    if logits.shape[1] != len(classes):
        raise ValueError(f"the classifier has {logits.shape[1]} outputs but its dataset has {len(classes)} classes")
    out = masked_topk(logits, torch.tensor(index.label.to_numpy()), mask)
    return {**out, "n_images": len(index), "n_classes_scored": int(index.label.nunique()),
            "mask_classes": None if mask is None else len(mask)}


def table4(files, cfg: dict) -> pd.DataFrame:
    """Top-1/top-5 per OOD set and training setting, mean and std over seeds: the paper's Tab. 4
    rows (the baselines, ours at every synthetic scale, real only, real + ours). The paper's text
    gives no Tab. 4 numbers (its table lost them), so there is no paper column; claims.csv checks
    its statements."""
    recs = [json.loads(Path(f).read_text()) for f in files]
    df = pd.DataFrame(recs)
    rows = []
    names = {"real": "real only", "syn": "synthetic only", "realsyn": "real + synthetic"}
    for (ds, setting, variant, scale, oset), g in df.groupby(["dataset", "setting", "variant", "scale", "ood_set"],
                                                             sort=False):
        label = names[setting] + (f": {variant} {scale}x" if variant else "")
        rows.append({"dataset": ds, "row": label, "setting": setting, "variant": variant, "scale": scale,
                     "ood_set": SETS[oset], **summarize(g), "n_images": int(g.n_images.iloc[0]),
                     "mask_classes": g.mask_classes.iloc[0]})
    order = {"real": 0, "syn": 1, "realsyn": 2}
    method = Tables.of(cfg).table1_method
    out = pd.DataFrame(rows)
    out["_key"] = [(order[r.setting], r.variant == method, r.scale) for r in out.itertuples()]
    return (out.sort_values(["dataset", "ood_set", "_key"], kind="stable").drop(columns="_key")
            .reset_index(drop=True))


def table_main(args, cfg: dict) -> None:
    write_table(table4(args.metrics, cfg), args.out, cfg, args.metrics)


def eval_main(args, cfg: dict) -> None:
    ds, o = Dataset.of(cfg, args.dataset), Ood.of(cfg)
    if ds.kind != "imagenet":
        raise ConfigError(f"config key ood.dataset: {args.dataset!r} is of kind {ds.kind!r}; the OOD sets are "
                          "ImageNet classes, so it must be kind imagenet")
    root = o.sets[args.ood_set]
    if not root:
        raise ConfigError(f"config key ood.sets.{args.ood_set}: no root given for {SETS[args.ood_set]}")
    trained = json.loads(Path(args.classifier_metrics).read_text())  # what the classifier was trained on
    model = load_classifier(args.model, "cuda" if torch.cuda.is_available() else "cpu")
    c = Classify.of(cfg, args.dataset)
    size = c.input_size(ds)  # tested with the classifier's own test transform
    res = evaluate_set(model, args.ood_set, root, classifier_classes(ds), size, o.batch_size, eval_transform(c, size))
    log.info("%s on %s: top-1 %.2f top-5 %.2f over %d images", args.model, SETS[args.ood_set], res["top1"],
             res["top5"], res["n_images"])
    write_json({**res, "dataset": args.dataset, "ood_set": args.ood_set, "model": args.model,
                "setting": trained["setting"], "variant": trained.get("variant", ""),
                "scale": int(trained.get("scale", 0)), "seed": int(trained["seed"]),
                **{k: v for k, v in provenance(cfg).items() if k != "config"}}, args.out)


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("eval", "one classifier on one OOD set", eval_main)
    p.add_argument("--dataset", required=True, help="the classifier's (ImageNet-kind) dataset")
    p.add_argument("--ood-set", required=True, choices=sorted(SETS))
    p.add_argument("--model", required=True, help="classifier model.pt")
    p.add_argument("--classifier-metrics", required=True,
                   help="the classifier's metrics.json (its setting, variant, scale and seed are recorded)")
    p.add_argument("--out", required=True)
    p = cmd.action("table", "table 4 from every eval output", table_main)
    p.add_argument("--metrics", nargs="+", required=True, help="eval outputs (.json)")
    p.add_argument("--out", required=True, help="table4.csv to write")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
