"""Dataset readers: the ImageFolder layout, bad layouts, corrupt and odd-mode images."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realfake.config import ConfigError
from realfake.data import build_index, subsample_per_class
from realfake.datasets import scan_imagefolder
from realfake.images import load_rgb


def make_folder(root, classes=("cat", "dog"), n=3, size=16):
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(d / f"{c}{i}.png")
    return root


def folder_entry() -> dict:
    """A validated imagefolder dataset entry (every key at its schema default), as a stage gets it."""
    from realfake.config import validate

    cfg = validate({"datasets": {"d": {"kind": "imagefolder", "root": "/x", "num_classes": 3}}, "mini_substitutes": True})
    return cfg["datasets"]["d"]


def test_scan_imagefolder_indexes_every_image(tmp_path):
    idx = scan_imagefolder(make_folder(tmp_path / "ds"))
    assert len(idx) == 12
    assert set(idx.class_name) == {"cat", "dog"} and set(idx.label) == {0, 1}
    assert (idx.groupby("split").size() == 6).all()


def test_missing_root_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"data root not found: {tmp_path / 'nope'}"):
        scan_imagefolder(tmp_path / "nope")


def test_wrong_layout_says_what_was_expected(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(ConfigError, match="has no train/ folder"):
        scan_imagefolder(tmp_path / "flat")


def test_empty_class_folder_is_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    for f in (root / "train" / "dog").iterdir():
        f.unlink()
    with pytest.raises(ConfigError, match="train/dog holds no images"):
        scan_imagefolder(root)


def test_class_mismatch_between_splits(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "test" / "bird").mkdir()
    Image.new("RGB", (4, 4)).save(root / "test" / "bird" / "b.png")
    with pytest.raises(ConfigError, match="differ from train/: \\['bird'\\]"):
        scan_imagefolder(root)


def test_classnames_must_match_folders(tmp_path):
    with pytest.raises(ConfigError, match="without a folder .*\\['horse'\\]"):
        scan_imagefolder(make_folder(tmp_path / "ds"), {"horse": "a horse"})


def test_corrupt_image_is_skipped_and_counted(tmp_path, caplog):
    root = make_folder(tmp_path / "ds")
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    ds = folder_entry()
    with caplog.at_level("INFO"):
        idx = build_index(ds, root, tmp_path / "index.parquet")
    assert len(idx) == 12 and not idx.path.str.contains("broken").any()
    assert "1 images skipped" in caplog.text and "broken.jpg" in caplog.text


def test_bombs_and_symlink_loops_are_skipped_and_counted(tmp_path, caplog, monkeypatch):
    import os

    root = make_folder(tmp_path / "ds", size=16)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "train" / "cat" / "bomb.png")
    os.symlink("loop.png", root / "train" / "dog" / "loop.png")  # a link to itself
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is over twice this: Pillow's bomb error
    ds = folder_entry()
    with caplog.at_level("INFO"):
        idx = build_index(ds, root, tmp_path / "index.parquet")
    names = {Path(p).name for p in idx.path}
    assert len(idx) == 12 and not names & {"bomb.png", "loop.png"}
    assert "2 images skipped" in caplog.text and "decompression bomb" in caplog.text
    assert "loop.png (a symbolic link that leads nowhere or in a loop)" in caplog.text


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 0..65535
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert (rgb[..., 0] == np.arange(256).reshape(16, 16)).all()  # Pillow's convert: 255 from value 255 on
    assert (rgb[..., 0] == rgb[..., 2]).all()
    Image.fromarray(np.zeros((4, 4), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="f.tif .*floating-point"):
        load_rgb(tmp_path / "f.tif")


def test_grayscale_and_cmyk_are_converted(tmp_path):
    Image.new("L", (8, 8), 100).save(tmp_path / "g.png")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert load_rgb(tmp_path / "g.png").mode == "RGB"
    assert load_rgb(tmp_path / "c.jpg", size=16).size == (16, 16)
    # a CMYK JPEG (Adobe's inverted storage, as Photoshop and Pillow write it) keeps its colours
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "red.jpg", quality=95)
    r, g, b = load_rgb(tmp_path / "red.jpg").getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15


def test_exif_rotated_photo_is_upright(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view) is
    turned the way every viewer shows it: the stored 4x2 image becomes 2x4, its red corner top right."""
    from realfake.images import decode_rgb

    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 10, 10))  # top-left corner as stored
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    for im in (load_rgb(tmp_path / "phone.jpg"), decode_rgb((tmp_path / "phone.jpg").read_bytes())):
        assert im.size == (20, 40)
        assert im.getpixel((15, 5))[0] > 200 and im.getpixel((5, 5))[0] < 50  # now top right
    stored.save(tmp_path / "plain.png")  # no EXIF: pixels untouched
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "plain.png")), np.asarray(stored))


