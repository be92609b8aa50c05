"""Generation: deterministic tar shards, resumable after SIGKILL with byte-identical results."""

import json
import signal

import pandas as pd
import pytest

from realfake.config import shard_count
from realfake.shards import shard_key
from realfake.synthesis import image_seed, plan
from realfake.shards import iter_shard

from conftest import run_cli


def _generate(inputs, cfg, out, variant="ours", shard=0, env=None, check=True, extra=()):
    out.mkdir(parents=True, exist_ok=True)
    n_shards = shard_count(cfg, "smoke", 2)
    args = ["--cfg", json.dumps(cfg), "--dataset", "smoke", "--variant", variant, "--seed", "0", "--scale", "2",
            "--shard", str(shard), "--shards", str(n_shards), "--base", str(inputs["base"]),
            "--index", str(inputs["index"]),
            "--captions", str(inputs["captions"]), "--means", str(inputs["means"]),
            "--embeddings", str(inputs["embeddings"]), "--shard-out", str(out / f"{shard:05d}.tar"),
            "--rows-out", str(out / f"{shard:05d}.parquet"), "--log", str(out / "log.txt")]
    if cfg["variants"][variant]["lora"]:
        args += ["--lora", str(inputs["lora"])]
    args += list(extra)
    return run_cli("generate", "shard", *args, cwd=inputs["workdir"], env=env, check=check)


@pytest.fixture(scope="module")
def gen_cfg(smoke_cfg):
    """Two shards of 30 images at scale 2 (10 classes' worth per shard), batches of 6: 5 per shard."""
    cfg = json.loads(json.dumps(smoke_cfg))
    cfg["generate"].update(classes_per_shard=10, batch_size=6)
    return cfg


@pytest.fixture(scope="module")
def uninterrupted(real_inputs, gen_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_a")
    _generate(real_inputs, gen_cfg, out)
    return out


@pytest.fixture(scope="module")
def second_shard(real_inputs, gen_cfg, tmp_path_factory):
    """Shard 1 of the two-shard split: the other half of ``uninterrupted``'s set."""
    out = tmp_path_factory.mktemp("gen_b")
    _generate(real_inputs, gen_cfg, out, shard=1)
    return out


def test_same_seed_gives_identical_bytes(uninterrupted, real_inputs, gen_cfg, tmp_path):
    """Also with init images read and PNGs encoded by 5 threads beside the pipeline (the job's CPUs),
    not the config's: batches are appended in order, whatever thread finishes first."""
    _generate(real_inputs, gen_cfg, tmp_path, extra=["--threads", "5"])
    a, b = uninterrupted / "00000.tar", tmp_path / "00000.tar"
    assert a.read_bytes() == b.read_bytes()
    items = list(iter_shard(a))
    assert len(items) == 30  # half of 10 classes x 3 real images x scale 2
    assert len({lab for _, _, lab in items}) >= 8  # a shuffled run of the whole set, not a block of classes
    assert all(data[:4] == b"\x89PNG" for _, data, _ in items)
    ra, rb = pd.read_parquet(uninterrupted / "00000.parquet"), pd.read_parquet(tmp_path / "00000.parquet")
    assert ra.drop(columns="shard").equals(rb.drop(columns="shard"))
    assert list(ra.member) == [f"{k}.png" for k, _, _ in items]


def test_sigkill_mid_shard_then_rerun_is_byte_identical(uninterrupted, real_inputs, gen_cfg, tmp_path):
    env = {"REALFAKE_TEST_KILL": "generate:2"}
    proc = _generate(real_inputs, gen_cfg, tmp_path, env=env, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "00000.tar").exists() and not (tmp_path / "00000.parquet").exists()
    partial = tmp_path / "00000.tar.partial"
    assert partial.stat().st_size > 0
    with open(partial, "ab") as f:  # a crash in the middle of a member: half a header of junk
        f.write(b"x" * 300)
    _generate(real_inputs, gen_cfg, tmp_path)
    assert "2 of 5 batches already complete" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "00000.tar").read_bytes() == (uninterrupted / "00000.tar").read_bytes()
    assert not partial.exists()
    keys = [k for k, _, _ in iter_shard(tmp_path / "00000.tar")]
    assert len(keys) == len(set(keys)) == 30


def test_partial_from_another_config_is_discarded(uninterrupted, real_inputs, gen_cfg, tmp_path):
    other = json.loads(json.dumps(gen_cfg))
    other["generate"]["steps"] = 2
    proc = _generate(real_inputs, other, tmp_path, env={"REALFAKE_TEST_KILL": "generate:1"}, check=False)
    assert proc.returncode == -signal.SIGKILL
    _generate(real_inputs, gen_cfg, tmp_path)
    assert "different config" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "00000.tar").read_bytes() == (uninterrupted / "00000.tar").read_bytes()


