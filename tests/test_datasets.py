"""Paper dataset readers on tiny fake datasets written in each real on-disk layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from realfake.config import ConfigError
from realfake.classlists import read_classlist
from realfake.datasets import cars, celeba, cub, eurosat, imagenet, ood, pets


def img(path, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(path)


def test_shipped_classlists_have_the_paper_sizes():
    in10, in100 = read_classlist("imagenet10"), read_classlist("imagenet100")
    assert len(in10) == len(set(in10)) == 10 and len(in100) == len(set(in100)) == 100
    assert all(w.startswith("n") and len(w) == 9 for w in in10 + in100)


def test_imagenet_class_folders_and_solution_csv(tmp_path):
    wnids = ["n01440764", "n02102040", "n09999999"]
    for w in wnids:
        for i in range(2):
            img(tmp_path / "a" / "train" / w / f"{w}_{i}.JPEG")
            img(tmp_path / "a" / "val" / w / f"ILSVRC2012_val_{w}{i}.JPEG")
    idx = imagenet(tmp_path / "a")
    assert len(idx) == 12 and idx.label.max() == 2
    # flat val + LOC_val_solution.csv
    root = tmp_path / "b"
    for w in wnids:
        img(root / "train" / w / "x.JPEG")
    img(root / "val" / "ILSVRC2012_val_00000001.JPEG")
    img(root / "val" / "ILSVRC2012_val_00000002.JPEG")
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n02102040 1 2 3 4\n"
        "ILSVRC2012_val_00000002,n01440764 5 6 7 8 n01440764 1 1 1 1\n")
    idx = imagenet(root)
    test = idx[idx.split == "test"].set_index("class_name")
    assert test.loc["English Springer Spaniel", "label"] == 1 and test.loc["tench", "label"] == 0


def test_imagenet_classlist_subset_and_mismatch(tmp_path):
    for w in read_classlist("imagenet10") + ["n09999999"]:
        img(tmp_path / "train" / w / "a.JPEG")
        img(tmp_path / "val" / w / "b.JPEG")
    idx = imagenet(tmp_path, classlist="imagenet10")
    assert idx.label.nunique() == 10 and "n09999999" not in set(idx.class_name)
    assert "tench" in set(idx.class_name) and "parachute" in set(idx.class_name)
    with pytest.raises(ConfigError, match="class list imagenet100 names 100 classes without a folder"):
        imagenet(tmp_path, classlist="imagenet100")


def test_imagenet_wrong_layout(tmp_path):
    img(tmp_path / "train" / "n01440764" / "a.JPEG")
    (tmp_path / "val").mkdir()
    with pytest.raises(ConfigError, match="neither class folders nor a sibling LOC_val_solution.csv"):
        imagenet(tmp_path)


def test_cub_layout(tmp_path):
    (tmp_path / "images.txt").write_text("1 001.Black_footed_Albatross/a.jpg\n2 002.Laysan_Albatross/b.jpg\n")
    (tmp_path / "image_class_labels.txt").write_text("1 1\n2 2\n")
    (tmp_path / "train_test_split.txt").write_text("1 1\n2 0\n")
    (tmp_path / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    idx = cub(tmp_path)
    assert list(idx.split) == ["train", "test"] and list(idx.label) == [0, 1]
    assert idx.class_name[0] == "Black footed Albatross"
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(ConfigError, match="CUB annotation file not found: .*classes.txt"):
        cub(tmp_path)


def test_cars_mat_layout(tmp_path):
    from scipy.io import savemat

    dev = tmp_path / "devkit"
    dev.mkdir()
    names = np.empty((1, 2), dtype=object)
    names[0, 0], names[0, 1] = "AM General Hummer SUV 2000", "Acura RL Sedan 2012"
    savemat(dev / "cars_meta.mat", {"class_names": names})

    def annos(rows):
        a = np.empty((1, len(rows)), dtype=[("fname", "O"), ("class", "O")])
        for i, (f, c) in enumerate(rows):
            a[0, i] = (f, np.array([[c]], dtype=np.uint8))
        return {"annotations": a}

    savemat(dev / "cars_train_annos.mat", annos([("00001.jpg", 1), ("00002.jpg", 2)]))
    savemat(tmp_path / "cars_test_annos_withlabels.mat", annos([("00001.jpg", 2)]))
    idx = cars(tmp_path)
    assert list(idx.split) == ["train", "train", "test"] and list(idx.label) == [0, 1, 1]
    assert idx.class_name[2] == "Acura RL Sedan 2012"
    assert idx.path[2].endswith("cars_test/00001.jpg")


def test_pets_layout(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "trainval.txt").write_text("Abyssinian_100 1 1 1\nyorkshire_terrier_1 37 2 25\n")
    (ann / "test.txt").write_text("#Image CLASS-ID SPECIES BREED ID\nAbyssinian_201 1 1 1\n")
    idx = pets(tmp_path)
    assert list(idx.label) == [0, 36, 0] and idx.class_name[1] == "yorkshire terrier"


def test_eurosat_seeded_split(tmp_path):
    for cls in ("AnnualCrop", "Forest"):
        for i in range(10):
            img(tmp_path / cls / f"{cls}_{i}.jpg")
    a, b = eurosat(tmp_path, seed=1), eurosat(tmp_path, seed=1)
    assert a.equals(b) and (a.split == "test").sum() == 4
    assert not a.equals(eurosat(tmp_path, seed=2))
    assert set(a.class_name) == {"Annual Crop", "Forest"}  # prompt words, not the CamelCase folder name


def test_celeba_attributes_and_partition(tmp_path):
    (tmp_path / "list_attr_celeba.txt").write_text(
        "2\n5_o_Clock_Shadow Smiling\n000001.jpg -1  1\n000002.jpg  1 -1\n")
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    idx = celeba(tmp_path)
    assert list(idx.split) == ["train", "test"]
    assert list(idx.Smiling) == [1, 0] and list(idx["5_o_Clock_Shadow"]) == [0, 1]


def _celeba_files(root, rows):
    (root / "list_attr_celeba.txt").write_text(
        f"{len(rows)}\nSmiling Heavy_Makeup Young\n" + "".join(f"{n} {a} {b} {c}\n" for n, a, b, c, _ in rows))
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, *_, p in rows))


def test_celeba_attribute_combinations_are_the_classes(tmp_path):
    rows = [("1.jpg", -1, -1, 1, 0), ("2.jpg", 1, -1, 1, 0), ("3.jpg", -1, 1, 1, 0), ("4.jpg", 1, 1, -1, 0),
            ("5.jpg", 1, 1, 1, 2), ("6.jpg", 1, -1, 1, 1)]
    _celeba_files(tmp_path, rows)
    idx = celeba(tmp_path, attributes=["Smiling", "Heavy_Makeup"])
    assert list(idx.label) == [0, 1, 2, 3, 3, 1]  # bit 0 Smiling, bit 1 Heavy_Makeup
    assert list(idx.split) == ["train"] * 4 + ["test", "val"]
    assert idx.class_name[0] == "not smiling, not heavy makeup" and idx.class_name[3] == "smiling, heavy makeup"
    assert list(idx.Young) == [1, 1, 1, 0, 1, 1]
    with pytest.raises(ConfigError, match=r"list_attr_celeba.txt has no attribute 'Bald'.*known: Smiling"):
        celeba(tmp_path, attributes=["Smiling", "Bald"])
    with pytest.raises(ConfigError, match="no training image has the attribute combination 'not smiling, not young'"):
        celeba(tmp_path, attributes=["Smiling", "Young"])  # every training image is smiling or young
def test_ood_sets_and_200_class_masks(tmp_path):
    wnids = [f"n{i:08d}" for i in range(1000)]
    for i in range(0, 1000, 5):  # 200 classes
        img(tmp_path / "r" / wnids[i] / "a.jpg")
    idx, mask = ood("r", tmp_path / "r", wnids)
    assert len(mask) == 200 and len(idx) == 200 and mask[1] == 5
    img(tmp_path / "v2" / "0" / "a.jpeg")
    img(tmp_path / "v2" / "999" / "b.jpeg")
    idx, mask = ood("v2", tmp_path / "v2", wnids)
    assert mask is None and sorted(idx.label) == [0, 999]
    img(tmp_path / "a" / wnids[3] / "x.jpg")
    with pytest.raises(ConfigError, match="has 1 class folders, expected 200"):
        ood("a", tmp_path / "a", wnids)


def test_masked_argmax_ignores_other_classes():
    logits = torch.zeros(2, 1000)
    logits[0, 7] = 9.0   # outside the mask
    logits[0, 10] = 1.0
    logits[1, 15] = 2.0
    from realfake.ood import masked_topk

    labels = torch.tensor([10, 15])
    assert masked_topk(logits, labels, [10, 15])["top1"] == 100.0  # 7 is masked out
    assert masked_topk(logits, labels, None)["top1"] == 50.0  # unmasked, row 0 predicts 7


def test_imagenet_reference_lists():
    from realfake.classlists import imagenet_1k_wnids, ood_classlist

    wnids = imagenet_1k_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids)
    for kind in ("r", "a"):
        sub = ood_classlist(kind)
        assert len(sub) == len(set(sub)) == 200 and set(sub) <= set(wnids)
    assert set(read_classlist("imagenet100")) <= set(wnids) and set(read_classlist("imagenet10")) <= set(wnids)
