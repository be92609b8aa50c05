"""A saved lora.safetensors is a standard diffusers LoRA: loads, changes output, scale 0 = base."""

import numpy as np
import pytest
import torch

from realfake.config import load_config
from realfake.finetune import save_lora, train_lora
from realfake.models import load_pipeline
from realfake.settings import Finetune

from conftest import REPO


@pytest.fixture(scope="module")
def trained_lora(tiny_base, tmp_path_factory):
    cfg = load_config(REPO / "config" / "smoke.yaml",
                      overrides={"finetune": {"steps": 8, "lr": 0.05, "batch_size": 4}})
    pipe = load_pipeline(tiny_base)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    prompts = [f"a photo of the digit {i % 3}" for i in range(6)]
    guidance = torch.randn(6, 64)
    history = train_lora(pipe, images, prompts, guidance, Finetune.of(cfg), dm_weight=0.003, seed=0, rescale=True)
    out = tmp_path_factory.mktemp("lora") / "lora.safetensors"
    save_lora(pipe.unet, out)
    return out, history


def _sample(pipe, **kw):
    g = torch.Generator().manual_seed(123)
    return pipe("a photo of the digit 1", height=32, width=32, num_inference_steps=3, guidance_scale=2.0,
                generator=g, output_type="np", **kw).images


def test_lora_file_holds_only_unet_lora_weights(trained_lora):
    from safetensors.torch import load_file

    sd = load_file(trained_lora[0])
    assert sd, "empty LoRA file"
    assert all(k.startswith("unet.") and "lora" in k for k in sd), list(sd)[:5]
    assert all(np.isfinite(v.numpy()).all() for v in sd.values())


def test_lora_loads_into_stock_pipeline_and_changes_output(tiny_base, trained_lora):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_base, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    base = _sample(pipe)
    pipe.load_lora_weights(str(trained_lora[0].parent), weight_name=trained_lora[0].name)
    with_lora = _sample(pipe, cross_attention_kwargs={"scale": 1.0})
    zero = _sample(pipe, cross_attention_kwargs={"scale": 0.0})
    assert np.abs(with_lora - base).max() > 1e-3
    np.testing.assert_allclose(zero, base, atol=1e-5)


def test_training_history_is_finite_and_records_dm(trained_lora):
    history = trained_lora[1]
    assert len(history) == 8
    assert all(np.isfinite(h).all() for h in history)
    assert any(h[2] > 0 for h in history)  # the distribution-matching term was computed


def test_nan_loss_stops_with_step(tiny_base):
    cfg = load_config(REPO / "config" / "smoke.yaml", overrides={"finetune": {"steps": 3, "batch_size": 2}})
    pipe = load_pipeline(tiny_base)
    images = torch.full((2, 3, 32, 32), float("nan"))
    with pytest.raises(ValueError, match="at step 0"):
        train_lora(pipe, images, ["a", "b"], None, Finetune.of(cfg), dm_weight=0.003, seed=0, rescale=False)


def test_train_images_stream_uint8_and_steps_resume_alike(tmp_path):
    """Fine-tuning reads its images through a DataLoader (uint8, decoded on demand), and the batch
    of a step depends only on (seed, step), so a resumed run reads the same batches."""
    from PIL import Image

    from realfake.finetune import StepSampler, TrainImages

    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(paths[-1])
    ds = TrainImages([str(p) for p in paths], 8)
    assert ds[3].dtype == torch.uint8 and ds[3].shape == (3, 8, 8) and int(ds[3][0, 0, 0]) == 120
    whole = list(StepSampler(5, 4, 10, seed=3))
    assert len(whole) == 10 and all(len(b) == 4 and max(b) < 5 for b in whole)
    assert list(StepSampler(5, 4, 10, seed=3, start=6)) == whole[6:]
    assert list(StepSampler(5, 4, 10, seed=4)) != whole
    loader = torch.utils.data.DataLoader(ds, batch_sampler=StepSampler(5, 4, 2, seed=3), num_workers=2)
    batches = list(loader)
    assert [b.shape for b in batches] == [(4, 3, 8, 8)] * 2 and batches[0].dtype == torch.uint8