def test_other_shard_and_replicas_differ(uninterrupted, second_shard):
    rows = pd.concat([pd.read_parquet(uninterrupted / "00000.parquet"), pd.read_parquet(second_shard / "00001.parquet")])
    assert len(rows) == 60 and not rows.image_id.duplicated().any()  # the two shards partition the set
    data = {k: d for k, d, _ in iter_shard(uninterrupted / "00000.tar")}
    data.update({k: d for k, d, _ in iter_shard(second_shard / "00001.tar")})
    first = rows[rows.replica == 0].iloc[0]
    second = rows[(rows.replica == 1) & (rows.source_image == first.source_image)].iloc[0]
    assert data[shard_key(first.image_id)] != data[shard_key(second.image_id)]


def test_the_shard_split_does_not_change_the_images(uninterrupted, second_shard, real_inputs, gen_cfg, tmp_path):
    """A set written as one shard holds the same bytes as the same set written as two, when each
    shard is a whole number of batches (30 = 5 x 6): per-image seeds, and batches that do not
    straddle shards, so ``generate.classes_per_shard`` only trades job count for job length."""
    one_cfg = json.loads(json.dumps(gen_cfg))
    one_cfg["generate"]["classes_per_shard"] = 20
    _generate(real_inputs, one_cfg, tmp_path / "one")
    assert shard_count(one_cfg, "smoke", 2) == 1
    two = {k: (d, lab) for p in (uninterrupted / "00000.tar", second_shard / "00001.tar")
           for k, d, lab in iter_shard(p)}
    one = {k: (d, lab) for k, d, lab in iter_shard(tmp_path / "one" / "00000.tar")}
    assert len(one) == 60 and one == two
    rows = pd.read_parquet(tmp_path / "one" / "00000.parquet")
    split = pd.concat([pd.read_parquet(uninterrupted / "00000.parquet"),
                       pd.read_parquet(second_shard / "00001.parquet")], ignore_index=True)
    assert list(rows.image_id) == list(split.image_id)  # same order: the set's order, cut in two


def test_shard_out_of_range_is_an_error(real_inputs, gen_cfg, tmp_path):
    proc = _generate(real_inputs, gen_cfg, tmp_path, shard=2, check=False)
    assert proc.returncode == 2 and "shard 2 out of range" in proc.stderr
    assert not list(tmp_path.glob("*.tar*"))


def test_merge_names_a_missing_shard(uninterrupted, real_inputs, smoke_cfg, tmp_path):
    rows = pd.read_parquet(uninterrupted / "00000.parquet")
    rows["shard"] = str(tmp_path / "gone.tar")
    rows.to_parquet(tmp_path / "00000.parquet")
    proc = run_cli("generate", "merge", "--cfg", json.dumps(smoke_cfg), "--dataset", "smoke", "--variant", "ours",
                   "--seed", "0", "--scale", "2", "--rows", str(tmp_path / "00000.parquet"),
                   "--manifest", str(tmp_path / "manifest.parquet"), check=False)
    assert proc.returncode == 2 and "gone.tar" in proc.stderr and "missing" in proc.stderr
    assert not (tmp_path / "manifest.parquet").exists()


def _merge(tmp_path, rows, cfg):
    return run_cli("generate", "merge", "--cfg", json.dumps(cfg), "--dataset", "smoke", "--variant", "ours",
                   "--seed", "0", "--scale", "2", "--rows", *map(str, rows),
                   "--manifest", str(tmp_path / "manifest.parquet"), check=False)


def test_merge_streams_rows_in_order_and_refuses_duplicates(smoke_cfg, tmp_path):
    files = []
    for k in range(3):
        (tmp_path / f"{k}.tar").write_bytes(b"")
        part = pd.DataFrame({"image_id": [f"i{k}_{j}" for j in range(4)], "label": [j for j in range(4)],
                             "lora_hash": "abc", "shard": str(tmp_path / f"{k}.tar"), "member": "m"})
        part.to_parquet(tmp_path / f"{k}.parquet", index=False)
        files.append(tmp_path / f"{k}.parquet")
    assert _merge(tmp_path, files, smoke_cfg).returncode == 0
    man = pd.read_parquet(tmp_path / "manifest.parquet")
    assert list(man.image_id) == [f"i{k}_{j}" for k in range(3) for j in range(4)]
    meta = json.loads((tmp_path / "manifest.parquet.meta.json").read_text())
    assert meta["n"] == 12 and len(meta["shards"]) == 3 and meta["lora_hash"] == ["abc"]
    (tmp_path / "manifest.parquet").unlink()
    proc = _merge(tmp_path, files + files[:1], smoke_cfg)
    assert proc.returncode == 2 and "duplicate image ids" in proc.stderr
    assert not (tmp_path / "manifest.parquet").exists() and not list(tmp_path.glob(".manifest*"))


