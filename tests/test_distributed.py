"""Data parallelism: the batch split, shard split and fixed batch counts (fast), and real 2-process
runs on CPU with the gloo backend through the same launcher the rules use (slow).

Tolerances of the 2-process vs 1-process comparisons, and why:
- fine-tuning: the two processes compute the same loss on the same rows, noise and timesteps as one
  process (per-row draws are made for the global batch, distribution matching over groups that do
  not straddle processes); only the order of float additions differs (half-batch convolutions, the
  gradient all-reduce), so LoRA tensors agree to 1e-6 absolute (measured: 1e-7; AdamW steps are
  lr-sized, 2e-4, and the trained up-projections reach 1e-3) and the loss history to 1e-5 relative.
- classifier: the same global batches and augmentation, but batch norm normalises each process's
  half batch with its own statistics (as the official torchrun runs, no SyncBN), and the stream
  loader gives each process its own shards (another order of the images), so the training differs as
  two batch-norm batch sizes and two orders do: per-epoch loss within 20 % relative (measured: 8 %
  memory, 13 % stream) and test top-1 within 15 points on the smoke data (near chance after 6 epochs:
  the loss curve is the real check).
"""

import json
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, snakemake_env
from realfake.classifier_data import fixed_batches, rank_units, split_shards
from realfake.config import ConfigError, dataset_section, load_config
from realfake.distributed import World, launcher
from realfake.method import distribution_matching_loss, grouped_dm_loss
from realfake.plan import Plan
from realfake.settings import Finetune


def test_world_parts_cover_a_batch_once():
    for n, size in ((8, 2), (7, 2), (9, 4), (5, 1)):
        parts = [World(r, size).part(n) for r in range(size)]
        rows = [i for p in parts for i in range(n)[p]]
        assert rows == list(range(n))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_split_shards_balances_rows_and_keeps_order():
    counts = {"a": 10, "b": 10, "c": 10, "d": 4, "e": 5}
    assert split_shards(counts, 1) == [list(counts)]
    parts = split_shards(counts, 2)
    assert sorted(s for p in parts for s in p) == sorted(counts)  # every shard once
    loads = [sum(counts[s] for s in p) for p in parts]
    assert max(loads) - min(loads) <= 10 and loads == [20, 19]
    for p in parts:
        assert p == sorted(p, key=list(counts).index)


def test_fewer_shards_than_processes_are_cut_into_parts():
    units = rank_units({"a": 7}, 2)
    assert units == {("a", 0, 2): 4, ("a", 1, 2): 3}
    assert [len(p) for p in split_shards(units, 2)] == [1, 1]  # both processes stream rows
    assert rank_units({"a": 7, "b": 3}, 2) == {"a": 7, "b": 3}  # enough shards: whole


