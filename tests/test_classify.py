"""Classifier objectives and the IN-1K recipe pieces: attribute (multi-label) targets, mixup/CutMix,
RandAugment, LAMB, warm-up cosine; a multi-label model that learns attributes from pixels."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from realfake.optim import make_optimizer, make_schedule
from realfake.classifier import Objective, attribute_bits, train_classifier
from realfake.classifier_data import MemoryData, mix_batch, rand_augment
from realfake.classifier_models import SmallCNN
from realfake.config import load_config
from realfake.settings import Classify

from conftest import REPO

CCFG = Classify.of(load_config(REPO / "config" / "mini.yaml"), "mini").replace(
    arch="smallcnn", epochs=2, batch_size=8, lr=0.01, weight_decay=0.0, optimizer="adamw", schedule="onecycle",
    milestones=[1], warmup_epochs=0, loss="ce", mixup=0.0, cutmix=0.0, randaugment_ops=0, randaugment_magnitude=9,
    random_flip=False, pad_crop=0, checkpoint_every=0, amp=False)


def test_attribute_bits_read_the_label_as_a_bit_field():
    bits = attribute_bits(torch.tensor([0, 5, 6]), 3)
    assert bits.tolist() == [[0, 0, 0], [1, 0, 1], [0, 1, 1]]


def test_mixup_mixes_images_and_targets_with_one_lambda():
    x = torch.stack([torch.full((3, 4, 4), float(i)) for i in range(4)])
    t = F.one_hot(torch.tensor([0, 1, 2, 3]), 4).float()
    xm, tm = mix_batch(x, t, torch.Generator().manual_seed(0), mixup=1.0, cutmix=0.0)
    lam = float(tm[0, 0])
    assert 0 < lam < 1 and torch.allclose(tm.sum(1), torch.ones(4))
    assert torch.allclose(tm[0], lam * t[0] + (1 - lam) * t[3])
    assert torch.allclose(xm[0], lam * x[0] + (1 - lam) * x[3])  # the image mixed exactly like its target
    again = mix_batch(x, t, torch.Generator().manual_seed(0), mixup=1.0, cutmix=0.0)
    assert torch.equal(xm, again[0]) and torch.equal(tm, again[1])


def test_cutmix_target_weight_is_the_pasted_area():
    x = torch.zeros(2, 1, 20, 20)
    x[1] = 1.0
    t = torch.eye(2)
    for seed in range(5):
        xm, tm = mix_batch(x, t, torch.Generator().manual_seed(seed), mixup=0.0, cutmix=1.0)
        pasted = float(xm[0].mean())  # fraction of image 0 that now shows image 1
        assert tm[0, 1] == pytest.approx(pasted) and tm[0, 0] == pytest.approx(1 - pasted)


def test_no_mixing_leaves_the_batch_alone():
    x, t = torch.randn(3, 3, 4, 4), torch.eye(3)
    xm, tm = mix_batch(x, t, torch.Generator().manual_seed(0), 0.0, 0.0)
    assert xm is x and tm is t


def test_rand_augment_is_seeded_and_changes_images():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    torch.manual_seed(3)
    a = rand_augment(x, 2, 9)
    torch.manual_seed(3)
    b = rand_augment(x, 2, 9)
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.allclose(a, x, atol=0.02)


def test_objectives():
    model = SmallCNN(4)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    gen = torch.Generator().manual_seed(0)
    plain = Objective(4, CCFG)
    assert torch.equal(plain.loss(model, x, y, gen), F.cross_entropy(model(x), y))
    bce = Objective(4, CCFG.replace(loss="bce"))
    assert torch.allclose(bce.loss(model, x, y, gen), F.binary_cross_entropy_with_logits(model(x), F.one_hot(y, 4).float()))
    multi = Objective(4, CCFG, attributes=["Smiling", "Attractive"])
    assert multi.outputs == 2 and multi.bce
    head2 = SmallCNN(2)
    assert torch.allclose(multi.loss(head2, x, y, gen),
                          F.binary_cross_entropy_with_logits(head2(x), attribute_bits(y, 2)))


def test_lamb_and_warmup_cosine_schedule():
    model = SmallCNN(3)
    cfg = CCFG.replace(optimizer="lamb", schedule="cosine", warmup_epochs=2, epochs=10, lr=0.1)
    opt = make_optimizer(model, cfg)
    assert type(opt).__name__ == "Lamb"
    no_decay = [g for g in opt.param_groups if g["weight_decay"] == 0]
    assert no_decay, "norms and biases go without weight decay"
    sched = make_schedule(opt, cfg, steps_per_epoch=5)
    lrs = []
    for epoch in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        sched.after_step()
        sched.after_epoch(epoch)
    assert lrs[0] == pytest.approx(1e-5) and max(lrs) == lrs[2] > 0.09  # timm warm-up from 1e-5 over 2 epochs, then cosine
    assert lrs[1] == pytest.approx(1e-5 + (0.1 - 1e-5) / 2)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.01  # cosine down towards 0


def _attribute_images(n, rng):
    """Attribute 0: left half bright; attribute 1: right half bright (plus noise)."""
    y = rng.integers(0, 4, n)
    x = rng.normal(0, 0.3, (n, 3, 16, 16)).astype(np.float32) - 0.5
    x[:, :, :, :8] += (y & 1)[:, None, None, None] * 1.0
    x[:, :, :, 8:] += (y >> 1 & 1)[:, None, None, None] * 1.0
    return torch.from_numpy(x), torch.as_tensor(y)


@pytest.mark.slow
def test_multilabel_classifier_learns_both_attributes_under_the_in1k_recipe():
    rng = np.random.default_rng(0)
    x, y = _attribute_images(256, rng)
    xt, yt = _attribute_images(128, rng)
    cfg = CCFG.replace(epochs=6, optimizer="lamb", schedule="cosine", warmup_epochs=1, lr=0.01, loss="bce",
                       mixup=0.2, cutmix=0.0, randaugment_ops=1, randaugment_magnitude=3)
    model = train_classifier(MemoryData(x, y), 4, cfg, seed=0, attributes=["Left", "Right"]).eval()
    with torch.no_grad():
        pred = (model(xt) > 0).float()
    acc = (pred == attribute_bits(yt, 2)).float().mean(0)
    assert pred.shape == (128, 2) and (acc > 0.9).all(), acc


def test_a_classifier_that_takes_no_step_is_an_error_not_metrics():
    x, y = torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long)  # one image: every batch is under 2
    with pytest.raises(ValueError, match="took no optimiser step in 2 epochs: 1 training images"):
        train_classifier(MemoryData(x, y), 2, CCFG, seed=0)
    model = train_classifier(MemoryData(torch.zeros(3, 3, 8, 8), torch.tensor([0, 1, 0])), 2,
                             CCFG.replace(batch_size=2), seed=0)  # batches of 2 and 1: the 2 trains
    assert isinstance(model, SmallCNN)


def test_replicas_report_the_mean_and_each_run():
    """classify.replicas: replica 0 keeps the seed, the others get seed * 1000 + k; metrics.json
    holds the mean of every accuracy and each replica's top-1."""
    from realfake.classify import mean_metrics, replica_seed

    assert [replica_seed(7, k) for k in range(3)] == [7, 7001, 7002]
    one = {"top1": 50.0, "top5": 90.0, "n_test": 10}
    assert mean_metrics([one]) == one
    m = mean_metrics([one, {"top1": 60.0, "top5": 80.0, "n_test": 10}])
    assert m == {"top1": 55.0, "top5": 85.0, "n_test": 10, "replicas_top1": [50.0, 60.0]}
    attrs = [{"attr_acc": {"a": 80.0, "b": 60.0}, "mean_attr_acc": 70.0, "attributes": ["a", "b"], "n_test": 4},
             {"attr_acc": {"a": 90.0, "b": 70.0}, "mean_attr_acc": 80.0, "attributes": ["a", "b"], "n_test": 4}]
    m = mean_metrics(attrs)
    assert m["attr_acc"] == {"a": 85.0, "b": 65.0} and m["mean_attr_acc"] == 75.0 and m["replicas_top1"] == [70.0, 80.0]


