"""Planning without Snakemake: paths, target lists, table row specs, resources, rule params; and the
typed settings against the schema."""

import dataclasses
import json

import pytest

from realfake.config import ConfigError, load_config, load_schema
from realfake.plan import Plan, placeholders
from realfake.settings import SECTIONS, Dataset, Lora, Tables, Variant
from realfake.tablespec import table1_spec

from conftest import REPO

MINI = REPO / "config" / "mini.yaml"


@pytest.fixture(scope="module")
def mini():
    return Plan(load_config(MINI))


def test_datasets_split_into_tables_and_privacy_members(mini):
    assert mini.datasets == ["mini"]  # mini_members (member_half) feeds privacy only
    assert mini.class_datasets == ["mini"] and mini.attr_datasets == []


def test_table1_inputs_follow_the_row_spec(mini):
    spec = table1_spec(mini.tables)
    assert [r.cell for r in spec] == ["real", "syn_baseline", "syn_method", "realsyn_method"]
    files = mini.table1_metrics()
    assert len(files) == len(mini.seeds) * len(spec)
    assert files[:4] == ["results/mini/classify/real/s0/metrics.json",
                         "results/mini/classify/syn/base/2x/s0/metrics.json",
                         "results/mini/classify/syn/ours/2x/s0/metrics.json",
                         "results/mini/classify/realsyn/ours/2x/s0/metrics.json"]


def test_caption_baseline_adds_a_row_and_its_classifiers():
    cfg = load_config(MINI, overrides={"seeds": [0], "tables": {"table1_caption_baseline": "base"}})
    spec = table1_spec(Tables.of(cfg))
    assert [r.cell for r in spec][2] == "syn_caption_baseline" and spec[2].label == "synthetic only: base"
    assert len(Plan(cfg).table1_metrics()) == 5


def test_grids_of_tables_2_and_3(mini):
    t = mini.config["tables"]
    seeds2 = t["table2_seeds"] or mini.seeds
    files = mini.table2_metrics()
    assert len(files) == len(t["table2_variants"]) * len(seeds2)
    assert all(f"/{t['table2_scale']}x/" in f for f in files)
    # table 3: real per seed, then syn and realsyn at every scale per seed
    seeds3 = t["table3_seeds"] or mini.seeds
    assert len(mini.table3_metrics()) == len(seeds3) * (1 + 2 * len(mini.config["scales"]))


def test_table2_scale_defaults_to_table1s_and_cuts_the_grid():
    same = Plan(load_config(MINI, overrides={"tables": {"scale": 2, "table2_scale": None}}))
    assert same.config["tables"]["table2_scale"] == 2
    assert all("/2x/" in f for f in same.table2_metrics() + same.quality_sets())
    cut = Plan(load_config(MINI, overrides={"tables": {"scale": 2, "table2_scale": 1}}))
    assert all("/1x/" in f for f in cut.table2_metrics() + cut.quality_sets())
    assert all("/2x/" in f for f in cut.table1_metrics() if "/real/" not in f)
    with pytest.raises(ConfigError, match="tables.table2_scale: 10 is not one of scales"):
        load_config(MINI, overrides={"tables": {"table2_scale": 10}})


def test_shards_and_manifests(mini):
    assert mini.shard_paths("mini", "ours", 0, 1, "tar") == ["results/synthetic/mini/ours/s0/1x/shards/00000.tar"]
    assert len(mini.shard_paths("mini", "ours", 0, 2, "tar")) == 1  # 20 classes' worth per shard
    tars = mini.shard_paths("mini", "ours", 0, 5, "tar")  # 50 classes' worth: ceil(50 / 20) shards
    assert tars == [f"results/synthetic/mini/ours/s0/5x/shards/{k:05d}.tar" for k in range(3)]
    assert mini.training_manifest("mini", "ours", 0, 1, "realsynfilt").endswith("/1x/filtered.parquet")
    assert mini.training_manifest("mini", "ours", 0, 1, "syn").endswith("/1x/manifest.parquet")
    with pytest.raises(ConfigError, match="dataset 'nope'"):
        mini.shard_paths("nope", "ours", 0, 1, "tar")


