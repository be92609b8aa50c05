"""Faults: a job killed with SIGKILL mid-run, then rerun, gives the same bytes as an uninterrupted run.

Kills are placed exactly with the test-only REALFAKE_TEST_KILL=<stage>:<step> hook (realfake.cli),
so nothing here depends on timing.
"""

import json
import shutil
import signal

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, run_cli, run_snakemake

pytestmark = pytest.mark.slow  # minutes: end-to-end runs through real stage code


def _cfg(smoke_cfg, **classify):
    cfg = json.loads(json.dumps(smoke_cfg))
    cfg["classify"].update({"epochs": 4, "checkpoint_every": 1, "validate_every": 2, **classify})
    cfg["finetune"].update({"steps": 6, "checkpoint_every": 2, "preview_every": 3})
    return cfg


def _classify(inputs, cfg, out, env=None, check=True, loader_args=()):
    man = inputs["workdir"] / "results/synthetic/smoke/ours/s0/1x/manifest.parquet"
    return run_cli("classify", "train", "--cfg", json.dumps(cfg), "--dataset", "smoke", "--seed", "0",
                   "--index", str(inputs["index"]), "--use-real", "--synthetic", str(man), "--setting", "realsyn",
                   "--variant", "ours", "--scale", "1",
                   "--model-out", str(out / "model.pt"), "--metrics", str(out / "metrics.json"),
                   "--log", str(out / "log.txt"), *loader_args, cwd=inputs["workdir"], env=env, check=check)


def _finetune(inputs, cfg, out, env=None, check=True):
    return run_cli("finetune", "train", "--cfg", json.dumps(cfg), "--dataset", "smoke", "--lora", "full", "--seed", "0",
                   "--base", str(inputs["base"]), "--index", str(inputs["index"]), "--captions",
                   str(inputs["captions"]), "--means", str(inputs["means"]), "--embeddings", str(inputs["embeddings"]),
                   "--out", str(out / "lora.safetensors"), "--log", str(out / "log.txt"),
                   cwd=inputs["workdir"], env=env, check=check)


IN1K_RECIPE = {"optimizer": "lamb", "schedule": "cosine", "warmup_epochs": 1, "loss": "bce", "mixup": 0.2,
               "cutmix": 1.0, "randaugment_ops": 2, "randaugment_magnitude": 7}


# the paper's timm recipe on the smoke model: per-image timm transforms (RandomResizedCrop, flip,
# RandAugment) in 2 loader workers, label smoothing, mixup/CutMix, Nesterov SGD, warm-up + multistep
TIMM_RECIPE = {"transform": "timm", "optimizer": "sgd", "nesterov": True, "lr": 0.05, "schedule": "multistep",
               "milestones": [3], "warmup_epochs": 1, "label_smoothing": 0.1, "auto_augment": "rand-m7-mstd0.5",
               "mixup": 0.2, "cutmix": 1.0}


@pytest.mark.parametrize("loader, recipe", [("memory", {}), ("stream", {}), ("memory", IN1K_RECIPE),
                                            ("stream", TIMM_RECIPE)],
                         ids=["memory", "stream", "in1k-recipe", "timm-recipe"])
