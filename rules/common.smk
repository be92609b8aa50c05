# Helpers shared by every stage: config validation, path builders, input functions.
import json
import re
import sys
from pathlib import Path

import os

# realfake's modules are found by this process and by every job's `python -m realfake.<stage>`
# (jobs inherit the environment; cluster jobs re-read this file).
_SCRIPTS = str(Path(workflow.basedir) / "workflow_scripts")
sys.path.insert(0, _SCRIPTS)
os.environ.update({"PYTHONPATH": _SCRIPTS})

from realfake.config import (  # noqa: E402
    ConfigError,
    get_dataset,
    get_variant,
    read_yaml,
    shard_count,
    validate,
)

if not config:
    # no --configfile given: the mini world (make demo) is the default
    config.update(read_yaml(Path(workflow.basedir) / "config" / "mini.yaml"))
try:
    _resolved = validate(config)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")
config.clear()
config.update(_resolved)
try:  # shards are planned from config alone, so every dataset's class count must be known now
    SHARDS = {name: shard_count(config, name) for name in config["datasets"]}
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")

# datasets of the paper tables; a LiRA member half (member_half) only feeds the privacy stage
DATASETS = sorted(n for n, d in config["datasets"].items() if d["member_half"] is None)
# Attribute (multi-label) datasets report in table 10; the single-label ones in tables 1-3, 9.
ATTR_DATASETS = [n for n in DATASETS if config["datasets"][n].get("attributes")]
CLASS_DATASETS = [n for n in DATASETS if n not in ATTR_DATASETS]
SEEDS = config["seeds"]
CFG = json.dumps(config, sort_keys=True)


# Names are checked in input functions (get_dataset, get_variant, lora_name), so that an
# unknown name fails with a message naming the config key rather than "no rule to produce".
wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    variant=r"[A-Za-z0-9_.-]+",
    lora=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",
    scale=r"\d+",
    mix="syn|realsyn|synfilt|realsynfilt",
    which="manifest|filtered",
    run=r"real/s\d+|(syn|realsyn)(filt)?/[A-Za-z0-9_.-]+/\d+x/s\d+",
    oodset="v2|sketch|r|a",
    shard=r"\d{5}",
    k=r"\d+",


def base_model(wildcards=None):
    """Input function: the pretrained tiny model folder, or nothing (models.sd15 is a local path)."""
    if config["models"]["sd15"] is None:
        return "results/base_model/tiny"
    return []


def base_model_path():
    return config["models"]["sd15"] or "results/base_model/tiny"


def digits_data(wildcards):
    if get_dataset(config, wildcards.dataset)["kind"] == "digits":
        return f"results/{wildcards.dataset}/data"
    return []


def encoder_init(wildcards=None):
    if config["models"]["clip"] is None:
        return "results/image_encoder/random_init.pt"
    return []


def encoder_checkpoint():
    return config["models"]["clip"] or "results/image_encoder/random_init.pt"


def variant_lora(wildcards):
    """Input function: the LoRA file a generation variant uses, or nothing for the base model."""
    get_dataset(config, wildcards.dataset)
    lora = get_variant(config, wildcards.variant)["lora"]
    if lora is None:
        return []
    return f"results/{wildcards.dataset}/lora/{lora}/s{wildcards.seed}/lora.safetensors"


def synthetic_manifest(wildcards):
    """Input function: the manifest a classifier trains on; mixes ending in "filt" read the
    filtered manifest of the quality stage's filter."""
    w = wildcards
    name = "manifest"
    if w.get("mix", "").endswith("filt"):
        if config["quality"]["filter"] == "none":
            raise ConfigError(
                f"mix {w.mix} trains on a filtered synthetic set but config key quality.filter is none"
            )
        name = "filtered"
    return (
        f"results/synthetic/{w.dataset}/{w.variant}/s{w.seed}/{w.scale}x/{name}.parquet"
    )


def _shard_paths(w, ext):
    get_dataset(config, w.dataset)
    n = SHARDS[w.dataset]
    d = f"results/synthetic/{w.dataset}/{w.variant}/s{w.seed}/{w.scale}x/shards"
    return [f"{d}/{k:05d}.{ext}" for k in range(n)]


def shard_rows(wildcards):
    """Input function: every shard's manifest rows of one synthetic set."""
    get_variant(config, wildcards.variant)
    return _shard_paths(wildcards, "parquet")