def test_curve_records_loss_every_epoch_and_test_figures_every_n_without_changing_training(tmp_path):
    """classify.validate_every: the test figures every N epochs and after the last, the training loss
    every epoch; testing draws from torch's RNG (as a DataLoader does) yet the weights are those of a
    run that never tests; the curve so far comes back from the checkpoint of a segmented run."""
    from realfake.classifier import SegmentDone

    rng = np.random.default_rng(0)
    x, y = torch.from_numpy(rng.normal(size=(40, 3, 8, 8)).astype(np.float32)), torch.as_tensor(rng.integers(0, 2, 40))
    cfg = CCFG.replace(epochs=5, validate_every=2, checkpoint_every=1, randaugment_ops=1, randaugment_magnitude=3)
    calls = []

    def validate(model):
        torch.rand(3)  # the RNG a DataLoader's iterator would draw from
        model.eval()
        with torch.no_grad():
            calls.append(float((model(x).argmax(1) == y).float().mean() * 100))
        return {"top1": calls[-1], "n_test": len(y)}

    plain = train_classifier(MemoryData(x, y), 2, cfg, seed=0)
    curve: list = []
    tested = train_classifier(MemoryData(x, y), 2, cfg, seed=0, validate=validate, curve=curve)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), tested.state_dict().values()))
    assert [r["epoch"] for r in curve] == [1, 2, 3, 4, 5]
    assert [r["epoch"] for r in curve if "test_top1" in r] == [2, 4, 5] and "test_n_test" not in curve[1]
    assert all(np.isfinite(r["train_loss"]) for r in curve)

    ckpt, resumed = str(tmp_path / "m.ckpt"), []
    for _ in range(3):  # 3 segments: epochs 1-2, 3-4, 5
        part: list = []
        try:
            model = train_classifier(MemoryData(x, y), 2, cfg, seed=0, ckpt_path=ckpt, fingerprint={"a": 1},
                                     segments=3, validate=validate, curve=part)
        except SegmentDone:
            continue
        resumed = part
    assert resumed == curve
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values()))


def test_loader_processes_come_from_the_jobs_cpus_and_never_exceed_the_streams(monkeypatch):
    """num_workers auto: the CPUs of each GPU process (Slurm's grant per GPU, else the job's
    threads shared out) minus the one that feeds the GPU, at most classify.streams; a number is
    taken as given, also capped by the streams."""
    import argparse

    from realfake.cli import job_cpus
    c = Classify.of(load_config(REPO / "config" / "paper.yaml"), "imagenet1k")
    assert (c.num_workers, c.streams) == ("auto", 16)
    assert [c.loader_workers(n) for n in (1, 2, 16, 64)] == [0, 1, 15, 16]
    assert c.replace(num_workers=3).loader_workers(64) == 3 and c.replace(num_workers=40).loader_workers(1) == 16
    args = argparse.Namespace(threads=64)
    monkeypatch.delenv("SLURM_CPUS_PER_GPU", raising=False)
    assert job_cpus(args, {"threads": 8}, 4) == 16 and job_cpus(argparse.Namespace(threads=None), {"threads": 8}, 4) == 2
    monkeypatch.setenv("SLURM_CPUS_PER_GPU", "12")
    assert job_cpus(args, {"threads": 8}, 4) == 12