def test_classifier_resumes_from_checkpoint_identically(real_inputs, smoke_cfg, tmp_path, loader, recipe):
    """The IN-1K recipe draws mixup/CutMix from the seeded generator and RandAugment from torch's
    global one: both are checkpointed, so a resumed run still gives the same bytes. The timm
    recipe's per-image augmentation is seeded by (seed, epoch, worker): the same holds."""
    cfg = _cfg(smoke_cfg, loader=loader, num_workers=2, shuffle_buffer=16, **recipe)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _classify(real_inputs, cfg, a)
    proc = _classify(real_inputs, cfg, b, env={"REALFAKE_TEST_KILL": "classify:2"}, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert (b / "model.pt.ckpt").exists() and not (b / "model.pt").exists()
    _classify(real_inputs, cfg, b)
    assert "resuming from" in (b / "log.txt").read_text() and "epoch 2 of 4" in (b / "log.txt").read_text()
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
    assert json.loads((a / "metrics.json").read_text())["top1"] == json.loads((b / "metrics.json").read_text())["top1"]
    assert not (b / "model.pt.ckpt").exists()
    curve = pd.read_csv(b / "curve.csv")  # the epochs before the kill came back from the checkpoint
    assert (a / "curve.csv").read_bytes() == (b / "curve.csv").read_bytes()
    assert list(curve.epoch) == [1, 2, 3, 4] and curve.test_top1.notna().tolist() == [False, True, False, True]
    assert curve.test_top1.iloc[-1] == pytest.approx(json.loads((a / "metrics.json").read_text())["top1"], abs=1e-5)
    assert "epoch 1 train loss" in (b / "log.txt").read_text() and "test top1" in (b / "log.txt").read_text()


def test_checkpoint_from_another_config_is_an_error(real_inputs, smoke_cfg, tmp_path):
    cfg = _cfg(smoke_cfg)
    proc = _classify(real_inputs, cfg, tmp_path, env={"REALFAKE_TEST_KILL": "classify:1"}, check=False)
    assert proc.returncode == -signal.SIGKILL
    cfg["classify"]["lr"] = 0.01
    proc = _classify(real_inputs, cfg, tmp_path, check=False)
    assert proc.returncode == 2
    assert f"checkpoint {tmp_path / 'model.pt.ckpt'} was written under a different config" in proc.stderr
    assert "cfg.classify.lr" in proc.stderr
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("official", [False, True], ids=["squash", "official-crop-and-clip"])
def test_finetune_resumes_from_checkpoint_identically(real_inputs, smoke_cfg, tmp_path, official):
    cfg = _cfg(smoke_cfg)
    if official:  # the official script's Resize + RandomCrop (seeded per step and image) and gradient clipping
        cfg["finetune"].update({"crop": "random", "max_grad_norm": 1.0})
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _finetune(real_inputs, cfg, a)
    proc = _finetune(real_inputs, cfg, b, env={"REALFAKE_TEST_KILL": "finetune:4"}, check=False)
    assert proc.returncode == -signal.SIGKILL and not (b / "lora.safetensors").exists()
    _finetune(real_inputs, cfg, b)
    assert "step 4 of 6" in (b / "log.txt").read_text()
    assert (a / "lora.safetensors").read_bytes() == (b / "lora.safetensors").read_bytes()
    assert not (b / "lora.safetensors.ckpt").exists()
    for d in (a, b):  # finetune.preview_every 3: previews of steps 3 and 6 beside the LoRA
        assert sorted(p.name for p in (d / "previews").iterdir()) == ["step0000003.png", "step0000006.png"]
    assert (a / "previews" / "step0000006.png").read_bytes() == (b / "previews" / "step0000006.png").read_bytes()


def test_snakemake_rerun_incomplete_after_kills_equals_uninterrupted(smoke_run, tmp_path):
    """Kill a generation shard job, then a classifier job, through snakemake; --rerun-incomplete
    finishes and every artifact down to table 1 equals an uninterrupted run's."""
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"classify": {"epochs": 3, "checkpoint_every": 1},
                                     "generate": {"batch_size": 2}}))
    args = ["results/tables/table1.csv", "--configfile", str(REPO / "config" / "smoke.yaml"), str(extra)]
    runs = {}
    for name in ("clean", "killed"):
        work = tmp_path / name
        shutil.copytree(smoke_run / "results", work / "results")
        shutil.copytree(smoke_run / ".snakemake", work / ".snakemake")
        runs[name] = work
    run_snakemake(runs["clean"], *args)
    for kill in ("generate:2", "classify:1"):
        proc = run_snakemake(runs["killed"], *args, check=False, env={"REALFAKE_TEST_KILL": kill})
        assert proc.returncode != 0
    run_snakemake(runs["killed"], *args, "--rerun-incomplete")
    r1, r2 = runs["clean"] / "results", runs["killed"] / "results"
    for rel in ("tables/table1.csv", "synthetic/smoke/ours/s0/1x/shards/00000.tar",
                "synthetic/smoke/base/s0/1x/shards/00001.tar", "smoke/classify/syn/ours/1x/s0/model.pt",
                "smoke/classify/realsyn/ours/1x/s0/model.pt", "smoke/classify/real/s0/model.pt"):
        assert (r1 / rel).read_bytes() == (r2 / rel).read_bytes(), rel
    assert not list(r2.rglob("*.partial")) and not list(r2.rglob("*.ckpt"))


