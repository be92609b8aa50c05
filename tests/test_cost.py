"""`make cost`: the planned jobs priced per rule; counts agree with Snakemake's own dry run, and
cutting the grid in config lowers the bill."""

import pandas as pd
import pytest
import yaml

from conftest import REPO
from realfake.config import load_config
from realfake.tools.cost import PAPER_COSTS, main, parse_dry_run, price, rule_stages
from realfake.plan import Plan

IN10 = str(REPO / "config" / "imagenet10.yaml")


def test_every_rule_with_resources_has_a_cost_stage():
    stages = rule_stages()
    assert stages["finetune"] == "finetune" and stages["generate_shard"] == "generate"
    assert stages["shadow_classifier"] == "shadow" and stages["classify_synthetic"] == "classify"
    assert set(stages.values()) <= set(PAPER_COSTS)


def test_parse_and_price_a_small_dry_run():
    text = """Job stats:
job         count
--------  -------
finetune        2
total           2

rule finetune:
    wildcards: dataset=imagenet10, lora=full, seed=0
rule finetune:
    wildcards: dataset=imagenet10, lora=vg, seed=1
"""
    jobs, stats = parse_dry_run(text)
    assert stats == {"finetune": 2} and [j.wildcards["lora"] for j in jobs] == ["full", "vg"]
    plan = Plan(load_config(IN10))
    df = price(jobs, plan, {"finetune": "finetune"}).set_index("rule")
    _, items = plan.stage_items("finetune", jobs[0].wildcards)
    gpus, c = plan.gpus("finetune", jobs[0].wildcards), PAPER_COSTS["finetune"]
    assert gpus == 8 and items == 100 * plan.train_images("imagenet10")  # 100 epochs
    assert df.loc["finetune", "gpu_hours"] == pytest.approx(2 * gpus * (c.minutes / 60 + items * c.s_per_item / 3600 / gpus), abs=0.05)
    assert df.loc["total", "jobs"] == 2


@pytest.mark.slow
def test_cost_counts_match_the_dry_run_and_a_cut_grid_costs_less(tmp_path, capsys):
    full, cut = tmp_path / "full.csv", tmp_path / "cut.csv"
    main(["--configfile", IN10, "--from-scratch", "--out", str(full)])
    from realfake.tools.cost import dry_run
    _, stats = parse_dry_run(dry_run([IN10], ["all_ablation"], tmp_path / "empty"))
    df = pd.read_csv(full).set_index("rule")
    assert {r: int(df.loc[r, "jobs"]) for r in stats} == stats  # every rule's jobs, as Snakemake counts them
    assert df.loc["total", "jobs"] == sum(stats.values())
    assert df.loc["total", "gpu_hours"] > 0 and df.loc["generate_shard", "disk_gb"] > 0
    one_seed = tmp_path / "one_seed.yaml"
    one_seed.write_text(yaml.safe_dump({"tables": {"table2_seeds": [0], "table3_seeds": [0]}}))
    main(["--configfile", IN10, str(one_seed), "--from-scratch", "--out", str(cut)])
    df_cut = pd.read_csv(cut).set_index("rule")
    for col in ("jobs", "gpu_hours", "disk_gb"):
        assert df_cut.loc["total", col] < df.loc["total", col], col
    assert df_cut.loc["finetune", "jobs"] < df.loc["finetune", "jobs"]  # the ablation LoRAs of seeds 1-2 go
    out = capsys.readouterr().out
    assert "total" in out and f"priced: all_ablation of {IN10} from an empty results folder" in out
    assert df.loc["pipeline_shadow", "jobs"] == 16 and df.loc["lira", "jobs"] == 1  # figure 3 is priced


def test_grid_seeds_must_be_configured_seeds():
    from realfake.config import ConfigError

    with pytest.raises(ConfigError, match="tables.table3_seeds: seed 7"):
        load_config(IN10, overrides={"tables": {"table3_seeds": [7]}})
    plan = Plan(load_config(IN10, overrides={"tables": {"table2_seeds": [1]}}))
    assert plan.grid_seeds("table2") == [1] and plan.grid_seeds("table3") == plan.seeds
    assert all("/s1/" in m for m in plan.table2_metrics())


def test_measured_throughput_replaces_the_planning_figures(tmp_path):
    from realfake.tools.cost import measured_costs

    csv = tmp_path / "fullsize.csv"
    pd.DataFrame({"stage": ["caption", "finetune", "generate", "classify", "generate"],
                  "device": ["cuda", "cuda", "cuda", "cuda", "cpu"],
                  "seconds_per_item": [0.01, 0.05, 0.2, 0.001, 400.0]}).to_csv(csv, index=False)
    measured = measured_costs(csv)
    assert measured == {"finetune": 0.05, "generate": 0.2, "classify": 0.001, "shadow": 0.001}  # GPU rows only
    plan = Plan(load_config(IN10))
    jobs, _ = parse_dry_run("rule finetune:\n    wildcards: dataset=imagenet10, lora=full, seed=0\n")
    planned = price(jobs, plan, {"finetune": "finetune"}).set_index("rule").loc["finetune", "gpu_hours"]
    _, items = plan.stage_items("finetune", jobs[0].wildcards)
    c = PAPER_COSTS["finetune"]
    got = price(jobs, plan, {"finetune": "finetune"}, measured).set_index("rule").loc["finetune", "gpu_hours"]
    assert got == pytest.approx(8 * c.minutes / 60 + items * 0.05 / 3600, abs=0.05) and got != planned
    with pytest.raises(ValueError, match="no GPU rows"):
        pd.DataFrame({"stage": ["generate"], "device": ["cpu"], "seconds_per_item": [1.0]}).to_csv(csv, index=False)
        measured_costs(csv)
    with pytest.raises(ValueError, match="not found"):
        measured_costs(tmp_path / "nope.csv")


