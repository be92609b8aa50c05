"""The paper's classifier and LoRA recipes: built from each paper config (transforms, loss,
optimiser, schedule) and checked against the paper (Tab. 7-8), the official code's settings, and
the recipe tables of docs/recipes.md; per-image transforms are seeded."""

import random
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from realfake.classifier import Objective
from realfake.classifier_models import build_model
from realfake.optim import make_optimizer, make_schedule
from realfake.config import load_config
from realfake.recipes import Seeded, eval_transform, train_transform
from realfake.settings import Classify, Dataset, Finetune

from conftest import REPO

PAPER_CONFIGS = ["imagenet10", "imagenet100", "imagenet1k", "cub", "cars", "pets", "eurosat", "celeba"]

# Tab. 8 (train/test resolution, epochs, optimiser, lr, decay) and, where the table is silent ("-"),
# timm train.py's defaults that the official train.sh runs with.
EXPECTED = {
    "imagenet10": dict(size=224, epochs=200, opt="sgd", lr=0.1, sched="multistep", wd=5e-4, pretrained=False),
    "imagenet100": dict(size=224, epochs=200, opt="sgd", lr=0.1, sched="multistep", wd=5e-4, pretrained=False),
    "imagenet1k": dict(size=224, epochs=300, opt="lamb", lr=5e-3, sched="cosine", wd=0.02, pretrained=False),
    "cub": dict(size=448, epochs=200, opt="sgd", lr=0.1, sched="multistep", wd=5e-4, pretrained=True),
    "cars": dict(size=448, epochs=200, opt="sgd", lr=0.1, sched="multistep", wd=5e-4, pretrained=True),
    "pets": dict(size=224, epochs=200, opt="sgd", lr=0.1, sched="multistep", wd=5e-4, pretrained=True),
    "eurosat": dict(size=448, epochs=200, opt="sgd", lr=0.1, sched="multistep", wd=5e-4, pretrained=False),
    "celeba": dict(size=224, epochs=30, opt="sgd", lr=0.1, sched="cosine", wd=5e-4, pretrained=False),
}


def paper(name):
    cfg = load_config(REPO / "config" / f"{name}.yaml")
    return cfg, Classify.of(cfg, name), Dataset.of(cfg, name)


