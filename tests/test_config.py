"""Bad configuration stops with a message naming the key or file."""

import pytest

from realfake.config import ConfigError, load_config, validate

from conftest import REPO


def test_shipped_configs_validate():
    for name in ("mini.yaml", "smoke.yaml"):
        cfg = load_config(REPO / "config" / name)
        assert cfg["datasets"] and cfg["seeds"]


def test_defaults_are_filled():
    cfg = validate({"datasets": {"d": {"kind": "digits"}}, "variants": {"base": {}, "ours": {}},
                    "tables": {"table1_baseline": "base", "table1_method": "ours"}})
    assert cfg["generate"]["strength"] == 0.75 and cfg["generate"]["cfg"] == 2.0
    assert cfg["finetune"]["snr_gamma"] == 5.0 and cfg["finetune"]["rank"] == 4
    assert cfg["datasets"]["d"]["image_size"] == 32


@pytest.mark.parametrize("override, needle", [
    ({"finetune": {"stepz": 3}}, "unknown config key finetune.stepz"),
    ({"bogus": 1}, "unknown config key bogus"),
    ({"finetune": {"lr": "fast"}}, "config key finetune.lr"),
    ({"generate": {"strength": 1.5}}, "config key generate.strength"),
    ({"scales": [-1]}, "config key scales.0"),
    ({"datasets": {"mini": {"kind": "mnist"}}}, "config key datasets.mini.kind"),
    ({"variants": {"ours": {"lora": "nope"}}}, "variants.ours.lora: unknown LoRA 'nope'"),
    ({"tables": {"table2_variants": ["ghost"]}}, "unknown variant 'ghost'"),
    ({"classify": {"pretrained": True}}, "models.resnet50_pretrained: required"),
    ({"models": {"sd15": 3}}, "config key models.sd15"),
    ({"datasets": {"mini": {"classify_overrides": {"epoch": 3}}}}, "datasets.mini.classify_overrides.epoch"),
    ({"datasets": {"img": {"kind": "imagefolder"}}}, "datasets.img.root: required"),
    ({"datasets": {"img": {"kind": "imagefolder", "root": "/x", "num_classes": 3}}},
     "models.sd15: null selects the mini world's stand-in (a tiny digit-font model or a random encoder), but dataset 'img'"),
    ({"datasets": {"img": {"kind": "imagefolder", "root": "/x", "num_classes": 3}}, "models": {"sd15": "/sd"}},
     "models.clip: null selects the mini world's stand-in"),
    ({"privacy": {"pool": "ghost"}}, "privacy.pool: unknown dataset 'ghost'"),
    ({"datasets": {"mini_members": {"member_half": None}}}, "datasets.mini_members.member_half: required"),
    ({"datasets": {"mini_members": {"train_per_class": 5}}}, "must read the same data as 'mini' (differs in train_per_class)"),
    ({"privacy": {"shadows": 2}}, "config key privacy.shadows"),
    ({"privacy": {"scale": 10}}, "privacy.scale: 10 is not one of scales"),
    ({"generate": {"classes_per_shard": 0}}, "config key generate.classes_per_shard"),
    ({"generate": {"image_format": "webp"}}, "config key generate.image_format"),
    ({"classify": {"loader": "lazy"}}, "config key classify.loader"),
    ({"classify": {"optimizer": "adam"}}, "config key classify.optimizer"),
    ({"classify": {"warmup_epochs": 5}}, "classify.warmup_epochs (dataset mini): one-cycle has its own warm-up"),
    ({"classify": {"mixup": -0.1}}, "config key classify.mixup"),
    ({"datasets": {"face": {"kind": "celeba", "root": "/x"}}}, "datasets.face.attributes: required for kind 'celeba'"),
    ({"datasets": {"mini": {"attributes": ["Smiling"]}}}, "datasets.mini.attributes: only for kind 'celeba'"),
    ({"datasets": {"face": {"kind": "celeba", "root": "/x", "attributes": ["Smiling"]}}, "privacy": {"pool": "face"}},
     "privacy.pool: 'face' is an attribute (multi-label) dataset"),
    ({"datasets": {"mini": {"classify_overrides": {"epochs": "ten"}}}}, "datasets.mini.classify_overrides.epochs: 'ten'"),
    ({"datasets": {"mini": {"classify_overrides": {"lr": -1}}}}, "datasets.mini.classify_overrides.lr: -1"),
    ({"seeds": [0, 0]}, "config key seeds: [0, 0] names an item twice"),
    ({"seeds": [2**32]}, "config key seeds.0: 4294967296 is greater than the maximum"),
    ({"pretrain": {"seed": 2**40}}, "config key pretrain.seed"),
    ({"datasets": {"my set": {"kind": "digits"}}}, "datasets.my set: dataset name 'my set' must start with a letter"),
    ({"datasets": {"../out": {"kind": "digits"}}}, "dataset name '../out' must start with a letter"),
    ({"datasets": {"a;rm": {"kind": "digits"}}}, "dataset name 'a;rm'"),
    ({"datasets": {"synthetic": {"kind": "digits"}}}, "dataset name 'synthetic' is reserved"),
    ({"datasets": {"mini": {"prompt_template": "photo of {class}"}}}, "datasets.mini.prompt_template: unknown placeholder {class}"),
    ({"datasets": {"mini": {"prompt_template": "photo of {classname"}}}, "datasets.mini.prompt_template: "),
    ({"tables": {"table2_variants": []}}, "config key tables.table2_variants: [] should be non-empty"),
    ({"variants": {"a b": {"lora": None}}}, "variants.a b: name 'a b'"),
    ({"classify": {"batch_size": 1}}, "config key classify.batch_size: 1 is less than the minimum of 2"),
    ({"classify": {"transform": "timm"}}, "classify.transform (dataset mini): timm transforms augment each image"),
    ({"classify": {"transform": "timm", "loader": "stream", "randaugment_ops": 2}},
     "classify.randaugment_ops (dataset mini): torchvision RandAugment is for transform simple"),
    ({"classify": {"auto_augment": "rand-m7"}}, "classify.auto_augment (dataset mini): needs classify.transform timm"),
    ({"classify": {"transform": "timm", "loader": "stream", "auto_augment": "rand-m7-mstd"}},
     "classify.auto_augment (dataset mini): 'rand-m7-mstd' is not a timm RandAugment policy"),
    ({"classify": {"transform": "timm", "loader": "stream", "auto_augment": "augmix-m5"}}, "is not a timm RandAugment"),
    ({"classify": {"drop_path_rate": 0.05}}, "classify.drop_path_rate (dataset mini): smallcnn has no residual"),
    ({"classify": {"nesterov": True}}, "classify.nesterov (dataset mini): Nesterov momentum is for optimizer sgd"),
    ({"classify": {"scale": [1.0, 0.08]}}, "classify.scale / classify.ratio (dataset mini): each range is [low, high]"),
    ({"classify": {"scale": [0.08]}}, "config key classify.scale"),
    ({"classify": {"label_smoothing": 1.0}}, "config key classify.label_smoothing"),
    ({"datasets": {"mini": {"classify_overrides": {"transform": "timm"}}}}, "classify.transform (dataset mini)"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as exc:
        load_config(REPO / "config" / "mini.yaml", overrides=override)
    assert needle in str(exc.value)


def test_malformed_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0, 1\nthreads: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_classify_overrides_apply_per_dataset():
    from realfake.settings import Classify, Dataset

    cfg = load_config(REPO / "config" / "mini.yaml",
                      overrides={"datasets": {"mini": {"classify_overrides": {"epochs": 3, "image_size": 64}}}})
    c = Classify.of(cfg, "mini")
    assert c.epochs == 3 and c.image_size == 64 and c.lr == cfg["classify"]["lr"]
    assert c.input_size(Dataset.of(cfg, "mini")) == 64


def test_multistep_schedule_decays_at_milestones():
    """timm's multistep, per epoch: the decay for milestone m lands at epoch m - 1."""
    import torch

    from realfake.optim import make_schedule
    from realfake.settings import Classify

    c = Classify.of(load_config(REPO / "config" / "mini.yaml"), "mini").replace(
        epochs=5, schedule="multistep", milestones=[2, 4], lr=0.1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make_schedule(opt, c, 2)
    lrs = []
    for epoch in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        sched.after_step()
        sched.after_epoch(epoch)
    assert lrs == pytest.approx([0.1, 0.02, 0.02, 0.004, 0.004])


def test_a_key_given_twice_names_both_lines(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("seeds: [0]\nclassify:\n  epochs: 3\nthreads: 1\nclassify:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"twice.yaml .*key 'classify' is given twice \(lines 2 and 5\)"):
        load_config(twice)


def test_table2_rows_default_to_every_variant_in_order():
    cfg = validate({"datasets": {"d": {"kind": "digits"}}, "variants": {"base": {}, "lp": {}, "ours": {}},
                    "tables": {"table1_baseline": "base", "table1_method": "ours"}})
    assert cfg["tables"]["table2_variants"] == ["base", "lp", "ours"]


def test_pipeline_shadows_are_derived_datasets():
    """privacy.synthetic_shadows pipeline: one derived dataset per shadow, the members' config with
    its own seeded half; real: none; a dataset already holding a shadow's name is an error."""
    cfg = load_config(REPO / "config" / "mini.yaml")
    shadows = [d for d in cfg["datasets"] if "_shadow" in d]
    assert shadows == [f"mini_members_shadow{k}" for k in range(4)]
    halves = {cfg["datasets"][d]["member_half"] for d in shadows}
    assert len(halves) == 4 and cfg["datasets"]["mini_members"]["member_half"] not in halves
    for d in shadows:
        same = {k: v for k, v in cfg["datasets"][d].items() if k not in ("member_half", "shadow_of")}
        assert same == {k: v for k, v in cfg["datasets"]["mini_members"].items() if k not in ("member_half", "shadow_of")}
    assert load_config(REPO / "config" / "mini.yaml", overrides={"privacy": {"synthetic_shadows": "real"}})["datasets"].keys() == {
        "mini", "mini_members"}
    again = load_config(REPO / "config" / "mini.yaml")  # validating a validated config changes nothing
    assert again == cfg
    with pytest.raises(ConfigError, match="config key datasets.mini_members_shadow1: the name is taken by the privacy shadows"):
        load_config(REPO / "config" / "mini.yaml", overrides={"datasets": {"mini_members_shadow1": {"kind": "digits"}}})


@pytest.mark.parametrize("overrides, message", [
    ({"generate": {"lora_scale": float("nan")}}, "config key generate.lora_scale: nan is not allowed here; give a finite number"),
    ({"finetune": {"lr": float("inf")}}, "config key finetune.lr: inf is not allowed here; give a finite number"),
    ({"seeds": [0.0]}, "config key seeds.0: 0.0 is not allowed here; give a whole number"),
    ({"classify": {"epochs": 5.0}}, "config key classify.epochs: 5.0 is not allowed here; give a whole number"),
    ({"classify": {"epochs": True}}, "config key classify.epochs: True is not allowed here; give a whole number"),
    ({"generate": {"cfg": False}}, "config key generate.cfg: False is not allowed here; give a finite number"),
    ({"scales": [1, 1]}, "config key scales: [1, 1] names an item twice"),
    ({"classify": {"num_workers": "fast"}},
     'config key classify.num_workers: \'fast\' is not allowed here; give a whole number >= 0 or "auto"'),
    ({"classify": {"num_workers": -1}}, "config key classify.num_workers: -1 is not allowed here"),
    ({"tables": {"table2_variants": ["ours", "ours"]}}, "config key tables.table2_variants: ['ours', 'ours'] names an item twice"),
    ({"datasets": {"smoke": {"image_size": 36}}}, "config key datasets.smoke.image_size: 36 is not a multiple of 8"),
    ({"generate": {"strength": 1.5}}, "config key generate.strength: 1.5 is greater than the maximum of 1"),
    ({"dataset_defaults": {"all": {"image_size": 12.0}}}, "config key dataset_defaults.all.image_size: 12.0 is not allowed"),
    ({"datasets": {"smoke": {"classify_overrides": {"epochs": 2.5}}}},
     "config key datasets.smoke.classify_overrides.epochs: 2.5 is not allowed"),
    ({"datasets": {"smoke": {"test_size": 5}}}, "config key datasets.smoke.test_size: 5 is impossible for the digits"),
    ({"datasets": {"smoke": {"test_size": 1790}}}, "config key datasets.smoke.test_size: 1790 is impossible for the digits"),
])
def test_numbers_the_method_cannot_use_are_refused(overrides, message):
    with pytest.raises(ConfigError) as exc:
        load_config(REPO / "config" / "smoke.yaml", overrides=overrides)
    assert message in str(exc.value)


@pytest.mark.parametrize("model, message", [
    ({"sd15": {"hub": "a/b", "revision": "0" * 40, "file": "../../etc/passwd"}}, "models.sd15.file: '../../etc/passwd' must be a path inside"),
    ({"sd15": {"hub": "a/b", "revision": "0" * 40, "file": "/etc/passwd"}}, "models.sd15.file: '/etc/passwd' must be a path inside"),
    ({"sscd": {"url": "https://example.org/", "sha256": None}}, "models.sscd.url: 'https://example.org/' names no file"),
    ({"clip": {"hub": "../x", "revision": "0" * 40}}, "models.clip.hub: '../x' is not a hub repo id"),
])
def test_model_specs_cannot_point_outside_results_models(model, message):
    with pytest.raises(ConfigError, match=None) as exc:
        load_config(REPO / "config" / "smoke.yaml", overrides={"models": model})
    assert message in str(exc.value)


def test_an_empty_or_comment_only_config_file_is_named(tmp_path):
    for text in ("", "# nothing but a comment\n"):
        (tmp_path / "empty.yaml").write_text(text)
        with pytest.raises(ConfigError, match=r"config file .*empty.yaml is empty or holds only comments"):
            load_config(tmp_path / "empty.yaml")


def test_architecture_and_encoder_names_are_checked_against_the_libraries():
    with pytest.raises(ConfigError, match=r"config key classify.arch: 'resnet5O' is neither smallcnn nor a timm "
                                          r"model \(did you mean resnet50"):
        load_config(REPO / "config" / "imagenet10.yaml", overrides={"classify": {"arch": "resnet5O"}})
    with pytest.raises(ConfigError, match=r"config key image_encoder.model_name: 'ViT-L-41' is neither"):
        load_config(REPO / "config" / "imagenet10.yaml", overrides={"image_encoder": {"model_name": "ViT-L-41"}})
    load_config(REPO / "config" / "imagenet10.yaml")  # resnet50 and ViT-L-14 are known


def test_command_line_values_read_as_yaml_would():
    """Snakemake's --config reads [0] as ['0']; the workflow reads it as YAML does."""
    from realfake.config import command_line_values

    got = command_line_values({"seeds": ["0", "1"], "finetune": {"lr": "1e-4", "epochs": "3"},
                               "classify": {"amp": "false", "crop_pct": "null"}, "run_name": "run 2", "x": 5})
    assert got == {"seeds": [0, 1], "finetune": {"lr": 1e-4, "epochs": 3},
                   "classify": {"amp": False, "crop_pct": None}, "run_name": "run 2", "x": 5}
    assert isinstance(got["finetune"]["epochs"], int) and command_line_values("photo of {classname}") == "photo of {classname}"


def test_library_model_names_are_read_once_per_installed_version(tmp_path, monkeypatch):
    """timm's and open_clip's model lists are kept in the user's cache per library version, so a
    paper config plans without importing either (about 8 s per snakemake start)."""
    import importlib.metadata
    import json

    from realfake.config import library_names

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    names = library_names("timm")
    cache = tmp_path / "realfake" / f"timm-{importlib.metadata.version('timm')}.json"
    assert "resnet50" in names and json.loads(cache.read_text()) == names
    cache.write_text(json.dumps(["only_this_model"]))  # what a later start reads
    assert library_names("timm") == ["only_this_model"]
    with pytest.raises(ConfigError, match="'resnet50' is neither smallcnn nor a timm model"):
        load_config(REPO / "config" / "imagenet10.yaml")
    cache.write_text("{not json")  # a damaged cache is rebuilt
    assert "resnet50" in library_names("timm")
