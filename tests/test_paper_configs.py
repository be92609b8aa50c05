"""Paper-scale configs: valid, consistent with config/paper.yaml, and their DAG plans without data."""


import re

import pytest

from realfake.config import load_config

from conftest import REPO, run_snakemake

DATASETS = ["imagenet10", "imagenet100", "imagenet1k", "cub", "cars", "pets", "eurosat", "celeba"]


@pytest.mark.parametrize("name", DATASETS)
def test_per_dataset_config_equals_paper_section(name):
    paper = load_config(REPO / "config" / "paper.yaml")
    one = load_config(REPO / "config" / f"{name}.yaml")
    privacy = [d for d in one["datasets"] if d.startswith(f"{name}_members")]  # LiRA: IN-10 only
    assert sorted(one["datasets"]) == sorted([name] + privacy)
    assert len(privacy) == (17 if name == "imagenet10" else 0)  # the members and 16 pipeline shadows
    for ds in [name] + privacy:
        assert one["datasets"][ds] == paper["datasets"][ds]
    assert one["privacy"] == (paper["privacy"] if name == "imagenet10" else load_config()["privacy"] | {"pool": None})
    for key in paper:
        if key not in ("datasets", "run_name", "ood", "privacy"):  # ood: the IN-1K run; privacy: the IN-10 run
            assert one[key] == paper[key], key
    assert one["ood"] == (paper["ood"] if name == "imagenet1k" else load_config()["ood"])


def test_each_pin_and_recipe_value_is_written_once():
    """The shared recipe holds the model pins and hyperparameters; the dataset configs extend it and
    repeat none of its sections."""
    import yaml

    files = sorted((REPO / "config").glob("*.yaml"))
    recipe = yaml.safe_load((REPO / "config" / "paper_recipe.yaml").read_text())
    pins = [spec.get("revision") or spec.get("url") for spec in recipe["models"].values()]
    for pin in pins:
        holders = [f.name for f in files if pin in f.read_text()]
        assert holders == ["paper_recipe.yaml"], (pin, holders)
    shared = set(recipe) - {"dataset_defaults"}
    for name in DATASETS + ["paper"]:
        own = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
        assert not shared & set(own), (name, shared & set(own))
        for ds in own.get("datasets", {}).values():
            assert not {"prompt_template", "finetune_prompt_template", "negative_prompt", "image_size"} & set(ds), name