def ops(transform):
    return [type(t).__name__ for t in transform.transforms]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_classifier_recipe(name):
    cfg, c, ds = paper(name)
    e = EXPECTED[name]
    size = c.input_size(ds)
    assert (size, c.epochs, c.optimizer, c.lr, c.schedule, c.weight_decay, c.pretrained) == \
        (e["size"], e["epochs"], e["opt"], e["lr"], e["sched"], e["wd"], e["pretrained"])
    assert c.arch == "resnet50" and c.amp and c.loader == "stream"
    # timm train.py's augmentation: RandomResizedCrop (0.08-1, 3/4-4/3, random interpolation), flip 0.5
    tt = train_transform(c, size)
    rrc = tt.transforms[0]
    assert type(rrc).__name__ == "RandomResizedCropAndInterpolation" and rrc.size == (size, size)
    assert rrc.scale == (0.08, 1.0) and rrc.ratio == pytest.approx((3 / 4, 4 / 3)) and len(rrc.interpolation) == 2
    assert type(tt.transforms[1]).__name__ == "RandomHorizontalFlip" and tt.transforms[1].p == 0.5
    assert ops(tt)[-2:] == ["MaybeToTensor", "Normalize"]
    # timm's eval transform: resize to size / crop_pct (resnet50's 0.95), centre crop; never a squash
    et = eval_transform(c, size)
    assert ops(et)[:2] == ["Resize", "CenterCrop"] and et.transforms[0].size == int(size / 0.95)
    assert et.transforms[1].size == (size, size)
    model = build_model(c.arch, 10, None, c.drop_path_rate)
    opt = make_optimizer(model, c)
    assert opt.param_groups[0]["lr"] == c.lr
    if name == "imagenet1k":  # Tab. 8's IN-1K column
        assert type(opt).__name__ == "Lamb" and c.batch_size == 2048
        assert c.loss == "bce" and c.mixup == 0.2 and c.cutmix == 1.0 and c.label_smoothing == 0.1
        assert c.drop_path_rate == 0.05 and any(getattr(m, "drop_prob", 0) == 0.05 for m in model.modules())
        ra = [t for t in tt.transforms if type(t).__name__ == "RandAugment"][0]
        assert ra.num_layers == 2 and {o.magnitude for o in ra.ops} == {7} and {o.magnitude_std for o in ra.ops} == {0.5}
        assert "ColorJitter" not in ops(tt)  # timm drops it when a RandAugment policy is set
    else:  # the official train.sh: timm's Nesterov sgd, global batch 4 x 128, label smoothing 0.1
        assert type(opt).__name__ == "SGD" and opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9
        assert c.batch_size == 512 and c.label_smoothing == 0.1 and c.mixup == c.cutmix == 0 and c.drop_path_rate == 0
        assert "ColorJitter" in ops(tt) and "RandAugment" not in ops(tt)
    # timm's parameter groups: norms and biases without weight decay (official train.py)
    groups = sorted((g["weight_decay"], len(g["params"])) for g in opt.param_groups)
    assert groups == [(0.0, 107), (c.weight_decay, 54)]
    # schedule: timm's, per epoch: warm-up from 1e-5 over 5 epochs, then multistep x0.2 or cosine
    lrs = epoch_lrs(opt, make_schedule(opt, c, steps_per_epoch=3), c.epochs, 3)
    assert lrs == pytest.approx(timm_lrs(c), rel=1e-12)
    assert lrs[0] == pytest.approx(1e-5) and max(lrs) <= c.lr
    if c.schedule == "multistep":  # timm's decay lands one epoch before each milestone
        assert lrs[5] == pytest.approx(c.lr)
        for epoch, factor in ((48, 1), (49, 0.2), (98, 0.2), (99, 0.04), (149, 0.008), (199, 0.008)):
            assert lrs[epoch] == pytest.approx(c.lr * factor), epoch
    else:
        assert lrs[-1] < c.lr * 0.01 and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


def epoch_lrs(opt, sched, epochs: int, steps: int) -> list[float]:
    """The learning rate each epoch starts with, stepping the schedule as the training loop does."""
    lrs = []
    sched.start(0)
    for epoch in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        for _ in range(steps):
            opt.step()
            sched.after_step()
        sched.after_epoch(epoch)
    return lrs


def timm_lrs(c) -> list[float]:
    """Every epoch's lr from timm's scheduler classes built as the official train.py/train.sh do
    (warmup_lr 1e-5, min_lr 0, decay rate 0.2, no warm-up prefix), independently of realfake.optim."""
    from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=c.lr)
    if c.schedule == "multistep":
        sched = MultiStepLRScheduler(opt, decay_t=c.milestones, decay_rate=0.2, warmup_t=c.warmup_epochs,
                                     warmup_lr_init=1e-5, warmup_prefix=False)  # train.py default
    else:
        sched = CosineLRScheduler(opt, t_initial=c.epochs, lr_min=0.0, warmup_t=c.warmup_epochs, warmup_lr_init=1e-5)
    return [sched._get_lr(e)[0] for e in range(c.epochs)]