def test_kill_mid_write_of_caption_embed_and_table_then_rerun_equals_uninterrupted(smoke_run, tmp_path):
    """SIGKILL each of captioning, embedding and table assembly after its temporary file is complete
    and before the rename; the killed job leaves no file that looks complete, and
    `snakemake --rerun-incomplete` ends with the same table 1 as the uninterrupted smoke run."""
    work = tmp_path / "w"
    shutil.copytree(smoke_run / "results" / "base_model", work / "results" / "base_model")
    args = ["results/tables/table1.csv", "--configfile", str(REPO / "config" / "smoke.yaml")]
    kills = {"captions.parquet": "results/smoke/captions.parquet",
             "class_means.pt": "results/smoke/class_means.pt", "table1.csv": "results/tables/table1.csv"}
    for name, rel in kills.items():  # each run targets the killed file, so no sibling job finishes it
        proc = run_snakemake(work, rel, *args[1:], check=False, env={"REALFAKE_TEST_KILL": f"write:{name}"})
        assert proc.returncode != 0, name
        assert not (work / rel).exists(), rel
        assert list((work / rel).parent.glob(f".{name}.*.tmp")), f"the kill did not hit the write of {name}"
    run_snakemake(work, *args, "--rerun-incomplete")
    for rel in ("tables/table1.csv", "smoke/captions.parquet", "smoke/class_means.pt"):
        assert (work / "results" / rel).read_bytes() == (smoke_run / "results" / rel).read_bytes(), rel
    assert not list((work / "results").rglob("*.tmp")), "a stale temporary survived the rerun"