def test_extends_merges_bases_beneath_the_file(tmp_path):
    from realfake.config import ConfigError, read_config_file

    (tmp_path / "base.yaml").write_text("threads: 2\nseeds: [0]\nclassify: {epochs: 3, lr: 0.5}\n")
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\nclassify: {epochs: 4}\n")
    (tmp_path / "top.yaml").write_text("extends: [mid.yaml]\nthreads: 5\n")
    assert read_config_file(tmp_path / "top.yaml") == {"threads": 5, "seeds": [0], "classify": {"epochs": 4, "lr": 0.5}}
    (tmp_path / "loop.yaml").write_text("extends: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="the files extend each other"):
        read_config_file(tmp_path / "loop.yaml")
    (tmp_path / "gone.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="config key extends in .*gone.yaml: base file .*nowhere.yaml not found"):
        read_config_file(tmp_path / "gone.yaml")
    (tmp_path / "odd.yaml").write_text("extends: {a: 1}\n")
    with pytest.raises(ConfigError, match="config key extends in .*odd.yaml: a file name or a list"):
        read_config_file(tmp_path / "odd.yaml")


def test_dataset_defaults_sit_beneath_the_dataset():
    from realfake.config import ConfigError

    cfg = load_config(REPO / "config" / "paper.yaml")
    ds = cfg["datasets"]
    assert ds["imagenet10"]["prompt_template"] == "photo of {classname}, {caption}, best quality"
    assert ds["cub"]["prompt_template"] == "photo of {classname}" and ds["cub"]["finetune_prompt_template"] is None
    assert ds["celeba"]["prompt_template"] == "a {classname} person"
    own = load_config(REPO / "config" / "cub.yaml", overrides={"datasets": {"cub": {"prompt_template": "a {classname}"}}})
    assert own["datasets"]["cub"]["prompt_template"] == "a {classname}"
    with pytest.raises(ConfigError, match="unknown config key dataset_defaults.all.prompt_templat"):
        load_config(REPO / "config" / "cub.yaml", overrides={"dataset_defaults": {"all": {"prompt_templat": "x"}}})
    with pytest.raises(ConfigError, match="dataset_defaults"):
        load_config(REPO / "config" / "cub.yaml", overrides={"dataset_defaults": {"imagenette": {}}})


def test_paper_hyperparameters():
    cfg = load_config(REPO / "config" / "paper.yaml")
    assert cfg["generate"] == {"steps": 30, "cfg": 2.0, "strength": 0.75, "lora_scale": 0.5,
                               "batch_size": 64, "seed": 0, "classes_per_shard": 10, "image_format": "jpeg",
                               "jpeg_quality": 95, "fuse_lora": True, "torch_compile": False}
    assert cfg["loras"]["full"] == {"dm_weight": 0.003, "guidance": "class_mean"}
    assert cfg["finetune"]["lr"] == 1e-4 and cfg["finetune"]["batch_size"] == 64 and cfg["finetune"]["rank"] == 4
    assert cfg["finetune"]["batch_size"] // cfg["finetune"]["gpus"] == 8  # 8 per GPU (train_lora.sh)
    assert cfg["image_encoder"]["model_name"] == "ViT-L-14"
    assert cfg["datasets"]["cub"]["classify_overrides"]["image_size"] == 448
    assert cfg["datasets"]["imagenet10"]["use_captions"] and not cfg["datasets"]["cub"]["use_captions"]


@pytest.mark.slow
def test_paper_dry_run_plans_every_dataset_without_data(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "results/tables/table1.csv", "results/tables/table10.csv",
                         "--configfile", str(REPO / "config" / "paper.yaml"))
    out = proc.stdout + proc.stderr
    for ds in DATASETS:
        assert f"results/{ds}/real_index.parquet" in out
    # CelebA (attributes) reports in table 10 only: real, base, cip, ours, real + ours x 3 seeds
    assert "results/celeba/classify/syn/ours/1x/s2/metrics.json" in out
    assert re.search(r"^table10\s+1$", out, re.M) and re.search(r"^table1\s+1$", out, re.M)
    assert "pretrain_base" not in out and "image_encoder_init" not in out  # real models come from models.*
    assert not (tmp_path / "results").exists()


def test_paper_dry_run_plans_table4_ood(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "results/tables/table4.csv", "--configfile", str(REPO / "config" / "paper.yaml"))
    out = proc.stdout + proc.stderr
    # paper Tab. 4: FakeIt and CiP baselines, ours at 1/2/5/10x, real only, real + ours: 8 classifiers
    # x 3 seeds x 4 OOD sets
    assert re.search(r"^ood_eval\s+96$", out, re.M), out[-3000:]
    for name in ("v2", "sketch", "r", "a"):
        for run in ("syn/ours/1x", "syn/ours/10x", "syn/base/1x", "syn/cip/1x", "realsyn/ours/1x"):
            assert f"results/imagenet1k/ood/{run}/s2/{name}.json" in out
    assert not (tmp_path / "results").exists()


def test_celeba_config_plans_table10_and_refuses_table1(tmp_path):
    cfg = str(REPO / "config" / "celeba.yaml")
    proc = run_snakemake(tmp_path, "-n", "all_ablation", "--configfile", cfg)
    out = proc.stdout + proc.stderr
    assert re.search(r"^table10\s+1$", out, re.M) and not re.search(r"^table1\s+1$", out, re.M)
    assert "results/celeba/classify/realsyn/ours/1x/s0/metrics.json" in out
    proc = run_snakemake(tmp_path, "-n", "results/tables/table1.csv", "--configfile", cfg, check=False)
    assert proc.returncode != 0
    assert "table 1 needs a single-label dataset" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", DATASETS)
def test_one_prompt_template_for_fine_tuning_and_generation(name):
    """Paper Sec. 3.2 / G.1: the LoRA and its guidance token are trained on the prompt they are
    sampled with (ImageNet: the official generate.py adds only ', best quality'); the FakeIt-style
    baseline prompts 'a photo of [classname]'."""
    from realfake.method import build_prompt

    cfg = load_config(REPO / "config" / f"{name}.yaml")
    ds = cfg["datasets"][name]
    train = ds["finetune_prompt_template"] or ds["prompt_template"]
    gen = build_prompt(ds["prompt_template"], "tench", "a fish on grass")
    assert gen in (build_prompt(train, "tench", "a fish on grass"),
                   build_prompt(train, "tench", "a fish on grass") + ", best quality")
    if ds["kind"] in ("cub", "cars", "pets", "eurosat"):
        assert ds["prompt_template"] == "photo of {classname}" and ds["finetune_prompt_template"] is None
    base = cfg["variants"][cfg["tables"]["table1_baseline"]]
    assert build_prompt(base["prompt_template"], "tench", None) == "a photo of tench" and base["captions"] is False


def test_table2_first_row_is_the_caption_prompt():
    """Paper G.5: table 2's no-component row is text-to-image with the caption prompt every other
    row uses; table 1 keeps the caption-free FakeIt-style baseline."""
    from realfake.report import component_flags

    cfg = load_config(REPO / "config" / "paper.yaml")
    rows = cfg["tables"]["table2_variants"]
    none = [v for v in rows if not any(component_flags(cfg["variants"][v], cfg["loras"]).values())]
    assert none == ["cip"] and rows[0] == "cip"
    for v in rows:
        var = cfg["variants"][v]
        uses = var["captions"] if var["captions"] is not None else cfg["datasets"]["imagenet10"]["use_captions"]
        assert uses and var["prompt_template"] is None, v
    assert cfg["tables"]["table1_baseline"] == "base" and cfg["variants"]["base"]["captions"] is False


@pytest.mark.parametrize("name", ["imagenet10", "paper"])
def test_paper_configs_plan_figure3_through_the_pipeline(tmp_path, name):
    """Paper Fig. 3: 16 shadows; the synthetic target's each go through LoRA, generation and a
    classifier on their own half of the pool."""
    proc = run_snakemake(tmp_path, "-n", "results/figures/fig3_lira.png", "results/tables/table_privacy.csv",
                         "--configfile", str(REPO / "config" / f"{name}.yaml"))
    out = proc.stdout + proc.stderr
    assert re.search(r"^shadow_classifier\s+16$", out, re.M) and re.search(r"^pipeline_shadow\s+16$", out, re.M)
    # each pipeline shadow: its own LoRA, synthetic set and classifier; plus the members' target
    assert re.search(r"^finetune\s+17$", out, re.M) and re.search(r"^classify_synthetic\s+17$", out, re.M)
    assert "results/imagenet10_members_shadow15/lora/full/s0/lora.safetensors" in out
    assert "results/imagenet10_members_shadow15/classify/syn/ours/1x/s0/model.pt" in out
    assert not (tmp_path / "results").exists()


def test_own_dataset_template_names_its_placeholders_and_plans_when_filled(tmp_path):
    """config/my_dataset.yaml: left as shipped, the first EDIT_ME is named; filled in, it plans the
    paper recipe on the folder, one generation job per small set, with the pinned models."""
    from realfake.config import ConfigError, shard_count
    from realfake.plan import Plan

    template = REPO / "config" / "my_dataset.yaml"
    with pytest.raises(ConfigError, match=r"datasets\.my_dataset\.root: still the template's placeholder"):
        load_config(template)
    filled = tmp_path / "foxes.yaml"
    text = template.read_text().replace("extends: paper_recipe.yaml", f"extends: {REPO / 'config' / 'paper_recipe.yaml'}")
    filled.write_text(text.replace("root: EDIT_ME", "root: /data/foxes").replace("num_classes: EDIT_ME", "num_classes: 3"))
    cfg = load_config(filled)
    assert cfg["datasets"]["my_dataset"]["kind"] == "imagefolder"
    assert cfg["models"]["sd15"]["hub"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert [shard_count(cfg, "my_dataset", k) for k in (1, 10)] == [1, 3]
    plan = Plan(cfg)
    assert "results/my_dataset/captions.parquet" in plan.demo_targets()
    assert len(plan.shard_paths("my_dataset", "ours", 0, 1, "tar")) == 1


def test_command_line_config_cuts_the_seeds(tmp_path):
    """--config 'seeds=[0]' (a list on the command line) plans one seed of IN-10's table 1."""
    proc = run_snakemake(tmp_path, "-n", "results/tables/table1.csv", "--configfile",
                         str(REPO / "config" / "imagenet10.yaml"), "--config", "seeds=[0]")
    out = proc.stdout + proc.stderr
    assert re.search(r"^classify_real\s+1$", out, re.M), out[-2000:]
    assert "results/imagenet10/classify/real/s0/metrics.json" in out and "/s1/" not in out