def test_image_seed_is_stable_and_distinct():
    assert image_seed("d", "train/0/x", 0, 5) == image_seed("d", "train/0/x", 0, 5)
    seeds = {image_seed("d", f"train/0/x{i}", r, 5) for i in range(50) for r in range(4)}
    assert len(seeds) == 200


def _train(n_classes, per_class):
    ids = [f"train/{c}/{i}" for c in range(n_classes) for i in range(per_class)]
    return pd.DataFrame({"image_id": ids, "label": [c for c in range(n_classes) for _ in range(per_class)],
                         "class_name": [str(c) for c in range(n_classes) for _ in range(per_class)],
                         "path": [f"{i}.png" for i in ids]})


def test_shards_partition_the_set_and_each_is_class_mixed():
    train = _train(10, 30)
    shards = [plan("d", train, 3, 0, s, 4) for s in range(4)]
    rows = pd.concat(shards, ignore_index=True)
    assert len(rows) == 900 and not rows.image_id.duplicated().any()  # every (image, replica) once
    assert sorted(rows.replica[rows.source_image == "train/3/7"]) == [0, 1, 2]
    for p in shards:  # a uniform sample of the classes, in shuffled order: no class runs
        assert p.label.value_counts().max() < 0.2 * len(p)
        assert (p.label.to_numpy()[1:] == p.label.to_numpy()[:-1]).mean() < 0.25
    again = plan("d", train, 3, 0, 2, 4)  # a shard planned alone is the same rows
    pd.testing.assert_frame_equal(again, shards[2])
    assert not plan("d", train, 3, 1, 2, 4).image_id.equals(again.image_id)  # the seed changes the order


def test_shard_count_from_config(smoke_cfg):
    assert shard_count(smoke_cfg, "smoke", 1) == 2  # 10 digit classes, 5 per shard
    assert shard_count(smoke_cfg, "smoke", 10) == 20  # a job's size does not grow with the scale
    cfg = json.loads(json.dumps(smoke_cfg))
    cfg["generate"]["classes_per_shard"] = 3
    assert shard_count(cfg, "smoke", 1) == 4
    cfg["classify"].update(loader="stream", num_workers=8, gpus=2)
    assert shard_count(cfg, "smoke", 1) == 4  # sized by work: loader workers share shards instead


def test_shard_key_is_short_and_unique():
    long = "train/" + "x" * 200
    assert len(shard_key(long)) <= 90 and shard_key(long) != shard_key(long + "y")
    assert shard_key("train/n01/n01_1.JPEG_r0") == "train_n01_n01_1_JPEG_r0"
    wide = "train/" + "é" * 60  # 66 characters, 126 bytes
    assert len(shard_key(wide).encode()) <= 90 and shard_key(wide) != shard_key(wide + "é")


def test_non_finite_pixels_are_an_error_naming_the_images():
    import numpy as np

    from realfake.synthesis import finite_images
    batch = pd.DataFrame({"image_id": ["a_r0", "b_r0"]})
    writer = type("W", (), {"final": "shards/00000.tar"})()
    ok = finite_images(np.full((2, 4, 4, 3), 0.5, np.float32), batch, 1, writer)
    assert [im.getpixel((0, 0)) for im in ok] == [(128, 128, 128)] * 2  # (0.5 * 255).round(), as diffusers
    bad = np.full((2, 4, 4, 3), 0.5, np.float32)
    bad[1, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite pixels in 1 of 2 images of batch 3 of shards/00000.tar "
                                         r"\(first: b_r0\)"):
        finite_images(bad, batch, 3, writer)



def test_lora_from_another_base_is_named(real_inputs, smoke_cfg, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(real_inputs["lora"])
    key = next(k for k in sd if k.endswith("lora.down.weight"))
    sd[key] = torch.zeros(sd[key].shape[0], sd[key].shape[1] + 3)  # a layer of another width
    bad = tmp_path / "other_base.safetensors"
    save_file(sd, bad)
    inputs = {**real_inputs, "lora": bad}
    proc = _generate(inputs, smoke_cfg, tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert f"LoRA file {bad} does not fit the base model" in proc.stderr and "is 32 wide in the base, 35" in proc.stderr
    assert not list((tmp_path / "out").glob("*.tar"))


def test_a_lora_with_a_nan_weight_is_refused(real_inputs, smoke_cfg, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(real_inputs["lora"])
    key = next(k for k in sd if k.endswith("lora.up.weight"))
    sd[key] = sd[key].clone()
    sd[key][0, 0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(sd, bad)
    proc = _generate({**real_inputs, "lora": bad}, smoke_cfg, tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert f"LoRA file {bad}: tensor {key!r} holds NaN or infinite values" in proc.stderr
    assert not list((tmp_path / "out").glob("*.tar"))
