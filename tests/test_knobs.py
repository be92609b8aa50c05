"""Every method knob reaches the place where it acts: a value changed in the config is seen by a
spy on the pipeline call (generation) or on the loss (fine-tuning), running each stage's own entry
point in process on a tiny base model, so a broken wire fails a quick test."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import realfake.finetune as finetune_stage
import realfake.generate as generate_stage
import realfake.lora as lora_lib
from realfake.config import load_config

from conftest import REPO

SIZE = 32
WIDTH = 64  # the tiny text encoder's hidden size: the guidance embeddings' width


@pytest.fixture(scope="module")
def world(tiny_base, tmp_path_factory):
    """Six real images of two classes, their index, captions, class means, per-image embeddings and
    a LoRA file for the tiny base model."""
    from realfake.lora import add_lora, save_lora
    from realfake.models import load_pipeline

    root = tmp_path_factory.mktemp("knobs")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        rows.append((f"train/c{i % 2}/{i}", "train", i % 2, ["zero", "one"][i % 2], str(path)))
    index = pd.DataFrame(rows, columns=["image_id", "split", "label", "class_name", "path"])
    index.to_parquet(root / "index.parquet")
    pd.DataFrame({"image_id": index.image_id, "caption": "a caption"}).to_parquet(root / "captions.parquet")
    torch.save({"means": {0: torch.full((WIDTH,), 3.0), 1: torch.full((WIDTH,), -3.0)}}, root / "means.pt")
    torch.save({"image_id": list(index.image_id), "embedding": torch.randn(6, WIDTH)}, root / "embeddings.pt")
    pipe = load_pipeline(tiny_base)
    add_lora(pipe.unet, 4)
    save_lora(pipe.unet, root / "lora.safetensors")
    return SimpleNamespace(root=root, base=tiny_base)


def config(**sections) -> dict:
    overrides = {"generate": {"steps": 2, "batch_size": 6, "classes_per_shard": 10}, "datasets": {"smoke": {}}}
    for key, value in sections.items():
        overrides[key] = {**overrides.get(key, {}), **value}
    return load_config(REPO / "config" / "smoke.yaml", overrides=overrides)


class Spy:
    """Stands for a pipeline: attributes come from the real one, calls are recorded and answered
    with grey images."""

    def __init__(self, pipe, calls):
        self._pipe, self._calls = pipe, calls

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, **kw):
        self._calls.append(kw)
        return SimpleNamespace(images=np.full((len(kw["prompt_embeds"]), SIZE, SIZE, 3), 0.5, np.float32))


def generate_calls(world, cfg, tmp_path, monkeypatch, variant="ours") -> list[dict]:
    calls = []
    real = generate_stage.pipelines_for
    monkeypatch.setattr(generate_stage, "pipelines_for",
                        lambda *a, **k: tuple(Spy(p, calls) for p in real(*a, **k)))
    r = world.root
    args = ["shard", "--cfg", json.dumps(cfg), "--dataset", "smoke", "--variant", variant, "--seed", "0",
            "--scale", "1", "--shard", "0", "--shards", "1", "--base", str(world.base), "--index", str(r / "index.parquet"),
            "--captions", str(r / "captions.parquet"), "--means", str(r / "means.pt"),
            "--embeddings", str(r / "embeddings.pt"), "--shard-out", str(tmp_path / "s.tar"),
            "--rows-out", str(tmp_path / "s.parquet")]
    if cfg["variants"][variant]["lora"]:
        args += ["--lora", str(r / "lora.safetensors")]
    generate_stage.main(args)
    assert calls, "the pipeline was never called"
    return calls


@pytest.mark.parametrize("knob, key, value", [
    ("generate.lora_scale", "cross_attention_kwargs", 0.25),
    ("generate.lora_scale", "cross_attention_kwargs", 0.8),
    ("generate.strength", "strength", 0.4),
    ("generate.strength", "strength", 0.9),
    ("generate.cfg", "guidance_scale", 3.5),
    ("generate.steps", "num_inference_steps", 4),
])
def test_generation_knob_reaches_the_pipeline_call(world, tmp_path, monkeypatch, knob, key, value):
    section, name = knob.split(".")
    calls = generate_calls(world, config(**{section: {name: value}}), tmp_path, monkeypatch)
    seen = {c[key]["scale"] if key == "cross_attention_kwargs" else c[key] for c in calls}
    assert seen == {value}


def test_latent_prior_and_prompt_template_reach_the_pipeline(world, tmp_path, monkeypatch):
    """latent_prior true calls img2img with the real images; false calls text-to-image; a variant's
    prompt_template changes the text states the pipeline gets."""
    ours = generate_calls(world, config(), tmp_path / "a", monkeypatch)
    assert all("image" in c and "strength" in c for c in ours)
    t2i = generate_calls(world, config(variants={"ours": {"latent_prior": False}}), tmp_path / "b", monkeypatch)
    assert all("image" not in c and c["height"] == SIZE for c in t2i)
    other = generate_calls(world, config(variants={"ours": {"latent_prior": False, "prompt_template": "a drawing of {classname}"}}),
                           tmp_path / "c", monkeypatch)
    assert not torch.equal(t2i[0]["prompt_embeds"][:, :-1], other[0]["prompt_embeds"][:, :-1])


def test_guidance_token_on_and_off_at_generation(world, tmp_path, monkeypatch):
    """guidance class_mean replaces only the last token position; none leaves the text states as they are."""
    on = generate_calls(world, config(), tmp_path / "on", monkeypatch)[0]["prompt_embeds"]
    off = generate_calls(world, config(variants={"ours": {"guidance": "none"}}), tmp_path / "off", monkeypatch)[0]["prompt_embeds"]
    assert torch.equal(on[:, :-1], off[:, :-1]) and not torch.allclose(on[:, -1], off[:, -1])


def finetune_spy(world, cfg, tmp_path, monkeypatch) -> dict:
    seen = {"dm_weight": set(), "token": set(), "images": []}
    real_loss, real_inject, real_images = lora_lib.realfake_loss, lora_lib.inject_guidance, finetune_stage.TrainImages

    def loss(pred, noise, acp, t, gamma, dm_weight, group):
        seen["dm_weight"].add(dm_weight)
        return real_loss(pred, noise, acp, t, gamma, dm_weight, group)

    def inject(hidden, token, rescale=False):
        seen["token"].add(token is not None)
        return real_inject(hidden, token, rescale)

    def images(paths, *a, **k):
        seen["images"].append(len(paths))
        return real_images(paths, *a, **k)

    monkeypatch.setattr(lora_lib, "realfake_loss", loss)
    monkeypatch.setattr(lora_lib, "inject_guidance", inject)
    monkeypatch.setattr(finetune_stage, "TrainImages", images)
    r = world.root
    finetune_stage.main(["train", "--cfg", json.dumps(cfg), "--dataset", "smoke", "--lora", "full", "--seed", "0",
                         "--base", str(world.base), "--index", str(r / "index.parquet"),
                         "--captions", str(r / "captions.parquet"), "--means", str(r / "means.pt"),
                         "--embeddings", str(r / "embeddings.pt"), "--out", str(tmp_path / "lora.safetensors")])
    return seen


FT = {"steps": 1, "batch_size": 2, "checkpoint_every": 0}


@pytest.mark.parametrize("dm_weight", [0.0, 0.01])
def test_dm_weight_reaches_the_loss(world, tmp_path, monkeypatch, dm_weight):
    seen = finetune_spy(world, config(finetune=FT, loras={"full": {"dm_weight": dm_weight}}), tmp_path, monkeypatch)
    assert seen["dm_weight"] == {dm_weight}
    curve = pd.read_csv(tmp_path / "lora.safetensors.loss.csv")  # the loss curve beside the LoRA
    assert list(curve.columns) == ["step", "loss", "min_snr", "dm"] and len(curve) == FT["steps"]
    assert curve.loss[0] == pytest.approx(curve.min_snr[0] + dm_weight * curve.dm[0], rel=1e-5)


@pytest.mark.parametrize("guidance, token", [("class_mean", True), ("per_image", True), ("none", False)])
def test_guidance_token_on_and_off_in_fine_tuning(world, tmp_path, monkeypatch, guidance, token):
    seen = finetune_spy(world, config(finetune=FT, loras={"full": {"guidance": guidance}}), tmp_path, monkeypatch)
    assert seen["token"] == {token}


@pytest.mark.parametrize("fraction, n", [(1.0, 6), (0.5, 4), (0.34, 2)])
def test_train_fraction_reaches_the_lora_training_set(world, tmp_path, monkeypatch, fraction, n):
    """Two classes of 3 images: 0.5 keeps round(1.5) = 2 of each, 0.34 one of each."""
    seen = finetune_spy(world, config(finetune={**FT, "train_fraction": fraction}), tmp_path, monkeypatch)
    assert seen["images"] == [n]
