"""OOD evaluation (paper Tab. 4) on tiny fake ImageNet-V2/-Sketch/-R/-A in their real layouts."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import run_cli
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
    from realfake.classifier import build_model, load_classifier, predict_logits

    root, classes = fake_ood
    torch.manual_seed(0)
    model = build_model("smallcnn", 3)
    torch.save({"state_dict": model.state_dict(), "arch": "smallcnn", "num_classes": 3}, tmp_path / "model.pt")
    cfg = load_config(overrides={
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