def shard_tars(wildcards):
    return _shard_paths(wildcards, "tar")


def classifier_file(
    dataset, setting, seed, variant=None, scale=None, name="metrics.json"
):
    """A classify-stage output: metrics.json (default) or model.pt of one classifier."""
    if setting == "real":
        return f"results/{dataset}/classify/real/s{seed}/{name}"
    return f"results/{dataset}/classify/{setting}/{variant}/{scale}x/s{seed}/{name}"


def metrics(dataset, setting, seed, variant=None, scale=None):
    return classifier_file(dataset, setting, seed, variant, scale)


def model_file(dataset, setting, seed, variant=None, scale=None):
    return classifier_file(dataset, setting, seed, variant, scale, "model.pt")


def table_datasets(what, names, needs):
    """The datasets a table is over; none is an error naming the table and what it needs."""
    if not names:
        raise ConfigError(f"{what} needs {needs}")
    return names


def class_datasets(what):
    return table_datasets(
        what,
        CLASS_DATASETS,
        f"a single-label dataset under config key datasets; attribute datasets "
        f"({', '.join(ATTR_DATASETS) or 'none'}) report in results/tables/table10.csv",
    )


def table1_metrics(wildcards=None, datasets=None):
    t = config["tables"]
    out = []
    for ds in class_datasets("table 1") if datasets is None else datasets:
        for s in SEEDS:
            out.append(metrics(ds, "real", s))
            out.append(metrics(ds, "syn", s, t["table1_baseline"], t["scale"]))
            if t["table1_caption_baseline"]:
                out.append(
                    metrics(ds, "syn", s, t["table1_caption_baseline"], t["scale"])
                )
            out.append(metrics(ds, "syn", s, t["table1_method"], t["scale"]))
            out.append(metrics(ds, "realsyn", s, t["table1_method"], t["scale"]))
    return out


def table10_metrics(wildcards=None):
    names = table_datasets(
        "table 10",
        ATTR_DATASETS,
        "an attribute dataset (kind celeba with datasets.<name>.attributes)",
    )
    return table1_metrics(datasets=names)


def table2_metrics(wildcards=None):
    t = config["tables"]
    return [
        metrics(ds, "syn", s, v, t["scale"])
        for ds in class_datasets("table 2")
        for v in t["table2_variants"]
        for s in SEEDS
    ]


def _sample_manifests():
    t = config["tables"]
    s = SEEDS[0]
    return {
        f"{ds}:{v}": f"results/synthetic/{ds}/{v}/s{s}/{t['scale']}x/manifest.parquet"
        for ds in DATASETS
        for v in (t["table1_baseline"], t["table1_method"])
    }


def _dataset_samples(wildcards):
    """variant -> manifest of the table-1 variants (baselines, then ours) of one dataset."""
    get_dataset(config, wildcards.dataset)
    t = config["tables"]
    names = [t["table1_baseline"], t["table1_caption_baseline"], t["table1_method"]]
    return {
        v: f"results/synthetic/{wildcards.dataset}/{v}/s{SEEDS[0]}/{t['scale']}x/manifest.parquet"
        for v in names
        if v
    }


def dataset_sample_manifests(wildcards):
    return list(_dataset_samples(wildcards).values())


def dataset_sample_manifest_args(wildcards):
    return " ".join(
        f"{wildcards.dataset}:{v}={m}" for v, m in _dataset_samples(wildcards).items()
    )


def sample_manifests(wildcards=None):
    return list(_sample_manifests().values())


def sample_manifest_args():
    return [f"{k}={v}" for k, v in _sample_manifests().items()]


def demo_targets():
    out = ["results/figures/samples.png", "results/figures/samples.pdf"]
    out += ["results/tables/table1.csv"] if CLASS_DATASETS else []
    out += ["results/tables/table10.csv"] if ATTR_DATASETS else []
    for ds in DATASETS:
        out += [
            f"results/{ds}/captions.parquet",
            f"results/{ds}/class_means.pt",
        ]
    return out


def table3_metrics(wildcards=None):
    m = config["tables"]["table1_method"]
    out = [metrics(ds, "real", s) for ds in class_datasets("table 3") for s in SEEDS]
    return out + [
        metrics(ds, mix, s, m, k)
        for ds in CLASS_DATASETS
        for mix in ("syn", "realsyn")
        for k in config["scales"]
        for s in SEEDS
    ]