def test_filtered_mix_without_filter_names_the_key():
    plan = Plan(load_config(MINI, overrides={"quality": {"filter": "none"}}))
    with pytest.raises(ConfigError, match="quality.filter"):
        plan.training_manifest("mini", "ours", 0, 1, "synfilt")
    assert not any("filtered" in f for f in plan.quality_sets())


def test_unknown_names_are_config_errors(mini):
    with pytest.raises(ConfigError, match="config key loras"):
        mini.lora_index("mini", "nope")
    with pytest.raises(ConfigError, match="config key variants"):
        mini.variant_lora("mini", "nope", 0)


def test_variant_lora_and_models(mini):
    assert mini.variant_lora("mini", "base", 0) == []
    assert mini.variant_lora("mini", "ours", 2) == ["results/mini/lora/full/s2/lora.safetensors"]
    assert mini.base_model() == ["results/base_model/tiny"] and mini.encoder_init()


def test_privacy_and_ood_targets_follow_config(mini):
    assert "results/tables/table_privacy.csv" in mini.ablation_targets()
    off = Plan(load_config(MINI, overrides={"privacy": {"pool": None}}))
    assert "results/tables/table_privacy.csv" not in off.ablation_targets()
    with pytest.raises(ConfigError, match="ood.dataset"):
        mini.ood_metrics()
    targets = mini.lira_targets()
    assert targets["real_target"] == "results/mini_members/classify/real/s0/model.pt"
    assert targets["synthetic_target"].startswith("results/mini_members/classify/syn/")


def test_resources_mini_and_paper(mini):
    assert mini.resources("classify", {"dataset": "mini"}) == {"mem_mb": 3000, "runtime": 60, "gpu": 0}
    paper = Plan(load_config(REPO / "config" / "paper.yaml"))
    small = paper.resources("classify", {"dataset": "imagenet10", "mix": "syn", "scale": "1"})
    assert small["gpu"] == 4 and small["mem_mb"] >= 4 * 64000  # train.sh's 4 GPUs, a process each
    with pytest.raises(KeyError, match="no resources planned"):
        paper.resources("nope")


@pytest.mark.parametrize("stage, wildcards", [
    ("index", {}), ("embed", {}), ("caption", {}), ("nearest", {}),
    ("merge", {"scale": "10"}), ("classify", {"mix": "realsyn", "scale": "10"}),
    ("quality", {"scale": "10"}), ("finetune", {})])
def test_resources_grow_with_the_data(stage, wildcards):
    """IN-1K needs more memory or time than IN-10 wherever the stage's work grows with the data;
    the per-shard generation job does not grow with the scale (shards do)."""
    paper = Plan(load_config(REPO / "config" / "imagenet1k.yaml",
                             overrides={"datasets": {"in10": {"kind": "imagenet", "root": "/x", "classlist": "imagenet10",
                                                          "image_size": 512}}}))
    big = paper.resources(stage, {"dataset": "imagenet1k", **wildcards})
    small = paper.resources(stage, {"dataset": "in10", **wildcards})
    assert big["runtime"] > small["runtime"] or big["mem_mb"] > small["mem_mb"]
    one = paper.resources("generate", {"dataset": "imagenet1k", "scale": "1"})
    ten = paper.resources("generate", {"dataset": "imagenet1k", "scale": "10"})
    assert one == ten


def test_config_threads_reach_the_stages():
    cfg = load_config(MINI, overrides={"threads": 6, "pretrain": {"threads": 3}})
    assert Plan(cfg).threads("classify") == 6 and Plan(cfg).threads("merge") == 1
    assert Plan(cfg).threads("pretrain") == 3