def test_links_out_of_the_root_folders_and_fifos_named_like_images_are_skipped(tmp_path, caplog):
    """A class folder linked from outside the data root is not followed (its images are skipped, each
    named); a link inside the root works; a folder and a FIFO named like images are skipped, not
    opened (a FIFO would block the job)."""
    import os

    root = make_folder(tmp_path / "ds", n=3)
    outside = make_folder(tmp_path / "elsewhere", classes=("bird",), n=2)
    os.symlink(outside / "train" / "bird", root / "train" / "bird")
    os.symlink(outside / "test" / "bird", root / "test" / "bird")
    os.symlink(root / "train" / "cat" / "cat0.png", root / "train" / "cat" / "alias.png")  # inside: kept
    (root / "train" / "dog" / "album.jpg").mkdir()
    os.mkfifo(root / "train" / "dog" / "pipe.jpg")
    ds = folder_entry()
    with caplog.at_level("INFO"), pytest.raises(ValueError, match="keep no training image .*'bird'.*skipped images are named above"):
        build_index(ds, root, tmp_path / "index.parquet", name="d")
    assert "bird0.png leads outside the data root" in caplog.text and "links out of the root are not followed" in caplog.text
    assert "album.jpg (a folder, not an image file)" in caplog.text
    assert "pipe.jpg (a named pipe (FIFO), not an image file)" in caplog.text
    assert "6 images skipped" in caplog.text  # 4 bird images, the folder and the FIFO
    for split in ("train", "test"):
        os.unlink(root / split / "bird")
    idx = build_index(ds, root, tmp_path / "index.parquet", name="d")
    assert "alias.png" in {Path(p).name for p in idx.path} and len(idx) == 13


@pytest.mark.parametrize("names, shared", [
    (("cat0.png", "cat0.jpg"), "image id"),  # the same stem
    (("img.1.png", "img_1.png"), "synthetic-shard key"),  # '.' and '_' the same in a tar member name
])
def test_file_names_that_collide_stop_indexing_naming_both(tmp_path, names, shared):
    root = make_folder(tmp_path / "ds")
    for n in names:
        Image.new("RGB", (16, 16)).save(root / "train" / "cat" / n)
    with pytest.raises(ValueError, match=f"get the same {shared}") as err:
        build_index(folder_entry(), root, tmp_path / "index.parquet", name="d")
    assert all(n in str(err.value) for n in names)
    assert not (tmp_path / "index.parquet").exists()


def test_class_folders_that_collide_stop_indexing(tmp_path):
    root = make_folder(tmp_path / "ds", classes=("a.b", "a_b"))
    for d in ("a.b", "a_b"):  # the same file names in both
        for split in ("train", "test"):
            for f in (root / split / d).iterdir():
                f.rename(f.with_name("x" + f.name[-5:]))
    with pytest.raises(ValueError, match="a.b/x0.png and .*a_b/x0.png get the same synthetic-shard key"):
        build_index(folder_entry(), root, tmp_path / "index.parquet", name="d")


def test_member_half_of_a_one_image_class_is_an_error_naming_the_key(tmp_path):
    root = make_folder(tmp_path / "ds", n=3)
    for f in sorted((root / "train" / "dog").iterdir())[1:]:
        f.unlink()
    ds = dict(folder_entry(), member_half=5)
    with pytest.raises(ValueError, match=r"keep no training image \(first: 'dog'\): check datasets.d.member_half"):
        build_index(ds, root, tmp_path / "index.parquet", name="d")
    assert len(build_index(dict(ds, member_half=None), root, tmp_path / "index.parquet", name="d")) == 10


def test_eurosat_test_fraction_that_leaves_a_class_without_test_images(tmp_path):
    from realfake.config import validate

    for cls, n in (("Forest", 4), ("River", 1)):
        (tmp_path / "eu" / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (i, 0, 0)).save(tmp_path / "eu" / cls / f"{cls}_{i}.jpg")
    ds = validate({"datasets": {"e": {"kind": "eurosat", "root": str(tmp_path / "eu"), "num_classes": 2,
                                      "test_fraction": 0.3}}, "mini_substitutes": True})["datasets"]["e"]
    with pytest.raises(ValueError, match="'River' gets no test image from datasets.e.test_fraction 0.3"):
        build_index(ds, tmp_path / "eu", tmp_path / "index.parquet", name="e")


def test_subsample_is_seeded_and_per_class(tmp_path):
    idx = scan_imagefolder(make_folder(tmp_path / "ds", n=5))
    a = subsample_per_class(idx, 2, seed=3)
    b = subsample_per_class(idx, 2, seed=3)
    assert a.equals(b)
    assert (a[a.split == "train"].groupby("label").size() == 2).all()
    assert (a.split == "test").sum() == 10


def test_timm_resnet50_classifier_builds_and_steps():
    import torch

    from realfake.classifier_models import build_model

    model = build_model("resnet50", num_classes=7)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert model.fc.weight.grad is not None


def test_classifier_loads_local_pretrained_weights(tmp_path):
    import timm
    import torch

    from realfake.classifier_models import build_model

    src = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    torch.save(src.state_dict(), tmp_path / "in1k.pth")
    model = build_model("resnet18", num_classes=5, weights=str(tmp_path / "in1k.pth"))
    assert torch.equal(model.conv1.weight, src.conv1.weight)
    assert model.fc.out_features == 5
    with pytest.raises(ConfigError, match="pretrained classifier weights not found at .*missing.pth"):
        build_model("resnet18", 5, weights=str(tmp_path / "missing.pth"))