def test_embed_killed_after_a_chunk_resumes_to_the_same_bytes(smoke_run, smoke_cfg, tmp_path):
    """The embedding stage writes chunks of --chunk images; SIGKILLed after its second chunk, a rerun
    computes only the missing chunks and writes the same files as an uninterrupted run."""
    r = smoke_run / "results"
    cfg = json.dumps(smoke_cfg)

    def embed(out, env=None):
        return run_cli("embed", "embed", "--cfg", cfg, "--checkpoint", str(r / "image_encoder" / "random_init.pt"),
                       "--index", str(r / "smoke" / "real_index.parquet"), "--embeddings", str(out / "emb.pt"),
                       "--means", str(out / "means.pt"), "--chunk", "7", "--log", str(out / "log.txt"),
                       check=env is None, env=env, cwd=smoke_run)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    embed(tmp_path / "a")
    proc = embed(tmp_path / "b", env={"REALFAKE_TEST_KILL": "embed:2"})
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "b" / "emb.pt").exists()
    embed(tmp_path / "b")
    assert "2 of 5 chunks already done" in (tmp_path / "b" / "log.txt").read_text()  # 30 images, 7 per chunk
    for name in ("emb.pt", "means.pt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert not (tmp_path / "b" / "emb.pt.chunks").exists()
    whole = torch.load(r / "smoke" / "embeddings.pt")["embedding"]  # the workflow's one-chunk run
    torch.testing.assert_close(torch.load(tmp_path / "a" / "emb.pt")["embedding"], whole, rtol=1e-4, atol=1e-5)


def test_replicas_keep_replica_zero_and_average(real_inputs, smoke_cfg, tmp_path):
    """classify.replicas 3: model.pt holds the replicas-1 weights exactly (replica 0 has the seed),
    top-1 is the mean of the three replicas, and no replica checkpoint is left behind."""
    one, three = tmp_path / "one", tmp_path / "three"
    one.mkdir(), three.mkdir()
    _classify(real_inputs, _cfg(smoke_cfg, checkpoint_every=0), one)
    _classify(real_inputs, _cfg(smoke_cfg, checkpoint_every=0, replicas=3), three)
    w1, w3 = (torch.load(d / "model.pt", weights_only=True)["state_dict"] for d in (one, three))
    assert w1.keys() == w3.keys() and all(torch.equal(w1[k], w3[k]) for k in w1)
    m1, m3 = (json.loads((d / "metrics.json").read_text()) for d in (one, three))
    assert m3["replicas_top1"][0] == m1["top1"] and len(m3["replicas_top1"]) == 3
    assert m3["top1"] == pytest.approx(sum(m3["replicas_top1"]) / 3)
    assert not list(three.glob("*.ckpt"))


def test_training_in_segments_equals_one_job_and_a_killed_segment_resumes(smoke_run, tmp_path):
    """max_job_minutes below a training job's planned runtime splits LoRA fine-tuning and the
    classifier into 3 jobs each (mini-scale jobs are planned at 60 minutes, so 20 gives 3); one
    snakemake call carries them to the end, through a segment killed by SIGKILL, and the LoRA, the
    synthetic shards, the classifier and its metrics are the bytes of unsegmented jobs."""
    target = "results/smoke/classify/syn/ours/1x/s0/metrics.json"
    runs = {}
    for name, extra in (("one", {}), ("segmented", {"max_job_minutes": 20})):
        work = tmp_path / name
        shutil.copytree(smoke_run / "results", work / "results")
        shutil.copytree(smoke_run / ".snakemake", work / ".snakemake")
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({"classify": {"epochs": 3}, **extra}))
        env = {"REALFAKE_TEST_KILL": "classify:2"} if extra else None
        proc = run_snakemake(work, target, "--forcerun", "finetune", "classify_synthetic", "--configfile",
                             str(REPO / "config" / "smoke.yaml"), str(cfg), env=env)
        runs[name] = work / "results"
        restarts = (proc.stdout + proc.stderr).count("Trying to restart job")
        # segmented: the LoRA's 2 segment ends, the classifier's segment end at epoch 1 and its kill at 2
        assert restarts == (4 if extra else 0), (name, restarts)
    # Snakemake clears a job's log before it runs again: the last job's log shows where it resumed
    log = (runs["segmented"] / "logs" / "smoke" / "classify" / "syn_ours_1x_s0.log").read_text()
    assert "(epoch 2 of 3)" in log and "resuming from" in log
    lora_log = (runs["segmented"] / "logs" / "smoke" / "finetune" / "full_s0.log").read_text()
    assert "resuming from" in lora_log and "(step 4 of 5)" in lora_log
    for rel in ("smoke/lora/full/s0/lora.safetensors", "synthetic/smoke/ours/s0/1x/shards/00000.tar",
                "smoke/classify/syn/ours/1x/s0/model.pt"):
        assert (runs["one"] / rel).read_bytes() == (runs["segmented"] / rel).read_bytes(), rel
    one, seg = (json.loads((r / "smoke/classify/syn/ours/1x/s0/metrics.json").read_text()) for r in runs.values())
    assert one["top1"] == seg["top1"] and one["n_train"] == seg["n_train"]
    assert not list(runs["segmented"].rglob("*.ckpt"))


def test_paper_jobs_fit_the_partition_limit():
    """IN-1K's LoRA (about 30 days on 8 GPUs) and 10x classifiers run as segments within
    max_job_minutes; every planned job asks for at most the limit."""
    from realfake.config import load_config
    from realfake.plan import Plan

    plan = Plan(load_config(REPO / "config" / "imagenet1k.yaml"))
    lora = {"dataset": "imagenet1k", "lora": "full", "seed": "0"}
    syn10 = {"dataset": "imagenet1k", "mix": "syn", "variant": "ours", "scale": "10", "seed": "0"}
    assert plan.segments("finetune", lora) >= 10 and plan.segments("classify", syn10) >= 10
    for stage, w in (("finetune", lora), ("classify", syn10), ("generate", {**syn10, "shard": "00000"})):
        assert plan.resources(stage, w)["runtime"] <= 2880
    short = Plan(load_config(REPO / "config" / "imagenet1k.yaml", overrides={"max_job_minutes": 600}))
    assert short.segments("finetune", lora) > plan.segments("finetune", lora)
    assert short.resources("finetune", lora)["runtime"] <= 600