def test_torch_threads_come_from_config_not_from_the_granted_cpus():
    """Snakemake scales {threads} down to --cores; torch must still run the config's thread count
    (CPU floats depend on it), so --cores 1 and --cores 2 give the same files."""
    import torch

    from realfake.cli import Command
    before, seen = torch.get_num_threads(), {}
    cmd = Command("t")
    cmd.action("go", "h", lambda args, cfg: seen.update(n=torch.get_num_threads(), granted=args.threads))
    try:
        cmd.main(["go", "--cfg", json.dumps({"threads": 3}), "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    assert seen == {"n": 3, "granted": 1}


def test_rule_params_are_narrowed_to_the_wildcards(mini):
    cfg = json.loads(mini.cfg_json(("datasets", "classify"), {"dataset": "mini", "seed": "0"}))
    assert set(cfg) == {"run_name", "threads", "datasets", "classify"} and list(cfg["datasets"]) == ["mini"]
    with_seeds = json.loads(mini.cfg_json(("seeds", "tables"), {}))
    assert with_seeds["seeds"] == [0, 1, 2, 3, 4]


def test_profile_placeholders_are_found_nested():
    left = placeholders({"slurm_account": "EDIT_ME", "mem_mb": 4000}, {"finetune": {"slurm_partition": "EDIT_ME"}})
    assert left == ["default-resources: slurm_account=EDIT_ME", "set-resources: finetune.slurm_partition=EDIT_ME"]
    assert placeholders({"mem_mb": 4000}, {}) == []


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_settings_fields_are_the_schema_keys(section):
    schema = load_schema()["properties"][section]
    props = schema.get("properties") or schema["additionalProperties"]["properties"]
    fields = {f.name for f in dataclasses.fields(SECTIONS[section])} - {"name"}
    assert fields == set(props)


@pytest.mark.parametrize("section, cls", [("datasets", Dataset), ("loras", Lora), ("variants", Variant)])
def test_named_entry_settings_are_the_schema_keys(section, cls):
    props = load_schema()["properties"][section]["additionalProperties"]["properties"]
    assert {f.name for f in dataclasses.fields(cls)} - {"name"} == set(props)


@pytest.mark.slow
def test_pretraining_gives_the_same_bytes_whatever_cpus_are_granted(smoke_cfg, tmp_path):
    """`--cores 1` scales the rule's {threads} to 1: the base model (and with it every LoRA and shard)
    must not change. The smoke config pretrains on 1 thread (``pretrain.threads``): two runs on 2
    threads each once gave different text-encoder floats on a loaded machine, so only the granted
    count varies here, not torch's."""
    from conftest import run_cli
    outs = []
    for granted in ("1", "2"):
        out = tmp_path / f"base{granted}"
        run_cli("pretrain", "base", "--cfg", json.dumps(smoke_cfg), "--threads", granted, "--out", str(out))
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert any(f.suffix == ".safetensors" for f in files)
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f


def test_classifier_price_follows_input_size_and_decoding():
    """A classifier costs its pixels' worth of GPU time (448 px: 4x 224 px) and never runs faster than
    its loader workers decode JPEGs: with one worker per GPU an IN-10 classifier is decode-bound."""
    from realfake.resources import DECODE_MS, PAPER_COSTS

    w = {"dataset": "imagenet10", "mix": "syn", "variant": "ours", "scale": 1, "seed": 0}
    base = Plan(load_config(REPO / "config" / "imagenet10.yaml"))
    gpu = PAPER_COSTS["classify"].s_per_item
    assert base.seconds_per_item("classify", w) == pytest.approx(gpu)  # 8 workers keep up with the GPU
    big = Plan(load_config(REPO / "config" / "imagenet10.yaml",
                           overrides={"classify": {"image_size": 448}}))
    assert big.seconds_per_item("classify", w) == pytest.approx(4 * gpu)
    assert big.seconds_per_item("classify", w, gpu_s=0.001) == pytest.approx(0.004)  # a measured rate scales too
    one = Plan(load_config(REPO / "config" / "imagenet10.yaml", overrides={"classify": {"num_workers": 1}}))
    assert one.seconds_per_item("classify", w) == pytest.approx(sum(DECODE_MS) / 1000)
    assert one.resources("classify", w)["runtime"] > base.resources("classify", w)["runtime"]
    assert base.seconds_per_item("generate", {"dataset": "imagenet10", "scale": 1}) == PAPER_COSTS["generate"].s_per_item