def _lira_targets():
    p = config["privacy"]
    s = SEEDS[0]
    return {
        "real members": model_file(p["members"], "real", s),
        "synthetic from members": model_file(
            p["members"], "syn", s, p["variant"], p["scale"]
        ),
    }


def nearest_manifest(wildcards):
    get_dataset(config, wildcards.dataset)
    n = config["nearest"]
    return f"results/synthetic/{wildcards.dataset}/{n['variant']}/s{SEEDS[0]}/{n['scale']}x/manifest.parquet"


def lira_inputs(wildcards=None):
    p = config["privacy"]
    return {
        "index": f"results/{p['pool']}/real_index.parquet",
        "members_index": f"results/{p['members']}/real_index.parquet",
        "shadows": [
            f"results/{p['pool']}/privacy/shadow/{k}.parquet"
            for k in range(p["shadows"])
        ],
        "targets": list(_lira_targets().values()),
    }


def lira_target_args(wildcards=None):
    return [f"'{k}={v}'" for k, v in _lira_targets().items()]


def quality_models(wildcards):
    """Input function: what the quality features need (real-data classifier or image encoder)."""
    get_dataset(config, wildcards.dataset)
    f = config["quality"]["features"]
    if f == "real_classifier":
        return {"classifier": model_file(wildcards.dataset, "real", SEEDS[0])}
    if f == "clip":
        return {"encoder": encoder_init()} if encoder_init() else {}
    return {}


def _scorer_args(input, encoder):
    """CLI arguments of the model a quality/filter job scores with."""
    if "classifier" in input.keys():
        return f"--classifier {input.classifier}"
    return f"--encoder {encoder_checkpoint()}" if encoder else ""


def quality_model_args(wildcards, input):
    return _scorer_args(input, config["quality"]["features"] == "clip")


def filter_models(wildcards):
    """Input function: the filter's scorer (real classifier of the same seed, or the image encoder)."""
    get_dataset(config, wildcards.dataset)
    f = config["quality"]["filter"]
    if f == "none":
        raise ConfigError(
            "a filtered synthetic set was requested but config key quality.filter is none"
        )
    if f == "classifier_confidence":
        return {"classifier": model_file(wildcards.dataset, "real", wildcards.seed)}
    return {"encoder": encoder_init()} if encoder_init() else {}


def filter_model_args(wildcards, input):
    return _scorer_args(input, True)


def quality_sets(wildcards=None):
    t, q = config["tables"], config["quality"]
    out = [
        f"results/{ds}/quality/{v}/s{s}/{t['scale']}x/manifest.parquet"
        for ds in CLASS_DATASETS
        for v in t["table2_variants"]
        for s in SEEDS
    ]
    if q["filter"] != "none":
        out += [
            f"results/{ds}/quality/{t['table1_method']}/s{s}/{t['scale']}x/filtered.parquet"
            for ds in CLASS_DATASETS
            for s in SEEDS
        ]
    return out


def quality_metrics(wildcards=None):
    t = config["tables"]
    out = list(table2_metrics())
    if config["quality"]["filter"] != "none":
        out += [
            metrics(ds, mix, s, t["table1_method"], t["scale"])
            for ds in CLASS_DATASETS
            for mix in ("synfilt", "realsynfilt", "realsyn")
            for s in SEEDS
        ]
    return out


def ood_labels(wildcards):
    """Params function: setting/variant/scale/seed of the classifier a {run} names."""
    parts = wildcards.run.split("/")
    if parts[0] == "real":
        return f"setting=real seed={parts[1][1:]}"
    return f"setting={parts[0]} variant={parts[1]} scale={parts[2][:-1]} seed={parts[3][1:]}"


def ood_metrics(wildcards=None):
    o, t = config["ood"], config["tables"]
    if o["dataset"] is None:
        raise ConfigError(
            "table 4 needs config key ood.dataset (an ImageNet-kind dataset) and ood.sets"
        )
    ds, m, k = o["dataset"], t["table1_method"], t["scale"]
    runs = [f"real/s{s}" for s in SEEDS] + [
        f"{mix}/{m}/{k}x/s{s}" for mix in ("syn", "realsyn") for s in SEEDS
    ]
    return [
        f"results/{ds}/ood/{r}/{name}.json"
        for r in runs
        for name, root in o["sets"].items()
        if root
    ]


