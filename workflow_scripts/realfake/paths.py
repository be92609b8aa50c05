"""Every artifact path pattern of the workflow, defined once.

Patterns hold Snakemake wildcards (``{dataset}``, ``{seed}``, ...). Rules use them as they are
(``output: P.lora``); Python fills them with ``str.format`` (``P.lora.format(dataset=...,
lora=..., seed=...)``). Tables, figures, logs and benchmark files are built by the functions below
from their names, so no other file spells a path under ``results/``.
"""

from __future__ import annotations

from types import SimpleNamespace

RESULTS = "results"
_R = RESULTS
MIXES = ("syn", "realsyn", "synfilt", "realsynfilt")  # {mix}: synthetic only or with the real data, filtered or not
MODELS = f"{_R}/models"  # fetched models: one folder per config key of models

P = SimpleNamespace(
    # data and its descriptions, per dataset
    digits_data=f"{_R}/{{dataset}}/data",
    index=f"{_R}/{{dataset}}/real_index.parquet",
    captions=f"{_R}/{{dataset}}/captions.parquet",
    embeddings=f"{_R}/{{dataset}}/embeddings.pt",
    class_means=f"{_R}/{{dataset}}/class_means.pt",
    # models
    model_dir=f"{_R}/models/{{model}}",  # MODELS below
    model_manifest=f"{_R}/models/{{model}}.manifest.json",
    tiny_base=f"{_R}/base_model/tiny",
    random_encoder=f"{_R}/image_encoder/random_init.pt",
    lora=f"{_R}/{{dataset}}/lora/{{lora}}/s{{seed}}/lora.safetensors",
    # synthetic sets
    set_dir=f"{_R}/synthetic/{{dataset}}/{{variant}}/s{{seed}}/{{scale}}x",
    set_file=f"{_R}/synthetic/{{dataset}}/{{variant}}/s{{seed}}/{{scale}}x/{{which}}.parquet",
    manifest=f"{_R}/synthetic/{{dataset}}/{{variant}}/s{{seed}}/{{scale}}x/manifest.parquet",
    filtered=f"{_R}/synthetic/{{dataset}}/{{variant}}/s{{seed}}/{{scale}}x/filtered.parquet",
    shard_tar=f"{_R}/synthetic/{{dataset}}/{{variant}}/s{{seed}}/{{scale}}x/shards/{{shard}}.tar",
    shard_rows=f"{_R}/synthetic/{{dataset}}/{{variant}}/s{{seed}}/{{scale}}x/shards/{{shard}}.parquet",
    # classifiers: {name} is model.pt, metrics.json or curve.csv
    real_classifier=f"{_R}/{{dataset}}/classify/real/s{{seed}}/{{name}}",
    syn_classifier=f"{_R}/{{dataset}}/classify/{{mix}}/{{variant}}/{{scale}}x/s{{seed}}/{{name}}",
    run_classifier=f"{_R}/{{dataset}}/classify/{{run}}/{{name}}",
    # evaluation
    ood_metrics=f"{_R}/{{dataset}}/ood/{{run}}/{{oodset}}.json",
    shadow=f"{_R}/{{dataset}}/privacy/shadow/{{k}}.parquet",
    pipeline_shadow=f"{_R}/{{dataset}}/privacy/pipeline_shadow/{{k}}.parquet",
    real_features=f"{_R}/{{dataset}}/quality/real_features.pt",
    quality_set=f"{_R}/{{dataset}}/quality/{{variant}}/s{{seed}}/{{scale}}x/{{which}}.parquet",
)


def with_name(pattern: str, name: str) -> str:
    """A classifier pattern with its ``{name}`` filled (``model.pt``, ``metrics.json``), other
    wildcards kept."""
    return pattern.replace("{name}", name)


def table(name: str) -> str:
    return f"{_R}/tables/{name}.csv"


def table_html(name: str) -> str:
    """A table as an HTML page with its caption (what the Snakemake report shows inline)."""
    return f"{_R}/tables/{name}.html"


def sidecar(name: str) -> str:
    """A table's provenance sidecar."""
    return table(name) + ".json"


def figure(name: str, ext: str = "png") -> str:
    return f"{_R}/figures/{name}.{ext}"


def log_file(name: str) -> str:
    return f"{_R}/logs/{name}.log"


def bench_file(name: str) -> str:
    return f"{_R}/benchmarks/{name}.tsv"


def plan_file(name: str) -> str:
    """Planning outputs (``make cost``)."""
    return f"{_R}/plan/{name}"


for _kind in ("real", "syn", "run"):  # P.real_model, P.real_metrics, P.syn_model, ...
    setattr(P, f"{_kind}_model", with_name(getattr(P, f"{_kind}_classifier"), "model.pt"))
    setattr(P, f"{_kind}_metrics", with_name(getattr(P, f"{_kind}_classifier"), "metrics.json"))
    setattr(P, f"{_kind}_curve", with_name(getattr(P, f"{_kind}_classifier"), "curve.csv"))
