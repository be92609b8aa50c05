# Helpers shared by every stage: config validation, path builders, input functions.
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

from realfake.config import ConfigError, read_yaml, validate  # noqa: E402

if not config:
    # no --configfile given: the mini world (make demo) is the default
    config.update(read_yaml(Path(workflow.basedir) / "config" / "mini.yaml"))
try:
    _resolved = validate(config)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")
config.clear()
config.update(_resolved)

DATASETS = sorted(config["datasets"])
SEEDS = config["seeds"]
PY = f"PYTHONPATH={Path(workflow.basedir) / 'workflow_scripts'} python -m realfake"
CFG = json.dumps(config, sort_keys=True)


def _alt(names):
    return "|".join(names) if names else "__none__"


wildcard_constraints:
    dataset=_alt(DATASETS),
    variant=_alt(config["variants"]),
    lora=_alt(config["loras"]),
    seed=r"\d+",
    scale=r"\d+",
    mix="syn|realsyn",


def base_model(wildcards=None):
    """Input function: the pretrained tiny model folder, or nothing (a local path in config)."""
    if config["base_model"]["source"] == "pretrain":
        return "results/base_model/tiny"
    return []


def base_model_path():
    if config["base_model"]["source"] == "pretrain":
        return "results/base_model/tiny"
    return config["base_model"]["path"]


def digits_data(wildcards):
    if config["datasets"][wildcards.dataset]["kind"] == "digits":
        return f"results/{wildcards.dataset}/data"
    return []


def encoder_init(wildcards=None):
    if config["image_encoder"]["pretrained"] is None:
        return "results/image_encoder/random_init.pt"
    return []


def encoder_checkpoint():
    return config["image_encoder"]["pretrained"] or "results/image_encoder/random_init.pt"


def variant_lora(wildcards):
    """Input function: the LoRA file a generation variant uses, or nothing for the base model."""
    lora = config["variants"][wildcards.variant]["lora"]
    if lora is None:
        return []
    return f"results/{wildcards.dataset}/lora/{lora}/s{wildcards.seed}/lora.safetensors"


def synthetic_manifest(wildcards):
    return (
        f"results/synthetic/{wildcards.dataset}/{wildcards.variant}"
        f"/s{wildcards.seed}/{wildcards.scale}x/manifest.parquet"
    )


def metrics(dataset, setting, seed, variant=None, scale=None):
    if setting == "real":
        return f"results/{dataset}/classify/real/s{seed}/metrics.json"
    return f"results/{dataset}/classify/{setting}/{variant}/{scale}x/s{seed}/metrics.json"


def table1_metrics(wildcards=None):
    t = config["tables"]
    out = []
    for ds in DATASETS:
        for s in SEEDS:
            out.append(metrics(ds, "real", s))
            out.append(metrics(ds, "syn", s, t["table1_baseline"], t["scale"]))
            out.append(metrics(ds, "syn", s, t["table1_method"], t["scale"]))
            out.append(metrics(ds, "realsyn", s, t["table1_method"], t["scale"]))
    return out


def table2_metrics(wildcards=None):
    t = config["tables"]
    return [
        metrics(ds, "syn", s, v, t["scale"])
        for ds in DATASETS
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


def sample_manifests(wildcards=None):
    return list(_sample_manifests().values())


def sample_manifest_args():
    return [f"{k}={v}" for k, v in _sample_manifests().items()]


def demo_targets():
    out = ["results/tables/table1.csv", "results/figures/samples.png", "results/figures/samples.pdf"]
    for ds in DATASETS:
        out += [
            f"results/{ds}/captions.parquet",
            f"results/{ds}/class_means.pt",
        ]
    return out


def ablation_targets():
    return [
        "results/tables/table2.csv",
        "results/figures/ablation.png",
        "results/figures/ablation.pdf",
    ]


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
            key = {"datasets": "dataset", "loras": "lora", "variants": "variant"}.get(sec)
            if key and key in wildcards.keys():
                value = {wildcards[key]: value[wildcards[key]]}
            out[sec] = value
        return json.dumps(out, sort_keys=True)

    return narrowed


def gpu_count(stage):
    """GPUs a stage asks the scheduler for: one at paper scale, none in the CPU mini world."""
    return 1 if config["base_model"]["source"] == "path" else 0


def lora_arg(wildcards):
    lora = variant_lora(wildcards)
    return f"--lora {lora}" if lora else ""


def use_real_flag(wildcards):
    return "--use-real" if wildcards.mix == "realsyn" else ""
