"""OOD evaluation (paper Tab. 4) on tiny fake ImageNet-V2/-Sketch/-R/-A in their real layouts."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import REPO, run_cli
from realfake.config import ConfigError, load_config
from realfake.classlists import imagenet_1k_wnids, ood_classlist
from realfake.ood import masked_topk, ood_index, table4


def _img(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)


@pytest.fixture(scope="module")
def fake_ood(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood")
    r_list, a_list, all_1k = ood_classlist("r"), ood_classlist("a"), imagenet_1k_wnids()
    outside = next(w for w in all_1k if w not in r_list and w not in a_list)
    classes = sorted([r_list[0], r_list[1], outside])  # outside R and A: masked out there
    other = next(w for w in all_1k if w not in classes)  # a class the classifier does not know
    for kind, folders in (("r", r_list), ("a", a_list)):
        for w in folders:
            (root / kind / w).mkdir(parents=True, exist_ok=True)
    for k, w in enumerate(classes + [other]):
        for i in range(2):
            _img(root / "v2" / str(all_1k.index(w)) / f"{i}.jpeg", 40 * k + i)
            _img(root / "sketch" / w / f"{i}.JPEG", 40 * k + i)
            for kind, folders in (("r", r_list), ("a", a_list)):
                if w in folders:
                    _img(root / kind / w / f"{i}.jpg", 40 * k + i)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root, classes


def test_index_keeps_known_classes_and_masks_r_and_a(fake_ood):
    root, classes = fake_ood
    v2, mask = ood_index("v2", root / "v2", classes)
    assert mask is None and sorted(v2.label) == [0, 0, 1, 1, 2, 2]
    sketch, mask = ood_index("sketch", root / "sketch", classes)
    assert mask is None and len(sketch) == 6
    r, mask = ood_index("r", root / "r", classes)
    outside = [i for i, w in enumerate(classes) if w not in ood_classlist("r")]
    assert len(r) == 4 and mask == sorted(set(range(3)) - set(outside))


def test_masked_topk_ignores_classes_outside_the_mask():
    logits = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([2, 1])
    assert masked_topk(logits, labels, None)["top1"] == 50.0
    assert masked_topk(logits, labels, [1, 2])["top1"] == 100.0  # class 0 is not in the set


@pytest.mark.slow
def test_eval_cli_and_table4(fake_ood, tmp_path):
    from realfake.classifier import predict_logits
    from realfake.classifier_models import build_model, load_classifier

    root, classes = fake_ood
    torch.manual_seed(0)
    model = build_model("smallcnn", 3)
    torch.save({"state_dict": model.state_dict(), "arch": "smallcnn", "num_classes": 3}, tmp_path / "model.pt")
    cfg = load_config(overrides={
        "mini_substitutes": True,  # a tiny classifier on fake ImageNet folders; no SD or CLIP is loaded
        "datasets": {"in": {"kind": "imagenet", "root": str(root), "classlist": str(root / "classes.txt"),
                            "image_size": 16}},
        "ood": {"dataset": "in", "sets": {k: str(root / k) for k in ("v2", "sketch", "r", "a")}}})
    outs = []
    for seed, setting in ((0, "real"), (1, "real")):
        for name in ("v2", "r"):
            out = tmp_path / f"{setting}{seed}_{name}.json"
            trained = tmp_path / f"{setting}{seed}_metrics.json"  # what the classify stage records
            trained.write_text(json.dumps({"setting": setting, "seed": seed, "top1": 0.0}))
            run_cli("ood", "eval", "--cfg", json.dumps(cfg), "--dataset", "in", "--ood-set", name, "--model",
                    str(tmp_path / "model.pt"), "--classifier-metrics", str(trained), "--out", str(out))
            outs.append(out)
    r = json.loads((tmp_path / "real0_r.json").read_text())
    index, mask = ood_index("r", root / "r", classes)
    logits = predict_logits(load_classifier(tmp_path / "model.pt"), index, 16)
    want = masked_topk(logits, torch.tensor(index.label.to_numpy()), mask)
    assert r["top1"] == pytest.approx(want["top1"]) and r["n_images"] == 4 and r["mask_classes"] == len(mask)
    run_cli("ood", "table", "--cfg", json.dumps(cfg), "--metrics", *map(str, outs), "--out", str(tmp_path / "t4.csv"))
    t4 = pd.read_csv(tmp_path / "t4.csv")
    assert sorted(t4.ood_set) == ["ImageNet-R", "ImageNet-V2"] and (t4.n_seeds == 2).all()
    assert t4.set_index("ood_set").loc["ImageNet-R", "top1_mean"] == pytest.approx(want["top1"], abs=0.01)


def test_ood_config_errors(fake_ood):
    root, _ = fake_ood
    with pytest.raises(ConfigError, match="ood.dataset: unknown dataset 'ghost'"):
        load_config(overrides={"ood": {"dataset": "ghost"}})
    with pytest.raises(ConfigError, match="ood.dataset: 'mini' is of kind 'digits'"):
        load_config(overrides={"datasets": {"mini": {"kind": "digits"}}, "ood": {"dataset": "mini"}})
    with pytest.raises(ConfigError, match="ood.sets: give the root"):
        load_config(overrides={"datasets": {"in": {"kind": "imagenet", "root": str(root)}}, "ood": {"dataset": "in"}})


def test_table4_rows_at_every_scale_and_the_ood_claims(tmp_path):
    """Table 4 has the baselines, ours at every scale, real and real + ours; claims.csv checks the
    paper's Sec. 4.4 statements on it (ours at the largest scale vs real only, real + ours vs real)."""
    from realfake.report import claims

    cfg = load_config(REPO / "config" / "imagenet1k.yaml")
    files = []
    runs = [("real", "", 0, 50.0), ("syn", "base", 1, 20.0), ("syn", "cip", 1, 25.0), ("syn", "ours", 1, 40.0),
            ("syn", "ours", 2, 45.0), ("syn", "ours", 5, 52.0), ("syn", "ours", 10, 56.0), ("realsyn", "ours", 1, 53.0)]
    for setting, variant, scale, top1 in runs:
        for seed in range(3):
            f = tmp_path / f"{setting}_{variant}_{scale}_{seed}.json"
            f.write_text(json.dumps({"dataset": "imagenet1k", "ood_set": "sketch", "setting": setting, "variant": variant,
                                     "scale": scale, "seed": seed, "top1": top1 + seed, "top5": 90.0, "n_images": 9,
                                     "mask_classes": None}))
            files.append(f)
    t4 = table4(files, cfg)
    assert list(t4.row) == ["real only", "synthetic only: base 1x", "synthetic only: cip 1x", "synthetic only: ours 1x",
                            "synthetic only: ours 2x", "synthetic only: ours 5x", "synthetic only: ours 10x",
                            "real + synthetic: ours 1x"]
    t4.to_csv(tmp_path / "t4.csv", index=False)
    t1 = pd.DataFrame(columns=["dataset", "cell", "seeds", "top1_per_seed"])
    c = claims(t1, None, pd.read_csv(tmp_path / "t4.csv"), "ours").set_index("claim")
    row = c.loc["ImageNet-Sketch: synthetic only (ours 10x) beats real only"]
    assert row.delta_top1 == pytest.approx(6.0) and row.seeds == 3 and row.seeds_positive == 3
    assert c.loc["ImageNet-Sketch: real + synthetic beats real only", "delta_top1"] == pytest.approx(3.0)
