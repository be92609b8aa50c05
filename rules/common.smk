# Wiring only: config validation, wildcard constraints and one-line wrappers around realfake.plan,
# where every path, target list and resource request is defined (and unit-tested).
import os
import shlex
import sys
from pathlib import Path

# realfake's modules are found by this process and by every job's `python -m realfake.<stage>`
# (jobs inherit the environment; cluster jobs re-read this file). Prepended, not replaced.
_SCRIPTS = str(Path(workflow.basedir) / "workflow_scripts")
sys.path.insert(0, _SCRIPTS)
_INHERITED = dict(os.environ).get(
    "PYTHONPATH", ""
)  # optional: the user's own path, kept after ours
os.environ.update(
    {"PYTHONPATH": os.pathsep.join(p for p in (_SCRIPTS, _INHERITED) if p)}
)
# Jobs run `python` from PATH: the Python running Snakemake comes first, so `.venv/bin/snakemake`
# works without activating the venv (a conda env, when used, is activated in front of it).
_BIN = str(Path(sys.executable).parent)
_PATH = dict(os.environ).get("PATH", "")
if _PATH.split(os.pathsep)[0] != _BIN:
    os.environ.update({"PATH": os.pathsep.join(p for p in (_BIN, _PATH) if p)})
# In a conda env Snakemake removes PYTHONPATH from the job's environment (it would mix the env's
# packages with others), so every command also sets it itself, after the env is activated.
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={shlex.quote(_SCRIPTS)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "  # braces doubled: the prefix is formatted too
)

from realfake.config import (
    ConfigError,
    command_line_values,
    read_config_files,
    validate,
)  # noqa: E402
from realfake.plan import Plan, placeholders  # noqa: E402
from realfake.resources import DATA_PARALLEL, MINI_RESOURCES  # noqa: E402
from realfake.runlock import RunLocked, hold_run_lock  # noqa: E402
from realfake.paths import (
    MIXES,
    P,
    RESULTS,
    bench_file,
    figure,
    log_file,
    sidecar,
    table,
    table_html,
)  # noqa: E402

try:
    # Our own reading of the files: a base file named by `extends:` goes beneath each file, and a
    # key given twice in one mapping is an error (Snakemake's reading keeps the last one).
    # No --configfile: the mini world (make demo) is the default.
    _files = workflow.configfiles or [Path(workflow.basedir) / "config" / "mini.yaml"]
    _overrides = command_line_values(workflow.config_settings.config)
    _resolved = validate(read_config_files(_files, _overrides))
    config.clear()
    config.update(_resolved)
    PLAN = Plan(config)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")

DATASETS = PLAN.datasets
_RUN_LOCK = (
    []
)  # the results folder's run lock, held while this run lives (realfake.runlock)


onstart:
    try:
        _RUN_LOCK.append(hold_run_lock(RESULTS))
    except RunLocked as exc:
        raise WorkflowError(str(exc))


# Names are checked in input functions (through realfake.plan), so that an unknown name fails
# with a message naming the config key rather than "no rule to produce".
wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    variant=r"[A-Za-z0-9_.-]+",
    lora=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",
    scale=r"\d+",
    mix="|".join(MIXES),
    which="manifest|filtered",
    run=r"real/s\d+|(" + "|".join(MIXES) + r")/[A-Za-z0-9_.-]+/\d+x/s\d+",
    oodset="v2|sketch|r|a",
    shard=r"\d{5}",
    k=r"\d+",
    model="sd15|blip2|clip|sscd|resnet50_pretrained|inception",


# ---------------------------------------------------------------- params and resources
def cfg_for(*sections):
    """Params function: the config sections a rule reads, as JSON, narrowed to its wildcards."""
    return lambda w: PLAN.cfg_json(sections, dict(w.items()))


def res(stage):
    """Resources of a stage's jobs, each a function of the job's wildcards (dataset, scale); every
    job on one node (a data-parallel job's GPUs with it: torchrun starts its processes locally).
    """
    return {
        "nodes": 1,
        **{
            key: (lambda w, key=key: PLAN.resources(stage, dict(w.items()))[key])
            for key in ("mem_mb", "runtime", "gpu")
        },
    }


