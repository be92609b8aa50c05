"""realfake.tools.look: the above-grid energy share behind docs/mini-world.md."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from realfake.tools.look import above_grid_share, main, table
from realfake.shards import ShardWriter


def upsampled(seed: int, grid: int = 8, size: int = 32) -> np.ndarray:
    """A random grid x grid image upsampled bilinearly, as the mini world's real digits are."""
    small = np.random.default_rng(seed).random((grid, grid)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.BILINEAR), dtype=np.float64)


def checkerboard(size: int = 32) -> np.ndarray:
    return (np.indices((size, size)).sum(0) % 2).astype(np.float64)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.rint(arr * 255).astype(np.uint8)).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_pixel_detail_is_all_above_the_grid_and_an_upsampled_grid_image_almost_none():
    assert above_grid_share(checkerboard()) == pytest.approx(1.0)
    # white noise on the 8x8 grid, upsampled: only what box-averaging misses of its finest detail
    smooth = [above_grid_share(upsampled(s)) for s in range(5)]
    assert max(smooth) < 0.2
    # white noise at 32 px: nearly all of it is finer than the grid
    crisp = [above_grid_share(np.random.default_rng(s).random((32, 32))) for s in range(5)]
    assert min(crisp) > 0.8
    # a coarser grid keeps less of the same image
    assert above_grid_share(upsampled(0), grid=4) > above_grid_share(upsampled(0), grid=8)


def test_flat_and_non_square_images():
    assert np.isnan(above_grid_share(np.full((32, 32), 0.5)))
    with pytest.raises(ValueError, match="square grayscale"):
        above_grid_share(np.zeros((32, 16)))


def test_table_reads_the_real_split_and_shards(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = []
    for i in range(4):
        path = f"data/{i}.png"
        (tmp_path / "data").mkdir(exist_ok=True)
        Image.open(io.BytesIO(png(upsampled(i)))).save(path)
        rows.append({"path": path, "split": "train" if i < 3 else "test"})
    pd.DataFrame(rows).to_parquet("index.parquet")
    writer = ShardWriter(tmp_path / "sets/crisp/00000.tar", [["a", "b"]], "f")
    writer.write_batch([("a", png(checkerboard()), 0), ("b", png(1 - checkerboard()), 1)])
    writer.close()

    out = table("index.parquet", {"crisp": "sets/crisp/*.tar"})
    assert out["set"].tolist() == ["real (train split)", "crisp"]
    assert out["images"].tolist() == [3, 2]
    assert out["above_grid_share"].iloc[0] < 0.2
    assert out["above_grid_share"].iloc[1] == pytest.approx(1.0)

    with pytest.raises(FileNotFoundError, match="no shard matches"):
        table("index.parquet", {"none": "sets/none/*.tar"})
    with pytest.raises(SystemExit):
        main(["--real-index", "index.parquet", "--set", "no-equals-sign"])
    assert "NAME=GLOB" in capsys.readouterr().err


def test_vae_round_trip_is_batched_and_per_image(tmp_path, monkeypatch):
    """The VAE row reads every real training image once, whatever the batch size, and a batch of one
    gives the same arrays as one batch of all (GroupNorm is per image)."""
    import torch
    from diffusers import AutoencoderKL

    from realfake.tools.look import vae_round_trip

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4,
                  sample_size=32).save_pretrained("vae")
    (tmp_path / "data").mkdir()
    rows = []
    for i in range(3):
        Image.open(io.BytesIO(png(upsampled(i)))).save(f"data/{i}.png")
        rows.append({"path": f"data/{i}.png", "split": "train"})
    pd.DataFrame(rows).to_parquet("index.parquet")

    paths = [r["path"] for r in rows]
    one_by_one, all_at_once = list(vae_round_trip("vae", paths, batch=1)), list(vae_round_trip("vae", paths, batch=3))
    assert len(one_by_one) == 3 and all(a.shape == (32, 32) for a in one_by_one)
    for a, b in zip(one_by_one, all_at_once):
        np.testing.assert_allclose(a, b, atol=1e-5)
    out = table("index.parquet", {}, vae="vae")
    assert out["set"].tolist() == ["real (train split)", "real through the VAE"]
    assert out["images"].tolist() == [3, 3]
    assert 0 <= out["above_grid_share"].iloc[1] <= 1
