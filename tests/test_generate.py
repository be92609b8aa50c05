"""Generation: deterministic tar shards, resumable after SIGKILL with byte-identical results."""

import json
import signal

import pandas as pd
import pytest

from realfake.config import shard_count
from realfake.synthesis import image_seed, plan, shard_key
from realfake.shards import iter_shard

from conftest import run_cli


def _generate(inputs, cfg, out, variant="ours", shard=0, env=None, check=True):
    out.mkdir(parents=True, exist_ok=True)
    args = ["--cfg", json.dumps(cfg), "--dataset", "smoke", "--variant", variant, "--seed", "0", "--scale", "2",
            "--shard", str(shard), "--base", str(inputs["base"]), "--index", str(inputs["index"]),
            "--captions", str(inputs["captions"]), "--means", str(inputs["means"]),
            "--embeddings", str(inputs["embeddings"]), "--shard-out", str(out / f"{shard:05d}.tar"),
            "--rows-out", str(out / f"{shard:05d}.parquet"), "--log", str(out / "log.txt")]
    if cfg["variants"][variant]["lora"]:
        args += ["--lora", str(inputs["lora"])]
    return run_cli("generate", "shard", *args, cwd=inputs["workdir"], env=env, check=check)


@pytest.fixture(scope="module")
def uninterrupted(real_inputs, smoke_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_a")
    _generate(real_inputs, smoke_cfg, out)
    return out


def test_same_seed_gives_identical_bytes(uninterrupted, real_inputs, smoke_cfg, tmp_path):
    _generate(real_inputs, smoke_cfg, tmp_path)
    a, b = uninterrupted / "00000.tar", tmp_path / "00000.tar"
    assert a.read_bytes() == b.read_bytes()
    items = list(iter_shard(a))
    assert len(items) == 30  # shard 0 = classes 0-4, 3 real images each, scale 2
    assert sorted({lab for _, _, lab in items}) == [0, 1, 2, 3, 4]
    assert all(data[:4] == b"\x89PNG" for _, data, _ in items)
    ra, rb = pd.read_parquet(uninterrupted / "00000.parquet"), pd.read_parquet(tmp_path / "00000.parquet")
    assert ra.drop(columns="shard").equals(rb.drop(columns="shard"))
    assert list(ra.member) == [f"{k}.png" for k, _, _ in items]


def test_sigkill_mid_shard_then_rerun_is_byte_identical(uninterrupted, real_inputs, smoke_cfg, tmp_path):
    env = {"REALFAKE_TEST_KILL": "generate:2"}
    proc = _generate(real_inputs, smoke_cfg, tmp_path, env=env, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "00000.tar").exists() and not (tmp_path / "00000.parquet").exists()
    partial = tmp_path / "00000.tar.partial"
    assert partial.stat().st_size > 0
    with open(partial, "ab") as f:  # a crash in the middle of a member: half a header of junk
        f.write(b"x" * 300)
    _generate(real_inputs, smoke_cfg, tmp_path)
    assert "2 of 5 batches already complete" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "00000.tar").read_bytes() == (uninterrupted / "00000.tar").read_bytes()
    assert not partial.exists()
    keys = [k for k, _, _ in iter_shard(tmp_path / "00000.tar")]
    assert len(keys) == len(set(keys)) == 30


def test_partial_from_another_config_is_discarded(uninterrupted, real_inputs, smoke_cfg, tmp_path):
    other = json.loads(json.dumps(smoke_cfg))
    other["generate"]["steps"] = 2
    proc = _generate(real_inputs, other, tmp_path, env={"REALFAKE_TEST_KILL": "generate:1"}, check=False)
    assert proc.returncode == -signal.SIGKILL
    _generate(real_inputs, smoke_cfg, tmp_path)
    assert "different config" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "00000.tar").read_bytes() == (uninterrupted / "00000.tar").read_bytes()


def test_other_shard_and_replicas_differ(uninterrupted, real_inputs, smoke_cfg, tmp_path):
    _generate(real_inputs, smoke_cfg, tmp_path, shard=1)
    rows = pd.read_parquet(tmp_path / "00001.parquet")
    assert sorted(rows.label.unique()) == [5, 6, 7, 8, 9]
    data = {k: d for k, d, _ in iter_shard(tmp_path / "00001.tar")}
    first = rows[rows.replica == 0].iloc[0]
    second = rows[(rows.replica == 1) & (rows.source_image == first.source_image)].iloc[0]
    assert data[shard_key(first.image_id)] != data[shard_key(second.image_id)]


def test_shard_out_of_range_is_an_error(real_inputs, smoke_cfg, tmp_path):
    proc = _generate(real_inputs, smoke_cfg, tmp_path, shard=2, check=False)
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


def test_image_seed_is_stable_and_distinct():
    assert image_seed("d", "train/0/x", 0, 5) == image_seed("d", "train/0/x", 0, 5)
    seeds = {image_seed("d", f"train/0/x{i}", r, 5) for i in range(50) for r in range(4)}
    assert len(seeds) == 200


def test_plan_orders_by_class_and_covers_every_replica():
    train = pd.DataFrame({"image_id": ["train/1/a", "train/0/b"], "label": [1, 0], "class_name": ["1", "0"],
                          "path": ["a.png", "b.png"]})
    p = plan("d", train, 3, 0)
    assert list(p.label) == [0, 0, 0, 1, 1, 1]
    assert sorted(p.replica[p.label == 0]) == [0, 1, 2]


def test_shard_count_from_config(smoke_cfg):
    assert shard_count(smoke_cfg, "smoke") == 2  # 10 digit classes, 5 per shard
    cfg = json.loads(json.dumps(smoke_cfg))
    cfg["generate"]["classes_per_shard"] = 3
    assert shard_count(cfg, "smoke") == 4


def test_shard_key_is_short_and_unique():
    long = "train/" + "x" * 200
    assert len(shard_key(long)) <= 90 and shard_key(long) != shard_key(long + "y")
    assert shard_key("train/n01/n01_1.JPEG_r0") == "train_n01_n01_1_JPEG_r0"



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
