"""Model loading from local paths only: clear errors for missing, wrong or hub-id paths."""

import pytest
import torch

from realfake.config import ConfigError
from realfake.models import create_open_clip, load_pipeline, write_random_open_clip


def test_missing_model_folder_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=f"Stable Diffusion pipeline folder not found at {tmp_path / 'sd'} "
                                          r"\(config key models.sd15\)"):
        load_pipeline(tmp_path / "sd")


def test_hub_id_is_recognised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="looks like a hub id: give it as {hub: <id>, revision"):
        load_pipeline("runwayml/stable-diffusion-v1-5")


def test_folder_without_model_index_is_rejected(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ConfigError, match="is not a diffusers pipeline folder \\(no model_index.json\\)"):
        load_pipeline(tmp_path)


def test_tiny_pipeline_loads_through_the_paper_code_path(tiny_base):
    pipe = load_pipeline(tiny_base)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.text_encoder.config.hidden_size == pipe.unet.config.cross_attention_dim == 64


def test_open_clip_local_checkpoint_round_trip(tmp_path):
    write_random_open_clip("realfake-tiny-vit", seed=3, out=tmp_path / "enc.pt")
    a, preprocess = create_open_clip("realfake-tiny-vit", tmp_path / "enc.pt")
    b, _ = create_open_clip("realfake-tiny-vit", tmp_path / "enc.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ea, eb = a.encode_image(x), b.encode_image(x)
    assert ea.shape == (2, 64) and torch.equal(ea, eb)
    with pytest.raises(ConfigError, match="open_clip checkpoint not found at .*nope.pt \\(config key models.clip\\)"):
        create_open_clip("realfake-tiny-vit", tmp_path / "nope.pt")


def test_generation_pipelines_share_weights_and_use_sdpa(tiny_base):
    from diffusers.models.attention_processor import AttnProcessor2_0

    from realfake.synthesis import make_pipelines

    text2img, img2img = make_pipelines(str(tiny_base), None, "cpu", torch.float32)
    assert img2img.unet is text2img.unet  # one model load per job, both pipelines
    procs = set(map(type, text2img.unet.attn_processors.values()))
    assert procs == {AttnProcessor2_0}  # torch.nn.functional.scaled_dot_product_attention
    assert type(text2img.scheduler).__name__ == "UniPCMultistepScheduler"


@pytest.mark.slow
def test_tiny_blip2_captions_through_the_caption_stage(tmp_path):
    """BLIP-2 from a local folder (config key models.blip2), greedy and batched: the stage writes one
    caption per training image, the same with any batch size, and names a missing folder."""
    import json

    import numpy as np
    import pandas as pd
    from PIL import Image

    from conftest import run_cli
    from realfake.tiny_models import build_tiny_blip2

    from realfake.config import load_config

    blip = build_tiny_blip2(tmp_path / "blip2")
    rows = []
    for i in range(5):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        rows.append({"image_id": f"i{i}", "split": "train", "label": i % 2, "class_name": f"c{i % 2}",
                     "path": str(path)})
    rows.append({**rows[0], "image_id": "t0", "split": "test"})
    pd.DataFrame(rows).to_parquet(tmp_path / "index.parquet")
    outs = {}
    for bs in (2, 5):
        cfg = load_config(overrides={"models": {"blip2": str(blip)}, "caption": {"batch_size": bs, "max_new_tokens": 4}})
        out = tmp_path / f"captions_{bs}.parquet"
        run_cli("caption", "captions", "--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.parquet"), "--out", str(out))
        outs[bs] = pd.read_parquet(out)
    caps = outs[2]
    assert caps.image_id.tolist() == [f"i{i}" for i in range(5)]
    assert caps.caption.map(lambda c: isinstance(c, str) and 0 < len(c.split()) <= 4).all()
    assert caps.equals(outs[5])
    # chunks of 2 images decoded by 2 loader workers; killed after the first chunk, then rerun
    cfg = load_config(overrides={"models": {"blip2": str(blip)}, "caption": {"batch_size": 2, "max_new_tokens": 4}})
    out = tmp_path / "resumed.parquet"
    args = ["caption", "captions", "--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.parquet"),
            "--out", str(out), "--chunk", "2", "--threads", "2"]
    proc = run_cli(*args, check=False, env={"REALFAKE_TEST_KILL": "caption:1"})
    assert proc.returncode == -9 and not out.exists()
    assert sorted(p.name for p in (tmp_path / "resumed.parquet.chunks").iterdir()) == ["000000.pt", "fingerprint.json"]
    log = tmp_path / "resume.log"
    run_cli(*args, "--log", str(log))
    assert "1 of 3 chunks already done" in log.read_text()
    assert pd.read_parquet(out).equals(caps) and not (tmp_path / "resumed.parquet.chunks").exists()
    cfg = load_config(overrides={"models": {"blip2": str(tmp_path / "nope")}})
    proc = run_cli("caption", "captions", "--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.parquet"),
                   "--out", str(tmp_path / "x.parquet"), check=False)
    assert proc.returncode == 2 and f"BLIP-2 folder not found at {tmp_path / 'nope'} (config key models.blip2)" in proc.stderr
    assert not (tmp_path / "x.parquet").exists()
