"""Readers for the paper's on-disk dataset layouts (and any ImageFolder) -> the common index table.

Every reader returns a DataFrame with ``image_id, split, label, class_name, path`` (CelebA adds
one 0/1 column per attribute). Errors name the file or folder and what was expected.
"""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .classlists import imagenet_classnames, read_classlist
from .errors import ConfigError
from .images import IMAGE_SUFFIXES

INDEX_COLUMNS = ["image_id", "split", "label", "class_name", "path"]


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    return path


def scan_imagefolder(root: str | Path, classnames: dict | None = None) -> pd.DataFrame:
    """Index ``root/{train,test}/<class>/<image>``; errors name the path and what was expected."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"data root not found: {root} (expected a folder with train/ and test/ class folders)")
    rows = []
    train_classes = None
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise ConfigError(f"data root {root} has no {split}/ folder (expected {root}/{split}/<class>/<image>)")
        classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        if not classes:
            raise ConfigError(f"{split_dir} holds no class folders")
        if train_classes is None:
            train_classes = classes
        elif classes != train_classes:
            missing = sorted(set(train_classes) ^ set(classes))
            raise ConfigError(f"class folders of {split_dir} differ from train/: {missing}")
        for label, cls in enumerate(classes):
            files = sorted(p for p in (split_dir / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ConfigError(f"class folder {split_dir / cls} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for f in files:
                rows.append((f"{split}/{cls}/{f.stem}", split, label, cls, str(f)))
    if classnames is not None:
        unknown = sorted(set(classnames) - set(train_classes))
        if unknown:
            raise ConfigError(f"config classnames name classes without a folder under {root / 'train'}: {unknown}")
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


@functools.lru_cache(maxsize=None)
def count_imagefolder(root: str) -> tuple[int, ...] | None:
    """Image files (by suffix; nothing opened) in each class folder of ``root/train``, or None when
    ``root/train`` is not readable here (planning on a machine without the data). For planning
    only: the index job counts what decodes."""
    train = Path(root) / "train"
    try:
        return tuple(sum(1 for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                     for d in sorted(train.iterdir()) if d.is_dir())
    except OSError:
        return None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def imagenet(root, classlist: str | None = None) -> pd.DataFrame:
    """ImageNet train/<wnid>/*.JPEG and val as class folders or flat + LOC_val_solution.csv."""
    root = _need(Path(root), "ImageNet root")
    train_dir = _need(root / "train", "ImageNet train/ folder")
    wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if classlist:
        wanted = read_classlist(classlist)
        missing = sorted(set(wanted) - set(wnids))
        if missing:
            raise ConfigError(f"class list {classlist} names {len(missing)} classes without a folder under "
                              f"{train_dir}: {missing[:5]}")
        wnids = sorted(wanted)
    label = {w: i for i, w in enumerate(wnids)}
    names = imagenet_classnames(wnids)
    rows = [(f"train/{w}/{p.stem}", "train", label[w], names[w], str(p)) for w in wnids for p in _images(train_dir / w)]
    val = _need(root / "val", "ImageNet val/ folder")
    solution = root / "LOC_val_solution.csv"
    if any(p.is_dir() for p in val.iterdir()):
        for w in wnids:
            rows += [(f"test/{w}/{p.stem}", "test", label[w], names[w], str(p))
                     for p in _images(_need(val / w, "val class folder"))]
    elif solution.is_file():
        with open(solution) as fh:
            for rec in csv.DictReader(fh):
                w = rec["PredictionString"].split()[0]
                if w in label:
                    p = val / f"{rec['ImageId']}.JPEG"
                    rows.append((f"test/{w}/{rec['ImageId']}", "test", label[w], names[w], str(p)))
    else:
        raise ConfigError(f"{val} holds neither class folders nor a sibling LOC_val_solution.csv")
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def cub(root) -> pd.DataFrame:
    """CUB-200-2011: images.txt, image_class_labels.txt, train_test_split.txt, classes.txt."""
    root = _need(Path(root), "CUB root")

    def table(name):
        path = _need(root / name, "CUB annotation file")
        return dict(ln.split(" ", 1) for ln in path.read_text().splitlines() if ln.strip())

    images, labels, split, classes = (table(n) for n in ("images.txt", "image_class_labels.txt",
                                                         "train_test_split.txt", "classes.txt"))
    rows = []
    for iid, rel in images.items():
        lab = int(labels[iid]) - 1
        name = classes[labels[iid]].split(".", 1)[-1].replace("_", " ")
        sp = "train" if split[iid].strip() == "1" else "test"
        rows.append((f"{sp}/{iid}", sp, lab, name, str(root / "images" / rel)))
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def cars(root) -> pd.DataFrame:
    """Stanford Cars: devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat."""
    from scipy.io import loadmat

    root = _need(Path(root), "Stanford Cars root")
    meta = loadmat(_need(root / "devkit" / "cars_meta.mat", "Cars class names"))
    names = [str(n[0]) for n in meta["class_names"][0]]
    rows = []
    for sp, ann, folder in (("train", root / "devkit" / "cars_train_annos.mat", "cars_train"),
                            ("test", root / "cars_test_annos_withlabels.mat", "cars_test")):
        for rec in loadmat(_need(ann, "Cars annotation file"))["annotations"][0]:
            fname, lab = str(rec["fname"][0]), int(rec["class"][0][0]) - 1
            rows.append((f"{sp}/{Path(fname).stem}", sp, lab, names[lab], str(root / folder / fname)))
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def pets(root) -> pd.DataFrame:
    """Oxford-IIIT Pets: annotations/{trainval,test}.txt ('Name class species breed'), images/<Name>.jpg."""
    root = _need(Path(root), "Pets root")
    rows = []
    for sp, fname in (("train", "trainval.txt"), ("test", "test.txt")):
        for ln in _need(root / "annotations" / fname, "Pets split file").read_text().splitlines():
            if not ln.strip() or ln.startswith("#"):
                continue
            name, cls = ln.split()[:2]
            breed = name.rsplit("_", 1)[0].replace("_", " ")
            rows.append((f"{sp}/{name}", sp, int(cls) - 1, breed, str(root / "images" / f"{name}.jpg")))
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def spaced_words(name: str) -> str:
    """A CamelCase folder name as prompt words: 'AnnualCrop' -> 'Annual Crop', 'SeaLake' -> 'Sea Lake'."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)


def eurosat(root, test_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """EuroSAT RGB: <Class>/<Class>_N.jpg (10 folders), split per class with a seeded shuffle."""
    root = _need(Path(root), "EuroSAT root")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ConfigError(f"{root} holds no class folders (expected EuroSAT RGB: <Class>/<Class>_N.jpg)")
    rng = np.random.default_rng(seed)
    rows = []
    for lab, cls in enumerate(classes):
        files = _images(root / cls)
        order = rng.permutation(len(files))
        n_test = int(round(len(files) * test_fraction))
        for rank, i in enumerate(order):
            sp = "test" if rank < n_test else "train"
            rows.append((f"{sp}/{cls}/{files[i].stem}", sp, lab, spaced_words(cls), str(files[i])))
    return pd.DataFrame(rows, columns=INDEX_COLUMNS).sort_values("image_id", ignore_index=True)


def attribute_class_name(attributes: list[str], label: int) -> str:
    """Prompt name of an attribute-combination class: bit j of ``label`` is attribute j
    ([Smiling, Heavy_Makeup], 0b01 -> 'smiling, not heavy makeup')."""
    words = [a.replace("_", " ").lower() for a in attributes]
    return ", ".join(w if label >> j & 1 else f"not {w}" for j, w in enumerate(words))


def celeba(root, attributes: list[str] | None = None) -> pd.DataFrame:
    """CelebA: list_attr_celeba.txt (+-1 attributes), list_eval_partition.txt (0 train, 1 val, 2 test).

    Every attribute becomes a 0/1 column; with ``attributes`` the label is the combination class
    (bit j = attribute j present) and every combination must occur among the training images.
    """
    root = _need(Path(root), "CelebA root")
    attr_file = _need(root / "list_attr_celeba.txt", "CelebA attribute file")
    lines = attr_file.read_text().splitlines()
    names = lines[1].split()
    unknown = [a for a in attributes or [] if a not in names]
    if unknown:
        raise ConfigError(f"{attr_file} has no attribute {unknown[0]!r} (config key datasets.<name>.attributes; "
                          f"known: {', '.join(names)})")
    part_file = _need(root / "list_eval_partition.txt", "CelebA partition file")
    part = dict(ln.split() for ln in part_file.read_text().splitlines() if ln.strip())
    rows = []
    for ln in lines[2:]:
        if not ln.strip():
            continue
        fields = ln.split()
        name, values = fields[0], [int(v) > 0 for v in fields[1:]]
        if len(values) != len(names):
            raise ConfigError(f"{attr_file}: {name} has {len(values)} attributes, header has {len(names)}")
        if name not in part:
            raise ConfigError(f"{part_file} has no line for {name}")
        sp = {"0": "train", "1": "val", "2": "test"}[part[name]]
        flags = dict(zip(names, map(int, values)))
        label = sum(flags[a] << j for j, a in enumerate(attributes)) if attributes else -1
        rows.append({"image_id": f"{sp}/{Path(name).stem}", "split": sp, "label": label,
                     "class_name": attribute_class_name(attributes, label) if attributes else "",
                     "path": str(root / "img_align_celeba" / name), **flags})
    index = pd.DataFrame(rows)
    if attributes:
        missing = sorted(set(range(2 ** len(attributes))) - set(index.label[index.split == "train"]))
        if missing:
            raise ConfigError(f"{attr_file}: no training image has the attribute combination "
                              f"'{attribute_class_name(attributes, missing[0])}' ({len(missing)} of "
                              f"{2 ** len(attributes)} combinations empty); choose fewer attributes")
    return index


# ------------------------------------------------------------------ OOD test sets
def ood(kind: str, root, wnids_1k: list[str]) -> tuple[pd.DataFrame, list[int] | None]:
    """ImageNet-V2 / -Sketch / -R / -A as test indices labelled in the 1000-class space.

    Returns (index, mask): mask lists the 1K logit indices to keep (200 for R and A; None = all).
    """
    root = _need(Path(root), f"ImageNet-{kind} root")
    pos = {w: i for i, w in enumerate(wnids_1k)}
    rows = []
    if kind == "v2":  # folders named by class index 0..999
        for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: int(p.name)):
            lab = int(d.name)
            rows += [(f"test/{lab}/{p.stem}", "test", lab, wnids_1k[lab], str(p)) for p in _images(d)]
        return pd.DataFrame(rows, columns=INDEX_COLUMNS), None
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [d.name for d in folders if d.name not in pos]
    if unknown:
        raise ConfigError(f"ImageNet-{kind} folders not in the 1K class list: {unknown[:5]}")
    for d in folders:
        rows += [(f"test/{d.name}/{p.stem}", "test", pos[d.name], d.name, str(p)) for p in _images(d)]
    mask = sorted(pos[d.name] for d in folders) if kind in ("r", "a") else None
    if kind in ("r", "a") and len(mask) != 200:
        raise ConfigError(f"ImageNet-{kind} at {root} has {len(mask)} class folders, expected 200")
    return pd.DataFrame(rows, columns=INDEX_COLUMNS), mask


READERS = {"imagefolder": None, "imagenet": imagenet, "cub": cub, "cars": cars, "pets": pets,
           "eurosat": eurosat, "celeba": celeba}


def read_dataset(kind: str, root, **kw) -> pd.DataFrame:
    if kind == "imagefolder":
        return scan_imagefolder(root, kw.get("classnames"))
    if kind not in READERS:
        raise ConfigError(f"unknown dataset kind {kind!r} (known: {sorted(READERS)})")
    return READERS[kind](root, **{k: v for k, v in kw.items() if k != "classnames"})
