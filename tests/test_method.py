"""The method core against hand computations."""

import torch

from realfake.method import (build_prompt, distribution_matching_loss, inject_guidance, min_snr_weights,
                             realfake_loss, snr, weighted_mse)


def test_min_snr_weights_match_formula():
    s = torch.tensor([0.5, 5.0, 20.0])
    w = min_snr_weights(s, gamma=5.0)
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 0.25]))


def test_snr_from_alphas_cumprod():
    acp = torch.tensor([0.9, 0.5, 0.2])
    got = snr(acp, torch.tensor([0, 2]))
    assert torch.allclose(got, torch.tensor([9.0, 0.25]))


def test_distribution_matching_hand_computed():
    # batch of 2, one channel, 1x2 "images"
    pred = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 0.0]]]])
    target = torch.tensor([[[[0.0, 1.0]]], [[[1.0, 1.0]]]])
    w = torch.tensor([1.0, 0.5])
    # weighted sums over batch: pred 1*[1,2] + 0.5*[3,0] = [2.5, 2]; target [0,1] + 0.5*[1,1] = [0.5, 1.5]
    # mse = ((2.0)^2 + (0.5)^2) / 2 = 2.125
    assert torch.isclose(distribution_matching_loss(pred, target, w), torch.tensor(2.125))


def test_weighted_mse_hand_computed():
    pred = torch.tensor([[[[1.0, 3.0]]], [[[0.0, 0.0]]]])
    target = torch.zeros_like(pred)
    w = torch.tensor([0.5, 2.0])
    # mse_b = [5, 0]; mean(w*mse) = (2.5 + 0) / 2
    assert torch.isclose(weighted_mse(pred, target, w), torch.tensor(1.25))


def test_losses_zero_when_prediction_equals_target():
    x = torch.randn(4, 4, 8, 8)
    acp = torch.linspace(0.99, 0.01, 1000)
    total, base, dm = realfake_loss(x, x.clone(), acp, torch.tensor([1, 10, 500, 999]), 5.0, 0.003)
    assert float(total) == 0.0 and float(base) == 0.0 and float(dm) == 0.0


def test_total_loss_adds_weighted_dm():
    torch.manual_seed(0)
    pred, target = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    acp = torch.linspace(0.99, 0.01, 1000)
    t = torch.tensor([5, 300, 900])
    total, base, dm = realfake_loss(pred, target, acp, t, 5.0, 0.003)
    w = min_snr_weights(snr(acp, t), 5.0)
    assert torch.isclose(dm, distribution_matching_loss(pred, target, w))
    assert torch.isclose(total, base + 0.003 * dm)
    assert dm > 0


def test_guidance_replaces_only_last_position():
    hidden = torch.randn(2, 16, 64)
    emb = torch.randn(2, 64)
    out = inject_guidance(hidden, emb)
    assert torch.equal(out[:, :-1], hidden[:, :-1])
    assert torch.equal(out[:, -1], emb)
    assert not torch.equal(hidden[:, -1], emb)  # input untouched


def test_guidance_rescale_keeps_token_norm():
    hidden = torch.randn(3, 16, 64)
    out = inject_guidance(hidden, 100 * torch.randn(3, 64), rescale=True)
    assert torch.allclose(out[:, -1].norm(dim=-1), hidden[:, -1].norm(dim=-1), rtol=1e-5)
    assert torch.equal(out[:, :-1], hidden[:, :-1])


def test_guidance_width_mismatch_is_clear():
    import pytest

    with pytest.raises(ValueError, match="width 32 != text hidden width 64"):
        inject_guidance(torch.randn(1, 16, 64), torch.randn(1, 32))


def test_build_prompt_with_and_without_caption():
    t = "photo of {classname}, {caption}, best quality"
    assert build_prompt(t, "goldfish", "a fish in a bowl") == "photo of goldfish, a fish in a bowl, best quality"
    assert build_prompt(t, "goldfish", "") == "photo of goldfish, best quality"