def test_measured_start_up_replaces_the_planning_minutes(tmp_path):
    """A full-size rehearsal's ``startup_s`` (process start, imports and model load to the first
    batch, GPU rows) replaces a stage's planning start-up minutes per job; an older table without the
    column keeps them."""
    from realfake.tools.cost import measured_startups

    csv = tmp_path / "fullsize.csv"
    pd.DataFrame({"stage": ["finetune", "generate"], "device": ["cuda", "cpu"], "seconds_per_item": [0.05, 9.0],
                  "startup_s": [90.0, 30.0]}).to_csv(csv, index=False)
    startups = measured_startups(csv)
    assert startups == {"finetune": 1.5}  # GPU rows only
    plan = Plan(load_config(IN10))
    jobs, _ = parse_dry_run("rule finetune:\n    wildcards: dataset=imagenet10, lora=full, seed=0\n")
    _, items = plan.stage_items("finetune", jobs[0].wildcards)
    got = price(jobs, plan, {"finetune": "finetune"}, {"finetune": 0.05}, startups).set_index("rule")
    assert got.loc["finetune", "gpu_hours"] == pytest.approx(8 * 1.5 / 60 + items * 0.05 / 3600, abs=0.05)
    pd.DataFrame({"stage": ["finetune"], "device": ["cuda"], "seconds_per_item": [0.05]}).to_csv(csv, index=False)
    assert measured_startups(csv) == {}


def test_a_folder_dataset_is_counted_when_its_root_is_readable(tmp_path):
    """The user's own image folder is priced at the images it holds (15 per class here), not the
    planning figure of 500 per class; a root not mounted on the planning machine falls back to it."""
    from PIL import Image

    from realfake.resources import TRAIN_PER_CLASS

    root = tmp_path / "foxes"
    for split, n in (("train", 15), ("test", 5)):
        for c in ("red", "arctic", "fennec"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8)).save(root / split / c / f"{i}.jpg")
    (root / "train" / "red" / "notes.txt").write_text("not an image")

    def plan(root_dir, **ds):
        return Plan(load_config(REPO / "config" / "my_dataset.yaml", overrides={
            "datasets": {"my_dataset": {"root": str(root_dir), "num_classes": 3, **ds}}}))

    counted = plan(root)
    assert counted.train_images("my_dataset") == 45
    assert counted.train_images_source("my_dataset") == f"counted under {root}/train"
    assert plan(root, train_per_class=10).train_images("my_dataset") == 30
    missing = plan(tmp_path / "not_mounted")
    assert missing.train_images("my_dataset") == 3 * TRAIN_PER_CLASS["imagefolder"]
    assert "is not readable here" in missing.train_images_source("my_dataset")
    tuned = counted.stage_items("finetune", {"dataset": "my_dataset", "lora": "full", "seed": "0"})[1]
    assert tuned < missing.stage_items("finetune", {"dataset": "my_dataset", "lora": "full", "seed": "0"})[1]


def test_each_table_is_priced_alone_with_the_jobs_it_needs(monkeypatch, tmp_path):
    """make cost PER_TABLE=1: a dry run per table; each row is that table's whole bill (its LoRA and
    shards included), so a table that needs more jobs costs more, and the rows are not additive."""
    from pathlib import Path

    import realfake.tools.cost as cost

    runs = {"table1": "rule finetune:\n    wildcards: dataset=imagenet10, lora=full, seed=0\n",
            "table2": "rule finetune:\n    wildcards: dataset=imagenet10, lora=full, seed=0\n"
                      "rule finetune:\n    wildcards: dataset=imagenet10, lora=vg, seed=0\n"}
    asked = []

    def fake(configfiles, targets, workdir):
        asked.append(targets)
        return runs[Path(targets[0]).stem]

    monkeypatch.setattr(cost, "dry_run", fake)
    plan = Plan(load_config(IN10))
    assert cost.table_targets(plan)[:2] == ["results/tables/table1.csv", "results/tables/table2.csv"]
    df = cost.per_table([IN10], ["results/tables/table1.csv", "results/tables/table2.csv"], tmp_path, plan,
                        {"finetune": "finetune"}, {}).set_index("table")
    assert asked == [["results/tables/table1.csv"], ["results/tables/table2.csv"]]
    assert df.loc["table1", "jobs"] == 1 and df.loc["table2", "jobs"] == 2
    assert df.loc["table2", "gpu_hours"] == pytest.approx(2 * df.loc["table1", "gpu_hours"], rel=0.01)
