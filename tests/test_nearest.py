"""Copy check: descriptors and nearest-neighbour search (SSCD path on a tiny TorchScript model)."""

import numpy as np
import pytest
import torch
from PIL import Image

from realfake.config import ConfigError
from realfake.nearest import load_sscd, pixels16, sscd_descriptors, top_matches


def img(seed, size=32):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_pixels16_finds_the_copy_and_ignores_brightness():
    real = [img(s) for s in range(20)]
    copy = Image.fromarray(np.clip(np.asarray(real[7], dtype=np.int16) + 20, 0, 255).astype(np.uint8))
    idx, sim = top_matches(pixels16([copy]), pixels16(real), 3)
    assert idx[0, 0] == 7 and sim[0, 0] > 0.95 and sim[0, 1] < 0.5
    assert np.all(np.diff(sim[0]) <= 0)


class TinyDescriptor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_sscd_path_loads_torchscript_and_normalises(tmp_path):
    torch.manual_seed(0)
    torch.jit.script(TinyDescriptor()).save(str(tmp_path / "sscd.pt"))
    model = load_sscd(str(tmp_path / "sscd.pt"))
    ims = [img(1), img(2, size=40), img(1)]  # batched by preprocessed shape, returned in input order
    d = sscd_descriptors(model, ims)
    assert d.shape == (3, 8) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    assert np.allclose(d[0], d[2], atol=1e-6)


def test_sscd_bad_paths_are_named(tmp_path):
    with pytest.raises(ConfigError, match="SSCD TorchScript file not found at .*nope.pt \\(config key models.sscd\\)"):
        load_sscd(str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt is not a TorchScript model"):
        load_sscd(str(tmp_path / "junk.pt"))


def test_running_top_k_over_blocks_equals_one_search():
    """The real set in shuffled blocks (any order of rows) gives the same top-k, ties to the lower
    index, as one search over the whole matrix with a stable sort."""
    from realfake.nearest import TopK

    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(6, 5)), rng.normal(size=(50, 5))
    r[17] = r[3]  # a tie
    sim = q @ r.T
    want = np.argsort(-sim, axis=1, kind="stable")[:, :4]
    rows = rng.permutation(50)
    best = TopK(6, 4)
    for block in np.array_split(rows, 7):
        best.update(q @ r[block].T, block)
    assert (best.idx == want).all() and np.allclose(best.sim, np.take_along_axis(sim, want, axis=1))


def test_sscd_descriptor_width_is_checked_on_load(tmp_path):
    """The paper's copy check is sscd_disc_large (1024-d); a model of another width (the 512-d
    sscd_disc_mixup) stops at load with the file and the key named."""
    torch.jit.script(TinyDescriptor()).save(str(tmp_path / "sscd.pt"))
    assert load_sscd(str(tmp_path / "sscd.pt"), width=8) is not None
    with pytest.raises(ValueError, match=r"sscd.pt gives 8-d descriptors, not the 1024 of config key nearest.descriptor_width"):
        load_sscd(str(tmp_path / "sscd.pt"), width=1024)