def test_class_count_mismatch_with_config_names_root_and_writes_nothing(tmp_path):
    root = make_folder(tmp_path / "ds")  # 2 classes
    ds = folder_entry()
    with pytest.raises(ValueError, match=f"{root} holds 2 classes but the config plans 3"):
        build_index(ds, root, tmp_path / "index.parquet", expected_classes=3)
    assert not (tmp_path / "index.parquet").exists()
    assert len(build_index(ds, root, tmp_path / "index.parquet", expected_classes=2)) == 12


def test_frame_image_chunks_read_each_shard_once_in_any_row_order(tmp_path, monkeypatch):
    """Rows of two shards and image files, shuffled: every row's image comes back once, at its
    position, and each shard is scanned once whatever the chunk size."""
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    import realfake.data as data
    from realfake.shards import ShardWriter

    def png(v):
        buf = io.BytesIO()
        Image.fromarray(np.full((4, 4, 3), v, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    rows = []
    for s in range(2):
        keys = [f"s{s}_{i}" for i in range(5)]
        w = ShardWriter(tmp_path / f"{s}.tar", [keys], "f")
        w.write_batch((k, png(10 * s + i), 0) for i, k in enumerate(keys))
        w.close()
        rows += [{"shard": str(tmp_path / f"{s}.tar"), "member": f"{k}.png", "value": 10 * s + i}
                 for i, k in enumerate(keys)]
    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), 100 + i, np.uint8)).save(tmp_path / f"f{i}.png")
        rows.append({"path": str(tmp_path / f"f{i}.png"), "value": 100 + i})
    df = pd.DataFrame(rows).sample(frac=1, random_state=0).reset_index(drop=True)
    scans = []
    real_iter = data.iter_shard
    monkeypatch.setattr(data, "iter_shard", lambda p: (scans.append(p), real_iter(p))[1])
    seen = {}
    for pos, images in data.frame_image_chunks(df, chunk=3):
        assert len(pos) == len(images) <= 3
        seen.update({int(p): int(np.asarray(im)[0, 0, 0]) for p, im in zip(pos, images)})
    assert seen == dict(enumerate(df.value))
    assert sorted(scans) == sorted({r["shard"] for r in rows if "shard" in r})


def test_tables_missing_a_column_name_the_file_and_column(tmp_path):
    import pandas as pd

    from realfake.data import read_table
    pd.DataFrame({"image_id": ["a"], "split": ["train"], "label": [0], "path": ["a.png"]}).to_parquet(tmp_path / "i.parquet")
    with pytest.raises(ValueError, match=r"index table .*i.parquet has no column\(s\) \['class_name'\]"):
        read_table(tmp_path / "i.parquet", "index")
    (tmp_path / "c.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match=r"captions table .*c.parquet is not a readable parquet file"):
        read_table(tmp_path / "c.parquet", "captions")
    with pytest.raises(FileNotFoundError, match="manifest table .*none.parquet does not exist"):
        read_table(tmp_path / "none.parquet", "manifest")


def test_lora_training_rows_keep_a_seeded_stratified_fraction():
    """finetune.train_fraction: 1 keeps the whole split (the paper's text), 0.5 a seeded half of
    each class (the official split_half_data); other seeds pick other halves."""
    import pandas as pd

    from realfake.data import lora_training_rows

    train = pd.DataFrame({"image_id": [f"train/{i:03d}" for i in range(40)], "split": "train",
                          "label": [i % 4 for i in range(40)], "class_name": "c", "path": "p"})
    assert lora_training_rows(train, 1.0, 0) is train
    half = lora_training_rows(train, 0.5, 0)
    assert len(half) == 20 and half.label.value_counts().tolist() == [5, 5, 5, 5]
    assert half.equals(lora_training_rows(train.sample(frac=1, random_state=3), 0.5, 0))  # row order does not matter
    assert not set(half.image_id) == set(lora_training_rows(train, 0.5, 1).image_id)
    assert lora_training_rows(train, 0.01, 0).label.value_counts().tolist() == [1, 1, 1, 1]  # at least one per class


def test_captions_that_do_not_match_the_index_are_an_error(tmp_path):
    """With captions in the prompt, an image the captions file does not hold stops the job naming
    the file; without captions the file is not read."""
    import pandas as pd

    from realfake.data import captions_for

    pd.DataFrame({"image_id": ["a", "b"], "caption": ["a cat", "a dog"]}).to_parquet(tmp_path / "c.parquet")
    assert captions_for(tmp_path / "c.parquet", ["b", "a"], True) == ["a dog", "a cat"]
    assert captions_for(tmp_path / "missing.parquet", ["x"], False) == [""]
    with pytest.raises(ValueError, match=r"c.parquet has no caption for 1 of 2 images \(first: z\)"):
        captions_for(tmp_path / "c.parquet", ["a", "z"], True)
