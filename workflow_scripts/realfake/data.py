"""Real datasets: the mini world's digits and the on-disk ImageFolder layout.

Every dataset is turned into one index table (``real_index.parquet``) with the columns
``image_id, split, label, class_name, path``; every later stage reads only that index.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from .atomic import atomic_dir, write_parquet
from .datasets import INDEX_COLUMNS, read_dataset
from .images import decode_rgb, load_rgb, to_tensor
from .shards import iter_shard, shard_key, synthetic_id

log = logging.getLogger(__name__)


def digits_arrays(image_size: int, test_size: int, split_seed: int):
    """scikit-learn digits upsampled to ``image_size`` px, stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    idx = np.arange(len(images))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_size, stratify=digits.target, random_state=split_seed
    )
    big = np.stack(
        [np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR)) for im in images]
    )
    return big, digits.target, np.sort(train_idx), np.sort(test_idx)


def write_digits_imagefolder(out_dir: str | Path, image_size: int, test_size: int, split_seed: int) -> None:
    """Write the digits into ``out_dir/{train,test}/<digit>/<id>.png`` (atomic)."""
    images, labels, train_idx, test_idx = digits_arrays(image_size, test_size, split_seed)
    with atomic_dir(out_dir) as tmp:
        for split, ids in (("train", train_idx), ("test", test_idx)):
            for i in ids:
                folder = tmp / split / str(labels[i])
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i]).convert("RGB").save(folder / f"digit{i:04d}.png")


def _keep_per_class(index: pd.DataFrame, train: pd.DataFrame, size_of, rng) -> pd.DataFrame:
    """Seeded per-class sample of ``train`` (``size_of(n)`` of a class's n images, order kept);
    the test split stays whole."""
    keep = [g.iloc[np.sort(rng.choice(len(g), size=size_of(len(g)), replace=False))]
            for _, g in train.groupby("label", sort=True)]
    return pd.concat(keep + [index[index.split == "test"]], ignore_index=True)


TABLE_COLUMNS = {"index": INDEX_COLUMNS, "captions": ["image_id", "caption"],
                 "manifest": ["image_id", "label", "shard", "member"]}


def check_table(path, kind: str, required: list[str]) -> None:
    """A missing file, a file that is not parquet, or a missing ``required`` column is an error
    naming the file (and the columns), not a KeyError deep in a stage."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} table {path} does not exist")
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow's own error types for a file that is not parquet
        raise ValueError(f"{kind} table {path} is not a readable parquet file ({exc})") from None
    missing = [c for c in dict.fromkeys(required) if c not in names]
    if missing:
        raise ValueError(f"{kind} table {path} has no column(s) {missing} (it has {names}); rerun the rule "
                         "that writes it")


def read_table(path, kind: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A table this workflow wrote (``kind``: index, captions, manifest), its columns checked first."""
    check_table(path, kind, TABLE_COLUMNS[kind] + list(columns or []))
    return pd.read_parquet(path, columns=columns)