def test_fixed_batches_give_exact_counts_and_pad_from_the_first_rows():
    stream = [(torch.arange(a, b)[:, None].float(), torch.arange(a, b)) for a, b in ((0, 3), (3, 4), (4, 9), (9, 10))]
    out = list(fixed_batches(iter(stream), 4, 3))
    assert [len(y) for _, y in out] == [4, 4, 4]
    assert torch.cat([y for _, y in out]).tolist() == list(range(10)) + [0, 1]  # every row, then padding
    assert [y.tolist() for _, y in fixed_batches(iter(stream), 4, 2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [y.tolist() for _, y in fixed_batches(iter(stream[:1]), 2, 3)] == [[0, 1], [2, 0], [1, 0]]
    with pytest.raises(ValueError, match="empty"):
        list(fixed_batches(iter([]), 4, 1))


def test_grouped_distribution_matching():
    g = torch.Generator().manual_seed(0)
    pred, target, w = torch.randn(8, 4, 2, 2, generator=g), torch.randn(8, 4, 2, 2, generator=g), torch.rand(8, generator=g)
    whole = distribution_matching_loss(pred, target, w)
    assert torch.equal(grouped_dm_loss(pred, target, w, None), whole)
    assert torch.equal(grouped_dm_loss(pred, target, w, 8), whole)
    halves = (distribution_matching_loss(pred[:4], target[:4], w[:4]) + distribution_matching_loss(pred[4:], target[4:], w[4:])) / 2
    assert torch.allclose(grouped_dm_loss(pred, target, w, 4), halves)
    with pytest.raises(ValueError, match="groups of 3"):
        grouped_dm_loss(pred, target, w, 3)


@pytest.mark.parametrize("finetune, classify, message", [
    ({"gpus": 3}, {}, "finetune.batch_size"),
    ({"gpus": 2}, {}, "finetune.dm_group"),
    ({"gpus": 2, "batch_size": 8, "dm_group": 3}, {}, "finetune.dm_group"),
    ({}, {"gpus": 3}, "classify.batch_size"),
    ({}, {"gpus": 40}, "classify.batch_size"),
])
def test_batches_that_do_not_split_are_config_errors(finetune, classify, message):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "config" / "smoke.yaml", overrides={"finetune": finetune, "classify": classify})


def test_per_dataset_gpus_reach_resources_threads_and_launcher():
    cfg = load_config(REPO / "config" / "paper.yaml")
    paper = Plan(cfg)
    in1k = {"dataset": "imagenet1k", "mix": "syn", "scale": "10"}
    gpus = dataset_section(cfg, "classify", "imagenet1k")["gpus"]  # train.sh's 4
    assert gpus > 1 and paper.resources("classify", in1k)["gpu"] == gpus
    c = dataset_section(cfg, "classify", "imagenet1k")  # classifiers declare their own CPUs per GPU
    assert c["threads"] > cfg["threads"] and paper.threads("classify", in1k) == c["threads"] * gpus
    assert paper.threads("generate", in1k) == cfg["threads"]
    default = Plan(load_config(REPO / "config" / "paper.yaml", overrides={"classify": {"threads": None}}))
    assert default.threads("classify", in1k) == cfg["threads"] * gpus
    assert paper.launcher("classify", in1k).endswith(f"--nproc_per_node {gpus} -m realfake.classify --")
    assert paper.resources("shadow", in1k)["gpu"] == 1 and paper.resources("generate", in1k)["gpu"] == 1
    one = load_config(REPO / "config" / "paper.yaml", overrides={"classify": {"gpus": 1}})
    assert Plan(one).launcher("classify", in1k) == "python -m realfake.classify"
    ft = Finetune.of(cfg, "imagenet1k")
    assert ft.gpus > 1 and ft.batch_size // ft.gpus == ft.dm_group == 8  # the official 8 per GPU
    assert paper.resources("finetune", {"dataset": "imagenet1k", "lora": "full", "seed": "0"})["gpu"] == ft.gpus
    more = load_config(REPO / "config" / "paper.yaml", overrides={"datasets": {"imagenet1k": {
        "classify_overrides": {"gpus": 2 * gpus}}}})
    fewer = Plan(more)
    assert fewer.resources("classify", in1k)["gpu"] == 2 * gpus
    # twice the GPUs, about half the work per GPU: fewer minutes in all (each job stays within max_job_minutes)
    assert fewer.unsegmented("classify", in1k)[1] < paper.unsegmented("classify", in1k)[1]
    assert fewer.segments("classify", in1k) < paper.segments("classify", in1k)


# ---------------------------------------------------------------- 2 processes on CPU (gloo)


def _launch(module: str, gpus: int, *args, env=None, cwd=None, check=True):
    cmd = launcher(gpus, f"realfake.{module}").split()  # what the rule runs, with this venv's Python
    proc = subprocess.run([sys.executable, *cmd[1:], *args], capture_output=True,
                          text=True, env={**snakemake_env(), **(env or {})}, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} on {gpus} process(es) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def _finetune(inputs, cfg, out, gpus, env=None, check=True):
    cfg = json.loads(json.dumps(cfg))
    cfg["finetune"]["gpus"] = gpus
    return _launch("finetune", gpus, "train", "--cfg", json.dumps(cfg), "--dataset", "smoke", "--lora", "full",
                   "--seed", "0", "--base", str(inputs["base"]), "--index", str(inputs["index"]),
                   "--captions", str(inputs["captions"]), "--means", str(inputs["means"]),
                   "--embeddings", str(inputs["embeddings"]), "--out", str(out / "lora.safetensors"),
                   "--log", str(out / "log.txt"), cwd=inputs["workdir"], env=env, check=check)


def _classify(inputs, cfg, out, gpus, env=None, check=True):
    cfg = json.loads(json.dumps(cfg))
    cfg["classify"]["gpus"] = gpus
    man = inputs["workdir"] / "results/synthetic/smoke/ours/s0/1x/manifest.parquet"
    return _launch("classify", gpus, "train", "--cfg", json.dumps(cfg), "--dataset", "smoke", "--seed", "0",
                   "--index", str(inputs["index"]), "--use-real", "--synthetic", str(man), "--setting", "realsyn",
                   "--variant", "ours", "--scale", "1", "--model-out", str(out / "model.pt"),
                   "--metrics", str(out / "metrics.json"), "--log", str(out / "log.txt"),
                   cwd=inputs["workdir"], env=env, check=check)


def _one_and_two(stage, inputs, cfg, tmp_path) -> dict:
    """{processes: output folder} of the stage run on 1 and on 2 processes."""
    runs = {}
    for gpus in (1, 2):
        runs[gpus] = tmp_path / f"g{gpus}"
        runs[gpus].mkdir()
        stage(inputs, cfg, runs[gpus], gpus)
    return runs


def _ft_cfg(smoke_cfg):
    cfg = json.loads(json.dumps(smoke_cfg))
    cfg["finetune"].update({"steps": 6, "batch_size": 4, "dm_group": 2, "checkpoint_every": 2})
    return cfg


def _lora(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_finetune_on_two_processes_matches_one(real_inputs, smoke_cfg, tmp_path):
    runs = _one_and_two(_finetune, real_inputs, _ft_cfg(smoke_cfg), tmp_path)
    a, b = _lora(runs[1] / "lora.safetensors"), _lora(runs[2] / "lora.safetensors")
    assert a.keys() == b.keys()
    assert max(float(a[k].abs().max()) for k in a if ".lora.up." in k) > 1e-4  # trained (up starts at zero)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    metas = [json.loads((runs[g] / "lora.safetensors.meta.json").read_text()) for g in (1, 2)]
    for key in ("first_loss", "final_loss"):
        assert metas[0][key] == pytest.approx(metas[1][key], rel=1e-5)
    log2 = (runs[2] / "log.txt").read_text()
    assert "data-parallel: 2 processes (gloo)" in log2
    assert not list(tmp_path.rglob("*.ckpt")) and not (runs[2] / "lora.safetensors.partial").exists()


@pytest.mark.slow
def test_finetune_on_two_processes_resumes_identically(real_inputs, smoke_cfg, tmp_path):
    cfg = _ft_cfg(smoke_cfg)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _finetune(real_inputs, cfg, a, 2)
    proc = _finetune(real_inputs, cfg, b, 2, env={"REALFAKE_TEST_KILL": "finetune:4"}, check=False)
    assert proc.returncode != 0 and not (b / "lora.safetensors").exists()
    assert (b / "lora.safetensors.ckpt").exists()
    _finetune(real_inputs, cfg, b, 2)
    assert "step 4 of 6" in (b / "log.txt").read_text()
    assert (a / "lora.safetensors").read_bytes() == (b / "lora.safetensors").read_bytes()


def _curve(log: str) -> list[float]:
    return [float(v) for v in re.findall(r"epoch \d+ train loss ([\d.]+)", log)]


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_classifier_on_two_processes_is_close_to_one(real_inputs, smoke_cfg, tmp_path, loader):
    cfg = json.loads(json.dumps(smoke_cfg))
    cfg["classify"].update({"epochs": 6, "batch_size": 16, "loader": loader, "num_workers": 1, "shuffle_buffer": 64})
    runs = _one_and_two(_classify, real_inputs, cfg, tmp_path)
    curves = [_curve((runs[g] / "log.txt").read_text()) for g in (1, 2)]
    assert len(curves[0]) == len(curves[1]) == 6
    assert curves[0][-1] < curves[0][0] and curves[1][-1] < curves[1][0]  # both learn
    for one, two in zip(*curves):
        assert two == pytest.approx(one, rel=0.2)
    top1 = [json.loads((runs[g] / "metrics.json").read_text())["top1"] for g in (1, 2)]
    assert abs(top1[0] - top1[1]) <= 15
    assert "data-parallel: 2 processes (gloo)" in (runs[2] / "log.txt").read_text()


@pytest.mark.slow
def test_stream_classifier_is_the_same_whatever_loader_processes_decode(real_inputs, smoke_cfg, tmp_path):
    """The stream loader's order and augmentation come from classify.streams: decoding in the main
    process, in 2 loader processes, or in as many as Slurm's CPUs per GPU allow (auto: 4 - 1 = 3)
    trains the same weights and the same metrics."""
    cfg = json.loads(json.dumps(smoke_cfg))
    cfg["classify"].update({"epochs": 2, "loader": "stream", "streams": 3, "shuffle_buffer": 16, "mixup": 0.2})
    runs = {}
    for name, workers, env in (("main", 0, None), ("two", 2, None), ("auto", "auto", {"SLURM_CPUS_PER_GPU": "4"})):
        cfg["classify"]["num_workers"] = workers
        runs[name] = tmp_path / name
        runs[name].mkdir()
        _classify(real_inputs, cfg, runs[name], 1, env=env)
    assert "3 streams read by 3 loader processes" in (runs["auto"] / "log.txt").read_text()
    assert "3 streams read by 0 loader processes" in (runs["main"] / "log.txt").read_text()
    ref = torch.load(runs["main"] / "model.pt", weights_only=True)["state_dict"]
    for name in ("two", "auto"):
        other = torch.load(runs[name] / "model.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(ref[k], other[k]) for k in ref), name
        assert (json.loads((runs[name] / "metrics.json").read_text())["top1"]
                == json.loads((runs["main"] / "metrics.json").read_text())["top1"])


@pytest.mark.slow
def test_classifier_on_two_processes_resumes_identically(real_inputs, smoke_cfg, tmp_path):
    cfg = json.loads(json.dumps(smoke_cfg))
    cfg["classify"].update({"epochs": 4, "checkpoint_every": 1, "loader": "stream", "num_workers": 1,
                            "shuffle_buffer": 16, "mixup": 0.2})
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _classify(real_inputs, cfg, a, 2)
    proc = _classify(real_inputs, cfg, b, 2, env={"REALFAKE_TEST_KILL": "classify:2"}, check=False)
    assert proc.returncode != 0  # torchrun reports its killed workers as a failure
    assert (b / "model.pt.ckpt").exists() and not (b / "model.pt").exists()
    _classify(real_inputs, cfg, b, 2)
    assert "epoch 2 of 4" in (b / "log.txt").read_text()
    sa = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert json.loads((a / "metrics.json").read_text())["top1"] == json.loads((b / "metrics.json").read_text())["top1"]


def test_a_job_granted_gpus_that_torch_cannot_see_stops(monkeypatch):
    """Slurm's --gpus sets CUDA_VISIBLE_DEVICES; a CPU-only torch or a too-old driver must not
    train on the CPU silently: the node, the grant and torch's CUDA state are named."""
    from types import SimpleNamespace

    from realfake.distributed import check_gpus, granted_gpus
    from realfake.errors import DeviceError

    assert granted_gpus({}) == [] and granted_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert granted_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == [] and granted_gpus({"CUDA_VISIBLE_DEVICES": "0,3"}) == ["0", "3"]
    check_gpus({})  # no grant: the CPU is what was asked for
    none = SimpleNamespace(is_available=lambda: False, device_count=lambda: 0)
    with pytest.raises(DeviceError, match=r"granted 2 GPU\(s\) \(CUDA_VISIBLE_DEVICES=0,1\) on node .* torch sees 0 .*"
                                          r"is_available\(\) = False"):
        check_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}, none)
    one = SimpleNamespace(is_available=lambda: True, device_count=lambda: 1)
    with pytest.raises(DeviceError, match="granted 2 GPU"):
        check_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}, one)
    check_gpus({"CUDA_VISIBLE_DEVICES": "0"}, one)
