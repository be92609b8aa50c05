"""Shared fixtures: tiny random Stable Diffusion pipelines, a real index, the smoke workflow run."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))

from realfake.config import load_config  # noqa: E402


def _no_slurm_controller_bin() -> Path:
    """A folder with an ``scontrol`` that fails at once. Snakemake's Slurm executor plugin runs
    ``scontrol show config`` when it is imported, on every ``snakemake`` start; on a machine with the
    Slurm client installed but no controller running (this suite's machines: the Slurm test starts
    its own) it waits 9 s for its timeout. None of the tests here talks to Slurm (``make slurm-test``
    does, with the real tools), so they get this stand-in first on PATH."""
    d = Path(tempfile.mkdtemp(prefix="realfake-noslurm-"))
    atexit.register(shutil.rmtree, d, True)
    tool = d / "scontrol"
    tool.write_text("#!/bin/sh\necho 'scontrol: no Slurm controller in the test suite' >&2\nexit 1\n")
    tool.chmod(0o755)
    return d


NO_SLURM_BIN = _no_slurm_controller_bin()
os.environ["PATH"] = f"{NO_SLURM_BIN}:{os.environ.get('PATH', '')}"  # subprocesses the tools start inherit it


def snakemake_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO / "workflow_scripts")
    return env


def run_snakemake(workdir: Path, *args: str, check: bool = True, env=None) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**snakemake_env(), **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def run_cli(module: str, *args: str, check: bool = True, cwd=None, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", f"realfake.{module}", *args], capture_output=True, text=True,
                          env={**snakemake_env(), **(env or {})}, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def smoke_cfg() -> dict:
    return load_config(REPO / "config" / "smoke.yaml")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """An untrained tiny StableDiffusionPipeline folder (same classes and layout as SD 1.5)."""
    from realfake.tiny_sd import build_tiny_pipeline, build_tokenizer

    out = tmp_path_factory.mktemp("tiny_base")
    tok = build_tokenizer(out / "_tok")
    pipe = build_tiny_pipeline(tok, seed=0)
    pipe.save_pretrained(out / "pipe")
    return out / "pipe"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke config through snakemake, every target of make demo-all (minutes)."""
    work = tmp_path_factory.mktemp("smoke_run")
    run_snakemake(work, "all_ablation", "--configfile", str(REPO / "config" / "smoke.yaml"))
    return work


@pytest.fixture(scope="session")
def real_inputs(smoke_run) -> dict:
    """Paths of the smoke run's stage inputs, for tests that call one stage's CLI directly."""
    r = smoke_run / "results"
    return {"workdir": smoke_run, "index": r / "smoke" / "real_index.parquet", "captions": r / "smoke" / "captions.parquet",
            "means": r / "smoke" / "class_means.pt", "embeddings": r / "smoke" / "embeddings.pt",
            "base": r / "base_model" / "tiny", "lora": r / "smoke" / "lora" / "full" / "s0" / "lora.safetensors"}


def cfg_json(cfg: dict) -> str:
    return json.dumps(cfg)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


SLOW_FIXTURES = {"smoke_run", "real_inputs"}


def pytest_collection_modifyitems(config, items):
    """Every test that needs the smoke workflow run (minutes) is slow, whatever module it is in."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
