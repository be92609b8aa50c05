"""Quality stage: FID/KID/precision-recall against known answers, the filter, the feature extractors."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from realfake.config import load_config
from realfake.features import ClipFeatures, InceptionFeatures, extractor
from realfake.quality import keep_best, ordering, quality_table
from realfake.settings import Quality
from realfake.quality_metrics import frechet_distance, kid, precision_recall


def _gauss(n, d, seed, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_fid_exact_answers():
    a = _gauss(400, 6, 0)
    a -= a.mean(0)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    c = np.arange(6.0)
    assert frechet_distance(a, a + c) == pytest.approx(c @ c, rel=1e-9)  # same covariance: mean term only
    # cov(2a) = 4S: Tr(S + 4S - 2 (S^1/2 4S S^1/2)^1/2) = Tr(S)
    assert frechet_distance(a, 2 * a) == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-8)


def test_fid_of_rank_deficient_small_sets_is_finite():
    a, b = _gauss(5, 32, 1), _gauss(6, 32, 2)
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0
    assert np.isnan(frechet_distance(a[:1], b))


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_shift():
    same = [kid(_gauss(300, 8, s), _gauss(300, 8, 100 + s), 20, 100, s)[0] for s in range(5)]
    assert abs(np.mean(same)) < 0.02
    assert min(same) < 0 < max(same) or abs(np.mean(same)) < 0.005  # unbiased: no floor at zero
    near = kid(_gauss(300, 8, 0), _gauss(300, 8, 1, shift=0.5), 20, 100, 0)[0]
    far = kid(_gauss(300, 8, 0), _gauss(300, 8, 1, shift=2.0), 20, 100, 0)[0]
    assert 0.05 < near < far


def test_precision_recall_identical_disjoint_and_mode_collapse():
    real = np.concatenate([_gauss(200, 2, 0), _gauss(200, 2, 1, shift=20.0)])
    assert precision_recall(real, real, 3) == (1.0, 1.0)
    p, r = precision_recall(real, real + 1000.0, 3)
    assert p == 0.0 and r == 0.0
    collapsed = _gauss(200, 2, 2)  # covers one of the two real modes only
    p, r = precision_recall(real, collapsed, 3)
    assert p > 0.9 and 0.4 < r < 0.6


def test_keep_best_keeps_the_top_fraction_of_each_class_in_order():
    m = pd.DataFrame({"image_id": [f"i{k}" for k in range(8)], "label": [0, 0, 0, 0, 1, 1, 1, 1]})
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.8, 0.1])
    kept = keep_best(m, scores, 0.5)
    assert kept.image_id.tolist() == ["i1", "i3", "i5", "i6"]
    assert kept.filter_score.tolist() == [0.9, 0.7, 0.3, 0.8]
    assert len(keep_best(m, scores, 0.01)) == 2  # never an empty class
    assert keep_best(m.head(7), scores[:7], 0.5).label.tolist() == [0, 0, 1, 1]  # 3 of class 1 -> 2: half up


def _sets(fids, top1):
    tables = {"table1_baseline": "a", "table1_method": "c", "table1_caption_baseline": None, "table1_official": None,
              "table2_variants": ["a", "b", "c"], "table2_seeds": None, "table3_seeds": None, "scale": 1, "table2_scale": 1}
    cfg = {"tables": tables,
           "variants": {v: {"label": v.upper()} for v in "abc"}, "quality": {"filter": "none", "keep_fraction": 1}}
    sets = pd.DataFrame([{"dataset": "d", "variant": v, "which": "manifest", "scale": 1, "seed": 0, "class": "all",
                          "n_real": 10, "n_syn": 10, "fid": f, "kid": f / 100, "precision": 1 - f / 10,
                          "recall": 0.5, "extractor": "x"} for v, f in zip("abc", fids)])
    metrics = pd.DataFrame([{"dataset": "d", "setting": "syn", "variant": v, "scale": 1, "seed": 0, "top1": t}
                            for v, t in zip("abc", top1)])
    return quality_table(sets, metrics, cfg)


def test_ordering_reports_agreement_and_disagreement():
    agree = ordering(_sets([3.0, 2.0, 1.0], [10.0, 20.0, 30.0])).set_index("metric")
    assert agree.loc["fid", "spearman_rho_vs_syn_top1"] == pytest.approx(-1) and agree.loc["fid", "agrees"]
    assert agree.loc["precision", "agrees"]
    assert np.isnan(agree.loc["recall", "spearman_rho_vs_syn_top1"])  # constant: no ordering
    assert not agree.loc["recall", "agrees"]
    disagree = ordering(_sets([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])).set_index("metric")
    assert disagree.loc["fid", "spearman_rho_vs_syn_top1"] == pytest.approx(1) and not disagree.loc["fid", "agrees"]


def test_quality_table_joins_top1_per_variant():
    t = _sets([3.0, 2.0, 1.0], [10.0, 20.0, 30.0])
    assert t.variant.tolist() == ["a", "b", "c"] and t.syn_top1.tolist() == [10.0, 20.0, 30.0]
    assert t.label.tolist() == ["A", "B", "C"] and t.realsyn_top1.isna().all()


def _images(n, size=40):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_inception_features_from_a_local_torchvision_state_dict(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    ext = InceptionFeatures(str(weights), batch_size=2)
    feats = ext(_images(3))
    assert feats.shape == (3, 2048) and np.isfinite(feats).all()
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a torchvision Inception-v3 state dict .*quality.inception"):
        InceptionFeatures(str(tmp_path / "other.pth"))
    with pytest.raises(ValueError, match="quality.inception"):
        InceptionFeatures(str(tmp_path / "missing.pth"))
    q = Quality.of(load_config(overrides={"quality": {"features": "inception", "inception": None}}))
    with pytest.raises(ValueError, match="set models.inception"):
        extractor(q, "realfake-tiny-vit", 32, None, None)
    assert extractor(q, "realfake-tiny-vit", 32, None, None, str(weights)).name.endswith(f"{weights})")


def test_clip_score_prefers_the_prompt_of_the_matching_class(tmp_path):
    from realfake.models import write_random_open_clip

    ckpt = tmp_path / "clip.pt"
    write_random_open_clip("realfake-tiny-vit", 0, ckpt)
    ext = ClipFeatures("realfake-tiny-vit", str(ckpt), batch_size=4)
    images = _images(4, 32)
    feats = ext(images)
    assert feats.shape == (4, 64) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    a = ext.clip_score(images, ["cat"] * 4)
    b = ext.clip_score(images, ["dog"] * 4)
    assert a.shape == (4,) and np.all(np.abs(a) <= 1 + 1e-6) and not np.allclose(a, b)


def test_precision_recall_in_small_blocks_equals_one_block(monkeypatch):
    """The blocked pass (a few rows of distances at a time) gives exactly the full-matrix answer."""
    import realfake.quality_metrics as qm

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(300, 8)), rng.normal(0.3, 1.2, size=(250, 8))
    whole = qm.precision_recall(real, fake, 3)
    monkeypatch.setattr(qm, "PAIRWISE_BYTES", 8 * 300 * 7)  # 7 rows per block
    assert qm._rows_per_block(300) == 7
    assert qm.precision_recall(real, fake, 3) == whole
    assert 0.2 < whole[0] < 1.0 and 0.2 < whole[1] < 1.0