def threads_for(stage):
    """Threads of a stage's jobs; a data-parallel stage's depend on the dataset's GPU count."""
    if stage in DATA_PARALLEL:
        return lambda w: PLAN.threads(stage, dict(w.items()))
    return PLAN.threads(stage)


def segments_of(stage):
    """Params function: the jobs (segments) a training run is split into to fit max_job_minutes."""
    return lambda w: PLAN.segments(stage, dict(w.items()))


def training_retries(stage):
    """A training rule's retries: one rerun per segment after the first, plus the retries the
    profile or --retries grants every job; None (Snakemake's default) when no job is segmented.
    """
    extra = PLAN.max_segments(stage) - 1
    if extra <= 0:
        return None
    settings = workflow.execution_settings  # None while only planning (-n)
    return extra + (settings.retries if settings else 0)


def launcher(stage):
    """Params function: `python -m realfake.<stage>`, or torchrun starting it once per GPU (docs/cluster.md,
    "GPUs per stage")."""
    return lambda w: PLAN.launcher(stage, dict(w.items()))


# ---------------------------------------------------------------- input functions
def base_model(w):
    return PLAN.base_model()


def fetched(*names):
    """Input function: the manifests of those models the config gives as downloads (fetch_model)."""
    return lambda w: PLAN.fetched(*names)


def classifier_weights(w):
    return PLAN.classifier_weights(w.dataset)


def encoder_init(w):
    return PLAN.encoder_init()


def digits_data(w):
    return PLAN.digits_data(w.dataset)


def lora_index(w):
    return PLAN.lora_index(w.dataset, w.lora)


def variant_lora(w):
    return PLAN.variant_lora(w.dataset, w.variant, w.seed)


def training_manifest(w):
    return PLAN.training_manifest(w.dataset, w.variant, w.seed, w.scale, w.mix)


def shard_rows(w):
    return PLAN.shard_paths(w.dataset, w.variant, w.seed, w.scale, "parquet")


def shard_tars(w):
    return PLAN.shard_paths(w.dataset, w.variant, w.seed, w.scale, "tar")


def nearest_manifest(w):
    return PLAN.nearest_manifest(w.dataset)


def quality_models(w):
    return PLAN.quality_models(w.dataset)


def filter_models(w):
    return PLAN.filter_models(w.dataset, w.seed)


def lira_inputs(w):
    return PLAN.lira_inputs()


def pipeline_shadow_inputs(w):
    return PLAN.pipeline_shadow_inputs(int(w.k))


def dataset_sample_manifests(w):
    return PLAN.dataset_sample_manifests(w.dataset)


# ---------------------------------------------------------------- params functions
def lora_arg(w):
    return " ".join(
        f"--lora {shlex.quote(f)}"
        for f in PLAN.variant_lora(w.dataset, w.variant, w.seed)
    )


def use_real_flag(w):
    return "--use-real" if w.mix.startswith("realsyn") else ""


def quality_model_args(w, input):
    return PLAN.scorer_args(
        dict(input.items()), config["quality"]["features"] == "clip"
    )


def optional_arg(flag, name):
    """Params function: ``flag <file> ...`` with the files of the optional input ``name``, or nothing."""
    return lambda w, input: " ".join(
        ([flag] if getattr(input, name) else [])
        + [shlex.quote(f) for f in getattr(input, name)]
    )


def filter_model_args(w, input):
    return PLAN.scorer_args(dict(input.items()), True)


# ---------------------------------------------------------------- target lists
def table_inputs(name):
    """Input function of a table rule: the metrics files its rows are computed from."""
    return lambda w: getattr(PLAN, f"{name}_metrics")()


def target_list(name):
    return lambda w: getattr(PLAN, name)()


# ---------------------------------------------------------------- profile guard
def check_profile_placeholders():
    """Stop before any submission while a profile value is still an EDIT_ME placeholder."""
    rs = workflow.resource_settings
    left = placeholders(rs.default_resources, rs.overwrite_resources)
    if left:
        raise WorkflowError(
            "profile value left as placeholder ("
            + "; ".join(left)
            + "): edit slurm/config.yaml (docs/cluster.md) before submitting"
        )


check_profile_placeholders()