def ablation_targets():
    class_tables = (
        [
            "results/tables/table2.csv",
            "results/figures/ablation.png",
            "results/figures/ablation.pdf",
            "results/tables/claims.csv",
            "results/tables/table3.csv",
            "results/figures/fig2_scaling.png",
            "results/figures/fig2_scaling.pdf",
            "results/tables/table9.csv",
            "results/tables/quality.csv",
            "results/figures/quality.png",
            "results/figures/quality.pdf",
        ]
        if CLASS_DATASETS
        else []
    )
    return (
        class_tables
        + [
            f"results/figures/samples_{ds}.{ext}"
            for ds in DATASETS
            for ext in ("png", "pdf")
        ]
        + [
            f"results/figures/fig4_nearest_{ds}.{ext}"
            for ds in DATASETS
            for ext in ("png", "pdf")
        ]
        + (
            [
                "results/tables/table_privacy.csv",
                "results/figures/fig3_lira.png",
                "results/figures/fig3_lira.pdf",
            ]
            if config["privacy"]["pool"]
            else []
        )
        + (["results/tables/table4.csv"] if config["ood"]["dataset"] else [])
    )


def cfg_for(*sections):
    """Params function: the config sections a rule reads, as JSON, narrowed to its wildcards.

    Passing only these (and not the whole config) keeps Snakemake's params rerun trigger precise:
    editing classify.epochs reruns classifiers, not the fine-tuning.
    """

    def narrowed(wildcards):
        out = {"run_name": config["run_name"], "threads": config["threads"]}
        if "seeds" in sections:
            out["seeds"] = config["seeds"]
        for sec in sections:
            if sec == "seeds":
                continue
            value = config[sec]
            key = {"datasets": "dataset", "loras": "lora", "variants": "variant"}.get(
                sec
            )
            if key and key in wildcards.keys():
                value = {wildcards[key]: value[wildcards[key]]}
            out[sec] = value
        return json.dumps(out, sort_keys=True)

    return narrowed


PAPER_SCALE = config["models"]["sd15"] is not None
# Per-job memory (MB) and runtime (minutes) at paper scale (IN-1K-sized); the CPU mini world
# needs far less, so a small test cluster can schedule it.
PAPER_RESOURCES = {
    "caption": (32000, 480),
    "embed": (16000, 240),
    "finetune": (32000, 2880),
    "generate": (24000, 1440),
    "classify": (64000, 4320),
}


def gpu_count(stage):
    """GPUs a stage asks the scheduler for: one at paper scale, none in the CPU mini world."""
    return 1 if PAPER_SCALE else 0


def mem_mb(stage):
    return PAPER_RESOURCES[stage][0] if PAPER_SCALE else 3000


def runtime(stage):
    return PAPER_RESOURCES[stage][1] if PAPER_SCALE else 60


def lora_arg(wildcards):
    lora = variant_lora(wildcards)
    return f"--lora {lora}" if lora else ""


def use_real_flag(wildcards):
    return "--use-real" if wildcards.mix.startswith("realsyn") else ""


def lora_index(wildcards):
    """Input function of finetune: the real index, after checking the LoRA name."""
    if wildcards.lora not in config["loras"]:
        raise ConfigError(
            f"unknown LoRA {wildcards.lora!r}: not under config key loras (defined: {sorted(config['loras'])})"
        )
    get_dataset(config, wildcards.dataset)
    return f"results/{wildcards.dataset}/real_index.parquet"


def _resource_texts(mapping, prefix=""):
    """(key, raw text) of every resource in a profile mapping (nested for set-resources)."""
    for key, value in dict(mapping or {}).items():
        if hasattr(value, "items"):
            yield from _resource_texts(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", str(getattr(value, "raw", value))


def check_profile_placeholders():
    """Stop before any submission while a profile value is still an EDIT_ME placeholder."""
    rs = workflow.resource_settings
    left = [
        f"{where}: {key}={text}"
        for where, mapping in (
            ("default-resources", rs.default_resources),
            ("set-resources", rs.overwrite_resources),
        )
        for key, text in _resource_texts(mapping)
        if "EDIT_ME" in text
    ]
    if left:
        raise WorkflowError(
            "profile value left as placeholder ("
            + "; ".join(left)
            + "): edit slurm/config.yaml (README, 'Running on Slurm') before submitting"
        )


check_profile_placeholders()