def member_half(index: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Keep a seeded, class-stratified half of the train split (LiRA members); test stays whole."""
    train = index[index.split == "train"].sort_values("image_id")
    return _keep_per_class(index, train, lambda n: n // 2, np.random.default_rng([seed, 7919]))


def captions_for(path, image_ids, needed: bool) -> list[str]:
    """The caption of each image id from a captions.parquet; with ``needed`` (captions in the
    prompt) an id the file does not hold is an error naming the file, not an empty caption."""
    if not needed:
        return [""] * len(image_ids)
    caps = read_table(path, "captions").set_index("image_id").caption
    missing = [i for i in image_ids if i not in caps.index]
    if missing:
        raise ValueError(f"{path} has no caption for {len(missing)} of {len(image_ids)} images (first: {missing[0]}): "
                         "it was written for another index; rerun the caption rule")
    return [str(caps[i]) for i in image_ids]


def lora_training_rows(train: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """The real training rows a LoRA is fine-tuned on: all of them (``fraction`` 1, the paper's
    reading), or a seeded, class-stratified ``fraction`` of each class (at least one image; the
    official script's ``split_half_data`` is 0.5)."""
    if fraction >= 1:
        return train
    kept = _keep_per_class(train.iloc[:0], train.sort_values("image_id"), lambda n: max(1, round(n * fraction)),
                           np.random.default_rng([seed, 4099]))
    return kept.reset_index(drop=True)


def subsample_per_class(index: pd.DataFrame, per_class: int | None, seed: int) -> pd.DataFrame:
    """Keep ``per_class`` random train images of each class (seeded); test stays whole."""
    if per_class is None:
        return index
    return _keep_per_class(index, index[index.split == "train"], lambda n: min(per_class, n),
                           np.random.default_rng(seed))


def _unreadable(path: str, root: str | None = None) -> str | None:
    """Why an indexed image cannot be used (corrupt, a decompression bomb, a link that leads nowhere,
    in a loop or out of the data root ``root``, a folder or FIFO named like an image), or None."""
    if root is not None:
        real = os.path.realpath(path)
        if os.path.commonpath([real, root]) != root:
            return (f"{path} leads outside the data root {root} (to {real}): links out of the root are not "
                    "followed; set the dataset's root to the folder that holds the images")
    try:
        load_rgb(path)
    except (ValueError, OSError) as exc:
        return str(exc)
    return None


def check_images(index: pd.DataFrame, workers: int = 0, root=None) -> tuple[pd.DataFrame, list[str]]:
    """Drop images that cannot be used (``_unreadable``), returning the kept rows and the paths skipped
    (each logged with its reason). With ``root``, images whose real path (links followed) is not
    under the root's real path are skipped too. With ``workers`` the checks run in that many
    processes (1.33 M decodes at IN-1K)."""
    paths = list(index.path)
    check = partial(_unreadable, root=None if root is None else os.path.realpath(root))
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            errors = list(pool.map(check, paths, chunksize=512))
    else:
        errors = [check(p) for p in tqdm(paths, desc="check images", mininterval=10)]
    bad = [p for p, e in zip(paths, errors) if e is not None]
    for e in errors:
        if e is not None:
            log.warning("skipping %s", e)
    return index[~index.path.isin(bad)].reset_index(drop=True), bad


def check_keys(index: pd.DataFrame) -> None:
    """Every image needs its own image id and its own synthetic-shard key (``shards.shard_key``: '/'
    and '.' made '_'). Two files that share one (``cat0.png`` and ``cat0.jpg``; ``img.1.png`` and
    ``img_1.png``; class folders ``a.b`` and ``a_b``) would overwrite each other's rows downstream,
    so indexing stops naming both files."""
    for what, keys in (("image id", index.image_id),
                       ("synthetic-shard key", index.image_id.map(lambda i: shard_key(synthetic_id(i, 0))))):
        dup = keys.duplicated(keep=False)
        if dup.any():
            first = keys[dup].iloc[0]
            a, b = index.path[keys == first].iloc[:2]
            raise ValueError(f"{a} and {b} get the same {what} ({first!r}): file or class folder names that differ "
                             "only in the image suffix, or in '.' versus '_', cannot both be used; rename or remove one")


def check_classes(index: pd.DataFrame, classes: pd.Series, ds: dict, name: str) -> None:
    """Every class the layout holds (``classes``: class name by label, before images were skipped)
    keeps a training image after skipping and the config's subsampling, and the test split is not
    empty: otherwise the classifier would plan outputs no image trains (errors name the key)."""
    if classes.empty:
        return
    labelled = index[index.label >= 0]
    if not (labelled.split == "test").any():
        raise ValueError(f"the dataset of datasets.{name} has no test image"
                         + (f" (datasets.{name}.test_fraction {ds['test_fraction']})" if ds["kind"] == "eurosat" else ""))
    empty = sorted(set(classes.index) - set(labelled.label[labelled.split == "train"]))
    if empty:
        key = (f"datasets.{name}.member_half (half of a class with one training image keeps none)"
               if ds["member_half"] is not None and empty[0] in set(labelled.label) else
               f"datasets.{name}.test_fraction" if ds["kind"] == "eurosat" and empty[0] in set(labelled.label) else
               f"the images under datasets.{name}.root (skipped images are named above)")
        raise ValueError(f"{len(empty)} class(es) keep no training image (first: {classes[empty[0]]!r}): check {key}")
    if ds["kind"] == "eurosat":
        no_test = sorted(set(classes.index) - set(labelled.label[labelled.split == "test"]))
        if no_test:
            raise ValueError(f"class {classes[no_test[0]]!r} gets no test image from datasets.{name}.test_fraction "
                             f"{ds['test_fraction']}: raise it or add images")


def build_index(ds: dict, root: str | Path, out: str | Path, expected_classes: int | None = None,
                workers: int = 0, name: str = "<name>") -> pd.DataFrame:
    """Read a dataset layout into the index table; ``expected_classes`` (from config) is checked.
    ``name`` is the dataset's config name (for error messages)."""
    kind = ds["kind"]  # a validated dataset entry: every key has its schema default
    kw = {"classnames": ds["classnames"]}
    if kind == "imagenet":
        kw["classlist"] = ds["classlist"]
    if kind == "celeba":
        kw["attributes"] = ds.get("attributes")
    if kind == "eurosat":
        kw.update(test_fraction=ds["test_fraction"], seed=ds["split_seed"])
    index = read_dataset("imagefolder" if kind == "digits" else kind, root, **kw)
    labelled = index[index.label >= 0]  # every class the layout holds, before images are skipped
    classes = labelled.drop_duplicates("label").set_index("label").class_name.sort_index()
    index, bad = check_images(index, workers, root=root)
    log.info("indexed %d images under %s; %d images skipped (each named above)", len(index), root, len(bad))
    check_keys(index)
    index = subsample_per_class(index, ds["train_per_class"], ds["split_seed"])
    if ds["member_half"] is not None:
        index = member_half(index, ds["member_half"])
    check_classes(index, classes, ds, name)
    names = ds["classnames"] or {}
    index["class_name"] = [names.get(c, c) for c in index.class_name]
    found = index.label[index.label >= 0].nunique()
    if expected_classes is not None and (index.label >= 0).any() and found != expected_classes:
        raise ValueError(f"{root} holds {found} classes but the config plans {expected_classes} (config key "
                         "num_classes, or the kind's class count): generation shards would not cover the data")
    write_parquet(index, out)
    return index


def in_shards(df: pd.DataFrame) -> pd.Series:
    """Rows that live in a tar shard (manifest rows) rather than in an image file (index rows)."""
    return df["shard"].notna() if "shard" in df else pd.Series(False, index=df.index)


def frame_images(df: pd.DataFrame, size: int | None = None) -> list[Image.Image]:
    """RGB images for index rows (``path``) and manifest rows (``shard`` + ``member``), in row order.
    Each shard is read once, sequentially (``frame_image_chunks``)."""
    out: list = [None] * len(df)
    for pos, images in frame_image_chunks(df, size):
        for p, im in zip(pos, images):
            out[p] = im
    return out


def frame_image_chunks(df: pd.DataFrame, size: int | None = None, chunk: int = 1024):
    """``(positions, images)`` for every row of the frame, ``chunk`` images at a time, reading each
    shard once, sequentially (a shard scan per chunk would re-read a 12.8k-image shard ~13 times).
    Index rows come first in frame order, then each shard's rows in stored order; ``positions``
    are the rows' positions in ``df``."""
    has_shard = in_shards(df).to_numpy()
    files = np.flatnonzero(~has_shard)
    for i in range(0, len(files), chunk):
        pos = files[i : i + chunk]
        yield pos, [load_rgb(df["path"].iat[p], size) for p in pos]
    if not has_shard.any():
        return
    pos_buf, im_buf = [], []
    shard_col, member_col = df["shard"].to_numpy(), df["member"].to_numpy()
    for shard in pd.unique(shard_col[has_shard]):
        rows = np.flatnonzero(has_shard & (shard_col == shard))
        want = {member_col[p].rsplit(".", 1)[0]: p for p in rows}
        for key, data, _ in iter_shard(shard):
            p = want.pop(key, None)
            if p is None:
                continue
            pos_buf.append(p)
            im_buf.append(decode_rgb(data, size, where=f"member {key} of shard {shard}"))
            if len(im_buf) == chunk:
                yield np.array(pos_buf), im_buf
                pos_buf, im_buf = [], []
        if want:
            raise ValueError(f"shard {shard} lacks {len(want)} image(s) the manifest lists, e.g. {sorted(want)[0]}")
    if im_buf:
        yield np.array(pos_buf), im_buf


def frame_tensor(df: pd.DataFrame, size: int):
    """frame_images stacked into a float tensor in [-1, 1], shape (N, 3, size, size)."""
    return to_tensor(frame_images(df, size))
