"""`make rehearsal-full` (realfake.tools.fullsize): the real architectures it builds, and its stage runner
end to end on the toy models (the full-size run itself takes 11 minutes on 2 cores: make rehearsal-full)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from realfake.tools import fullsize


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sd15_configs_build_the_published_architecture():
    """Built on the meta device (no memory): SD 1.5's UNet, VAE and text encoder have the parameter
    counts of the released checkpoints (859,520,964 / 83,653,863 / 123,060,480)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**fullsize.SD15_UNET)
        vae = AutoencoderKL(**fullsize.SD15_VAE)
        text = CLIPTextModel(CLIPTextConfig(**fullsize.SD15_TEXT))
    assert (_params(unet), _params(vae), _params(text)) == (859_520_964, 83_653_863, 123_060_480)
    assert text.config.max_position_embeddings == 77 and unet.config.cross_attention_dim == 768


def test_paper_arch_reads_the_config_sizes():
    arch = fullsize.arch_of("paper", fullsize.load_config(fullsize.CONFIG))
    assert (arch["sd_size"], arch["classify_size"], arch["clip"], arch["width"]) == (512, 224, "ViT-L-14", 768)


@pytest.mark.slow
def test_fullsize_runs_every_stage_on_toy_models(tmp_path):
    """The runner end to end (child process per stage, warm-up excluded, CSV after every stage) on
    the toy models, the official-style generation loop included."""
    out = tmp_path / "out"
    stages = [s for s in fullsize.STAGES if s != "generate_compiled"]  # inductor's C++ build: minutes on 2 cores
    proc = subprocess.run([sys.executable, "-m", "realfake.tools.fullsize", "--arch", "tiny", "--device", "cpu",
                           "--out", str(out), "--work", str(tmp_path),
                           "--stages", *stages], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    df = pd.read_csv(out / "fullsize.csv")
    assert list(df.columns) == fullsize.COLUMNS
    assert list(df.stage) == stages
    assert (df.seconds_per_item > 0).all() and (df.peak_rss_mb > 100).all()
    assert (df.startup_s > 0).all()  # every stage's process reported when its models were loaded
    assert ((df.items_per_s * df.seconds_per_item - 1).abs() < 1e-3).all()
    assert df.set_index("stage").batch["finetune"] == fullsize.SIZES["cpu"]["finetune_batch"]
    summary = json.loads((out / "fullsize.json").read_text())
    assert summary["failed"] == [] and summary["generate_speedup_vs_official"] > 0
    assert list(tmp_path.glob("realfake-fullsize-*")) == []  # the models and images are removed


def test_fullsize_rejects_cuda_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = subprocess.run([sys.executable, "-m", "realfake.tools.fullsize", "--device", "cuda", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "no CUDA device" in proc.stderr