def test_paper_loss_matches_timm():
    """Label smoothing 0.1 on hard labels is timm's LabelSmoothingCrossEntropy (= torch's
    label_smoothing); with mixup the smoothed targets are mixed and scored with BCE (IN-1K)."""
    _, c, _ = paper("imagenet10")
    logits = torch.randn(6, 10)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    obj = Objective(10, c)

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return logits

    gen = torch.Generator().manual_seed(0)
    loss = obj.loss(Fixed(), torch.zeros(6, 3, 4, 4), y, gen)
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)))
    _, c1k, _ = paper("imagenet1k")
    obj = Objective(10, c1k)
    t = obj.targets(y)
    assert t.max() == pytest.approx(0.91) and t.min() == pytest.approx(0.01) and torch.allclose(t.sum(1), torch.ones(6))
    x = torch.randn(6, 3, 8, 8)
    loss = obj.loss(Fixed(), x, y, torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and type(obj.soft).__name__ == "BinaryCrossEntropy"


def test_paper_lora_recipe():
    """Tab. 7 and train_lora.sh / train_text_to_image_lora.py: batch 8 per GPU on 8 GPUs (distribution
    matching over each GPU's 8), lr 1e-4 constant, rank 4, min-SNR 5, 512 px, flip, gradient clipping
    at 1.0, Resize + RandomCrop."""
    for name in PAPER_CONFIGS:
        cfg, _, ds = paper(name)
        f = Finetune.of(cfg, ds.name)
        assert (f.batch_size, f.gpus, f.dm_group) == (64, 8, 8)
        assert (f.lr, f.rank, f.snr_gamma, f.epochs, ds.image_size) == (1e-4, 4, 5.0, 100, 512)
        assert f.random_flip and f.max_grad_norm == 1.0 and f.crop == "random"
        assert "best quality" not in (ds.finetune_prompt_template or ds.prompt_template)
        assert "a type of" not in ds.prompt_template
        assert cfg["loras"]["full_per_image"]["guidance"] == "per_image"
        assert cfg["tables"]["table1_official"] == "ours_official"


def test_seeded_transform_depends_on_the_seed_alone():
    _, c, _ = paper("imagenet1k")
    t = Seeded(train_transform(c, 32))
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    a = t(im, 5)
    after = (random.random(), np.random.rand(), torch.rand(1))
    assert before == after  # the caller's generators are not disturbed
    assert a.shape == (3, 32, 32) and torch.equal(a, t(im, 5))
    assert sum(not torch.equal(a, t(im, s)) for s in range(6, 12)) >= 5


def test_stream_loader_applies_the_timm_transform_per_image(tmp_path):
    """transform timm: real files are decoded at their own size and augmented per image in the
    loader; the same seed and epoch give the same tensors, another epoch others."""
    from realfake.shards import ShardDataset

    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (30 + i, 50, 3), dtype=np.uint8)).save(p)
        paths.append((str(p), i % 2))
    _, c, _ = paper("imagenet10")

    def epoch(e):
        ds = ShardDataset([], 16, seed=3, files=paths, transform=train_transform(c, 16))
        ds.set_epoch(e)
        return list(ds.samples())

    first = epoch(0)
    assert len(first) == 6 and all(x.shape == (3, 16, 16) and x.dtype == torch.float32 for x, _ in first)
    assert float(torch.stack([x for x, _ in first]).min()) < -1.2  # ImageNet normalisation, not [-1, 1]
    again = epoch(0)
    assert all(torch.equal(a, b) and ya == yb for (a, ya), (b, yb) in zip(first, again))
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, epoch(1)))


def recipe_tables():
    """{(config stem, section): {key: value}} from the recipe tables of docs/recipes.md: each table's
    heading names its config files; the last column holds `key: value` settings."""
    part = (REPO / "docs" / "recipes.md").read_text()
    out = {}
    for block in re.split(r"\n#### ", part)[1:]:
        heading, body = block.split("\n", 1)
        stems = re.findall(r"`config/(\w+)\.yaml`", heading)
        section = "finetune" if "LoRA" in heading else "classify"
        values = {}
        for line in body.splitlines():
            if line.startswith("|") and not line.startswith("|---"):
                ours = line.strip().strip("|").split("|")[-1]
                for setting in re.findall(r"`([a-z_]+: [^`]+)`", ours):
                    values.update(yaml.safe_load("{" + setting + "}"))
        for stem in stems:
            out[(stem, section)] = values
    return out


def test_recipe_tables_match_the_configs():
    tables = recipe_tables()
    assert {stem for stem, _ in tables} == set(PAPER_CONFIGS)
    assert sum(1 for _, sec in tables if sec == "finetune") >= 1
    for (stem, section), values in tables.items():
        cfg, c, ds = paper(stem)
        settings = Finetune.of(cfg) if section == "finetune" else c
        assert values, (stem, section)
        for key, value in values.items():
            got = getattr(settings, key) if hasattr(settings, key) else getattr(ds, key)
            if key == "image_size" and section == "classify":
                got = c.input_size(ds)
            assert got == value, f"docs/recipes.md says {key}: {value} for config/{stem}.yaml ({section}); config gives {got}"
