"""The benchmark's own pieces: FLOP counting and the loading comparison (speed itself is `make bench`)."""

import pytest
import pandas as pd

from realfake.tools.bench import bench_loading, unet_flops_per_image

from conftest import run_cli

pytestmark = pytest.mark.slow  # minutes: end-to-end runs through real stage code


def test_unet_flops_scale_with_denoising_steps(tiny_base):
    from realfake.models import load_pipeline

    pipe = load_pipeline(str(tiny_base))
    f10 = unet_flops_per_image(pipe, 32, 10, 1.0)
    f20 = unet_flops_per_image(pipe, 32, 20, 1.0)
    assert f10 > 1e6 and f20 == 2 * f10
    assert unet_flops_per_image(pipe, 32, 20, 0.75) == 15 * f10 / 10  # img2img runs int(20 * 0.75) steps
    assert unet_flops_per_image(pipe, 64, 10, 1.0) > 3 * f10  # 4x the latent pixels


def test_loading_bench_reads_every_image_from_both_sources(tmp_path):
    df = bench_loading(tmp_path, quick=True)
    assert set(df.source) == {"files", "shards"} and (df.images == 512).all()
    assert set(df[df.source == "shards"].files_opened) == {4}
    assert (df.img_per_s > 0).all()


def test_bench_cli_writes_csv(tmp_path):
    run_cli("tools.bench", "--quick", "--only", "loading", "--out", str(tmp_path / "bench"))
    assert len(pd.read_csv(tmp_path / "bench" / "loading.csv")) == 4


def test_bench_decode_measures_every_recipe(tmp_path):
    """make bench's decode part: CPU ms per 512 px JPEG through each classifier recipe's transform."""
    run_cli("tools.bench", "--quick", "--only", "decode", "--out", str(tmp_path / "bench"))
    df = pd.read_csv(tmp_path / "bench" / "decode.csv")
    assert list(df.input_size) == [224, 448, 224] and (df.cpu_ms_per_image > 0).all() and (df.images > 0).all()


def test_bench_lora_step_splits_the_step_in_both_precisions(tmp_path):
    """make bench's lora_step part: each of the four parts of a step timed, with the frozen VAE and
    text encoder in float32 and in half precision (bfloat16 on a CPU)."""
    run_cli("tools.bench", "--quick", "--only", "lora_step", "--out", str(tmp_path / "bench"))
    df = pd.read_csv(tmp_path / "bench" / "lora_step.csv")
    assert set(df.frozen_dtype) == {"float32", "bfloat16"} and len(df) == 8
    assert set(df.part) == {"vae_encode", "text_encoder", "unet_forward", "unet_backward"}
    assert (df.seconds > 0).all()
    assert ((df.groupby("frozen_dtype").share_of_step.sum() - 1).abs() < 1e-3).all()  # CSV keeps 4 digits
