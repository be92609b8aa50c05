"""CelebA attributes end to end (paper Tab. 10): config/celeba.yaml itself, with only paths, sizes
and the attribute list overridden, on a folder in CelebA's release layout (attribute file, partition
file, img_align_celeba/) with tiny random models of the real classes; the classifiers train under the
IN-1K recipe's pieces (LAMB, warm-up cosine, mixup/CutMix, RandAugment) to cover them in a real run."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow  # minutes: end-to-end runs through real stage code

ATTRS = ["Smiling", "Heavy_Makeup"]


@pytest.fixture(scope="module")
def celeba_run(tmp_path_factory, tiny_base):
    from realfake.models import write_random_open_clip

    root = tmp_path_factory.mktemp("celeba")
    (root / "img_align_celeba").mkdir()
    rng = np.random.default_rng(0)
    attr_lines, part_lines, n = [], [], 0
    for combo in range(4):
        smiling, makeup = combo & 1, combo >> 1 & 1
        for split, count in (("0", 3), ("2", 2)):
            for _ in range(count):
                n += 1
                name = f"{n:06d}.jpg"
                im = rng.integers(0, 50, (48, 40, 3), dtype=np.uint8)  # CelebA's portrait aspect
                im[..., 0] += np.uint8(200 * smiling)
                im[..., 1] += np.uint8(200 * makeup)
                Image.fromarray(im).save(root / "img_align_celeba" / name, quality=90)
                # the real file has 40 attributes; three are enough to show that only the chosen ones count
                attr_lines.append(f"{name} {2 * smiling - 1:2d} {rng.choice([-1, 1]):2d} {2 * makeup - 1:2d}")
                part_lines.append(f"{name} {split}")
    (root / "list_attr_celeba.txt").write_text(f"{n}\nSmiling Young Heavy_Makeup\n" + "\n".join(attr_lines) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(part_lines) + "\n")
    write_random_open_clip("realfake-tiny-vit", 0, root / "clip.pt")
    override = {
        "seeds": [0], "threads": 1, "scales": [1],
        "models": {"sd15": str(tiny_base), "blip2": None, "clip": str(root / "clip.pt"), "sscd": None,
                   "resnet50_pretrained": None},
        "image_encoder": {"model_name": "realfake-tiny-vit"},
        "finetune": {"epochs": None, "steps": 2, "batch_size": 2, "gpus": 1, "dm_group": None, "checkpoint_every": 0},
        "generate": {"steps": 2, "batch_size": 4, "classes_per_shard": 2},
        "classify": {"epochs": 2, "batch_size": 4, "gpus": 1, "image_size": 32, "num_workers": 0, "shuffle_buffer": 8},
        "tables": {"table1_caption_baseline": None, "table1_official": None, "table2_variants": ["base", "ours"]},
        "datasets": {"celeba": {"root": str(root), "attributes": ATTRS, "train_per_class": None, "image_size": 32,
                                "classify_overrides": {
                                    "epochs": 2, "schedule": "cosine", "warmup_epochs": 1, "optimizer": "lamb",
                                    "nesterov": False, "lr": 0.005, "weight_decay": 0.02, "loss": "bce",
                                    "mixup": 0.1, "cutmix": 1.0, "auto_augment": "rand-m7-mstd0.5"}}},
    }
    (root / "override.yaml").write_text(yaml.safe_dump(override))
    work = root / "work"
    run_snakemake(work, "results/tables/table10.csv", "--configfile", str(REPO / "config" / "celeba.yaml"),
                  str(root / "override.yaml"))
    return work / "results"


def test_celeba_config_runs_to_the_attribute_table(celeba_run):
    r = celeba_run
    index = pd.read_parquet(r / "celeba" / "real_index.parquet")
    assert sorted(index.label.unique()) == [0, 1, 2, 3] and (index.split == "train").sum() == 12
    means = torch.load(r / "celeba" / "class_means.pt")["means"]
    assert sorted(means) == [0, 1, 2, 3]  # visual guidance per attribute combination
    manifest = pd.read_parquet(r / "synthetic/celeba/ours/s0/1x/manifest.parquet")
    assert len(manifest) == 12 and sorted(manifest.label.unique()) == [0, 1, 2, 3]
    assert set(manifest.prompt) == {f"a {c} person" for c in
                                    ("not smiling, not heavy makeup", "smiling, not heavy makeup",
                                     "not smiling, heavy makeup", "smiling, heavy makeup")}
    model = torch.load(r / "celeba/classify/syn/ours/1x/s0/model.pt", weights_only=False)
    assert model["arch"] == "resnet50" and model["num_classes"] == 2 and model["attributes"] == ATTRS
    assert model["state_dict"]["fc.weight"].shape[0] == 2  # one output per attribute, not per combination
    metrics = json.loads((r / "celeba/classify/real/s0/metrics.json").read_text())
    assert sorted(metrics["attr_acc"]) == sorted(ATTRS) and metrics["n_test"] == 8 and "top1" not in metrics
    assert metrics["mean_attr_acc"] == pytest.approx(np.mean(list(metrics["attr_acc"].values())))
    cls = metrics["config"]["datasets"]["celeba"]["classify_overrides"]
    assert cls["optimizer"] == "lamb" and cls["loss"] == "bce"
    t10 = pd.read_csv(r / "tables" / "table10.csv")
    assert t10.row.unique().tolist() == ["real only", "synthetic only: base", "synthetic only: ours",
                                         "real + synthetic: ours"]
    assert t10.attribute.unique().tolist() == ATTRS + ["mean"]
    real = t10[(t10.cell == "real")].set_index("attribute").acc_mean
    assert real["Smiling"] == pytest.approx(metrics["attr_acc"]["Smiling"])
    assert t10.acc_mean.between(0, 100).all() and (t10.n_seeds == 1).all()
    assert json.loads((r / "tables" / "table10.csv.json").read_text())["config_hash"]
    assert not (r / "tables" / "table1.csv").exists()  # attribute datasets report in table 10 only
