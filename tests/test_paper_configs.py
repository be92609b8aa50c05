"""Paper-scale configs: valid, consistent with config/paper.yaml, and their DAG plans without data."""


import re

import pytest

from realfake.config import load_config

from conftest import REPO, run_snakemake

DATASETS = ["imagenet10", "imagenet100", "imagenet1k", "cub", "cars", "pets", "eurosat", "celeba"]


@pytest.mark.parametrize("name", DATASETS)
def test_per_dataset_config_equals_paper_section(name):
    paper = load_config(REPO / "config" / "paper.yaml")
    one = load_config(REPO / "config" / f"{name}.yaml")
    assert sorted(one["datasets"]) == [name]
    assert one["datasets"][name] == paper["datasets"][name]
    for key in paper:
        if key not in ("datasets", "run_name", "ood"):  # ood belongs to the IN-1K run
            assert one[key] == paper[key], key
    assert one["ood"] == (paper["ood"] if name == "imagenet1k" else load_config()["ood"])


def test_paper_hyperparameters():
    cfg = load_config(REPO / "config" / "paper.yaml")
    assert cfg["generate"] == {"steps": 30, "cfg": 2.0, "strength": 0.75, "lora_scale": 0.5,
                               "batch_size": 64, "seed": 0, "classes_per_shard": 10, "image_format": "jpeg",
                               "jpeg_quality": 95, "torch_compile": False}
    assert cfg["loras"]["full"] == {"dm_weight": 0.003, "guidance": "class_mean"}
    assert cfg["finetune"]["lr"] == 1e-4 and cfg["finetune"]["batch_size"] == 64 and cfg["finetune"]["rank"] == 4
    assert cfg["finetune"]["batch_size"] // cfg["finetune"]["gpus"] == 8  # 8 per GPU (train_lora.sh)
    assert cfg["image_encoder"]["model_name"] == "ViT-L-14"
    assert cfg["datasets"]["cub"]["classify_overrides"]["image_size"] == 448
    assert cfg["datasets"]["imagenet10"]["use_captions"] and not cfg["datasets"]["cub"]["use_captions"]


@pytest.mark.slow
def test_paper_dry_run_plans_every_dataset_without_data(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "results/tables/table1.csv", "results/tables/table10.csv",
                         "--configfile", str(REPO / "config" / "paper.yaml"))
    out = proc.stdout + proc.stderr
    for ds in DATASETS:
        assert f"results/{ds}/real_index.parquet" in out
    # CelebA (attributes) reports in table 10 only: real, base, cip, ours, real + ours x 3 seeds
    assert "results/celeba/classify/syn/ours/1x/s2/metrics.json" in out
    assert re.search(r"^table10\s+1$", out, re.M) and re.search(r"^table1\s+1$", out, re.M)
    assert "pretrain_base" not in out and "image_encoder_init" not in out  # real models come from models.*
    assert not (tmp_path / "results").exists()


def test_paper_dry_run_plans_table4_ood(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "results/tables/table4.csv", "--configfile", str(REPO / "config" / "paper.yaml"))
    out = proc.stdout + proc.stderr
    # real, synthetic and real + synthetic classifiers x 3 seeds x 4 OOD sets
    assert re.search(r"^ood_eval\s+36$", out, re.M), out[-3000:]
    for name in ("v2", "sketch", "r", "a"):
        assert f"results/imagenet1k/ood/syn/ours/1x/s2/{name}.json" in out
    assert not (tmp_path / "results").exists()


def test_celeba_config_plans_table10_and_refuses_table1(tmp_path):
    cfg = str(REPO / "config" / "celeba.yaml")
    proc = run_snakemake(tmp_path, "-n", "all_ablation", "--configfile", cfg)
    out = proc.stdout + proc.stderr
    assert re.search(r"^table10\s+1$", out, re.M) and not re.search(r"^table1\s+1$", out, re.M)
    assert "results/celeba/classify/realsyn/ours/1x/s0/metrics.json" in out
    proc = run_snakemake(tmp_path, "-n", "results/tables/table1.csv", "--configfile", cfg, check=False)
    assert proc.returncode != 0
    assert "table 1 needs a single-label dataset" in proc.stdout + proc.stderr
