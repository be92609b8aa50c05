"""Planning: every artifact path, target list, table row spec and resource request of the workflow.

Snakemake (``rules/common.smk``) wraps these in one-line input functions; :mod:`realfake.report`
reads table row specs from here too, so a table's rows and the classifiers planned for it come from
one definition. Everything here is a pure function of the validated config (no Snakemake, no file
reads beyond class lists), so it is unit-tested directly (``tests/test_plan.py``).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from .config import (class_count, dataset_section, get_dataset, get_variant, model_path, shadow_datasets,
                     shard_count)
from .distributed import launcher
from .errors import ConfigError
from .paths import MIXES, P, figure, table
from .tablespec import table1_spec

TINY_BASE = P.tiny_base
RANDOM_ENCODER = P.random_encoder


@dataclass(frozen=True)
class Cost:
    """The cost model behind one stage's declared resources at paper scale (docs/paper-scale.md, "Resources").

    Memory: ``mem_mb`` fixed (models, batches, loader workers) plus ``kb_per_row`` for each row of
    the per-row table the stage keeps (index rows, manifest rows, embeddings, descriptors); every
    stage streams its pixels, so nothing else grows with the data. Runtime: ``minutes`` of start-up
    plus ``s_per_item`` per item (on one GPU for GPU stages), times ``SAFETY``. The per-item times
    are planning assumptions for an A100-class GPU, not measurements (``make rehearsal`` measures
    this machine's CPU); a cluster's own figures go in through Snakemake's ``--set-resources``."""

    mem_mb: int
    kb_per_row: float
    minutes: int
    s_per_item: float
    gpu: bool


SAFETY = 2.0
PAPER_COSTS = {
    "index": Cost(2000, 0.5, 10, 0.002, False),      # one decode check per image, config threads in parallel
    "caption": Cost(32000, 0.3, 15, 0.05, True),     # BLIP-2 OPT-2.7B, greedy, 20 new tokens
    "embed": Cost(16000, 3.5, 10, 0.004, True),      # CLIP ViT-L/14; keeps 768 fp32 per image
    "finetune": Cost(32000, 0.5, 20, 0.08, True),    # SD 1.5 LoRA step per image, 512 px, with the MMD loss
    "generate": Cost(24000, 1.0, 10, 0.35, True),    # 30-step UniPC img2img at strength 0.75, fp16, 512 px
    "merge": Cost(4000, 0.1, 5, 0.00002, False),     # streaming: one shard's rows + 8-byte hashes (sorted copy)
    "classify": Cost(64000, 0.3, 20, 0.0012, True),  # ResNet-50 step per image incl. JPEG decode (8 workers)
    "shadow": Cost(64000, 0.3, 20, 0.0012, True),    # privacy's shadow classifiers: classify on one GPU
    "shadow_score": Cost(16000, 0.2, 10, 0.002, True),  # a pipeline shadow's classifier scores the pool (inference)
    "quality": Cost(16000, 1.0, 15, 0.004, True),    # feature extraction; chunked precision/recall
    "ood": Cost(16000, 0.2, 10, 0.002, True),        # ResNet-50 inference
    "nearest": Cost(16000, 1.2, 15, 0.006, True),    # SSCD descriptors, 512 fp16 per real image
    "report": Cost(4000, 0.0, 10, 0.0, False),
    "fetch": Cost(4000, 0.0, 60, 0.0, False),        # one model download (SD 1.5's 4 GB at ~10 MB/s: 7 min)
}
MINI_RESOURCES = (3000, 60)
DATA_PARALLEL = ("finetune", "classify")  # stages whose jobs run one process per GPU (torchrun)
SEGMENTED = DATA_PARALLEL  # training stages that can run as several jobs, resuming
# Typical training images per class of each dataset kind (train_per_class null), for planning only.
TRAIN_PER_CLASS = {"imagenet": 1281, "cub": 30, "cars": 42, "pets": 100, "eurosat": 2160, "digits": 110,
                   "celeba": 162770, "imagefolder": 500}
# Test/evaluation images per class of each kind (for evaluation-time estimates).
TEST_PER_CLASS = {"imagenet": 50, "cub": 29, "cars": 41, "pets": 99, "eurosat": 540, "digits": 70,
                  "celeba": 19962, "imagefolder": 50}


class Plan:
    """The planned workflow of one validated config."""

    def __init__(self, config: dict):
        self.config = config
        self.paper_scale = config["models"]["sd15"] is not None
        # datasets of the paper tables; a LiRA member half (member_half) only feeds the privacy stage
        self.datasets = sorted(n for n, d in config["datasets"].items() if d["member_half"] is None)
        # attribute (multi-label) datasets report in table 10; the single-label ones in tables 1-3, 9
        self.attr_datasets = [n for n in self.datasets if config["datasets"][n].get("attributes")]
        self.class_datasets = [n for n in self.datasets if n not in self.attr_datasets]
        self.seeds = config["seeds"]
        # shards are planned from config alone, so every dataset's class count must be known now
        for name in config["datasets"]:
            class_count(config, name)

    # ------------------------------------------------------------------ artifact paths
    @staticmethod
    def index(dataset: str) -> str:
        return P.index.format(dataset=dataset)

    @staticmethod
    def set_dir(dataset: str, variant: str, seed, scale) -> str:
        """Folder of one synthetic set (manifest, filtered manifest, shards)."""
        return P.set_dir.format(dataset=dataset, variant=variant, seed=seed, scale=scale)

    def manifest(self, dataset: str, variant: str, seed, scale, which: str = "manifest") -> str:
        return f"{self.set_dir(dataset, variant, seed, scale)}/{which}.parquet"

    def shard_paths(self, dataset: str, variant: str, seed, scale, ext: str) -> list[str]:
        """Every shard's .tar or .parquet (rows) of one synthetic set."""
        get_dataset(self.config, dataset)
        d = f"{self.set_dir(dataset, variant, seed, scale)}/shards"
        return [f"{d}/{k:05d}.{ext}" for k in range(shard_count(self.config, dataset, scale))]

    @staticmethod
    def classifier_file(dataset, setting, seed, variant=None, scale=None, name="metrics.json") -> str:
        """A classify-stage output: metrics.json (default) or model.pt of one classifier."""
        if setting == "real":
            return P.real_classifier.format(dataset=dataset, seed=seed, name=name)
        return P.syn_classifier.format(dataset=dataset, mix=setting, variant=variant, scale=scale, seed=seed, name=name)

    def metrics(self, dataset, setting, seed, variant=None, scale=None) -> str:
        return self.classifier_file(dataset, setting, seed, variant, scale)

    def model_file(self, dataset, setting, seed, variant=None, scale=None) -> str:
        return self.classifier_file(dataset, setting, seed, variant, scale, "model.pt")

    def lora_file(self, dataset: str, lora: str, seed) -> str:
        return P.lora.format(dataset=dataset, lora=lora, seed=seed)

    # ------------------------------------------------------------------ models
    def fetched(self, *names: str) -> list[str]:
        """Manifests of the models among ``names`` that the config gives as downloads (fetch_model
        makes them); nothing for local paths."""
        return [P.model_manifest.format(model=n) for n in names if isinstance(self.config["models"][n], dict)]

    def classifier_weights(self, dataset: str) -> list[str]:
        """The fetched ImageNet ResNet-50 when the dataset's classifiers start from it."""
        pretrained = dataset_section(self.config, "classify", dataset)["pretrained"]
        return self.fetched("resnet50_pretrained") if pretrained else []

    def base_model(self) -> list[str]:
        """The pretrained tiny model folder as an input, the fetched SD 1.5, or nothing (a local path)."""
        return self.fetched("sd15") if self.paper_scale else [TINY_BASE]

    def base_model_path(self) -> str:
        return model_path(self.config, "sd15") or TINY_BASE

    def encoder_init(self) -> list[str]:
        return self.fetched("clip") if self.config["models"]["clip"] else [RANDOM_ENCODER]

    def encoder_input(self) -> dict[str, str]:
        """The image encoder as a named input: the mini world's random init file, the fetched CLIP's
        manifest, or nothing (a local file)."""
        return {"encoder": f for f in self.encoder_init()}

    def encoder_checkpoint(self) -> str:
        return model_path(self.config, "clip") or RANDOM_ENCODER

    # ------------------------------------------------------------------ stage inputs
    def digits_data(self, dataset: str) -> list[str]:
        """The mini world's digits folder for a digits dataset; nothing for a dataset on disk."""
        return [P.digits_data.format(dataset=dataset)] if get_dataset(self.config, dataset)["kind"] == "digits" else []

    def lora_index(self, dataset: str, lora: str) -> str:
        """Input of finetune: the real index, after checking both names."""
        if lora not in self.config["loras"]:
            raise ConfigError(f"unknown LoRA {lora!r}: not under config key loras "
                              f"(defined: {sorted(self.config['loras'])})")
        get_dataset(self.config, dataset)
        return self.index(dataset)

    def variant_lora(self, dataset: str, variant: str, seed) -> list[str]:
        """The LoRA file a generation variant uses, or nothing for the base model."""
        get_dataset(self.config, dataset)
        lora = get_variant(self.config, variant)["lora"]
        return [] if lora is None else [self.lora_file(dataset, lora, seed)]

    def training_manifest(self, dataset: str, variant: str, seed, scale, mix: str) -> str:
        """The manifest a synthetic classifier trains on; mixes ending in "filt" read the quality
        stage's filtered manifest."""
        if mix.endswith("filt"):
            if self.config["quality"]["filter"] == "none":
                raise ConfigError(f"mix {mix} trains on a filtered synthetic set but config key quality.filter "
                                  "is none")
            return self.manifest(dataset, variant, seed, scale, "filtered")
        return self.manifest(dataset, variant, seed, scale)

    def quality_models(self, dataset: str) -> dict[str, str]:
        """What the quality features need: the real-data classifier or the image encoder (or nothing)."""
        get_dataset(self.config, dataset)
        f = self.config["quality"]["features"]
        if f == "real_classifier":
            return {"classifier": self.model_file(dataset, "real", self.seeds[0])}
        if f == "inception":  # models.inception's download, unless quality.inception names a file
            return {} if self.config["quality"]["inception"] else {"inception": m for m in self.fetched("inception")}
        return self.encoder_input() if f == "clip" else {}

    def inception_weights(self) -> str | None:
        """The Inception-v3 file of inception features: quality.inception, else models.inception."""
        return self.config["quality"]["inception"] or model_path(self.config, "inception")

    def filter_models(self, dataset: str, seed) -> dict[str, str]:
        """The filter's scorer: the real classifier of the same seed, or the image encoder."""
        get_dataset(self.config, dataset)
        f = self.config["quality"]["filter"]
        if f == "none":
            raise ConfigError("a filtered synthetic set was requested but config key quality.filter is none")
        if f == "classifier_confidence":
            return {"classifier": self.model_file(dataset, "real", seed)}
        return self.encoder_input()

    def scorer_args(self, inputs: dict, encoder: bool) -> str:
        """CLI arguments of the model a quality/filter job scores with (paths shell-quoted)."""
        if "classifier" in inputs:
            return f"--classifier {shlex.quote(str(inputs['classifier']))}"
        if not encoder and self.config["quality"]["features"] == "inception" and self.inception_weights():
            return f"--inception {shlex.quote(str(self.inception_weights()))}"
        return f"--encoder {shlex.quote(str(self.encoder_checkpoint()))}" if encoder else ""

    def nearest_manifest(self, dataset: str) -> str:
        get_dataset(self.config, dataset)
        n = self.config["nearest"]
        return self.manifest(dataset, n["variant"], self.seeds[0], n["scale"])

    def lira_targets(self) -> dict[str, str]:
        """model.pt of the two attacked classifiers: trained on the real members, and on synthetic
        data made from them."""
        p = self.config["privacy"]
        s = self.seeds[0]
        return {"real_target": self.model_file(p["members"], "real", s),
                "synthetic_target": self.model_file(p["members"], "syn", s, p["variant"], p["scale"])}

    def lira_inputs(self) -> dict:
        p = self.config["privacy"]
        return {"index": self.index(p["pool"]), "members_index": self.index(p["members"]),
                "shadows": [P.shadow.format(dataset=p["pool"], k=k) for k in range(p["shadows"])],
                "synthetic_shadows": [P.pipeline_shadow.format(dataset=p["pool"], k=k)
                                      for k in range(len(shadow_datasets(self.config)))],
                **self.lira_targets()}

    def pipeline_shadow_inputs(self, k: int) -> dict:
        """A pipeline shadow's derived dataset index and its synthetic-data classifier."""
        p = self.config["privacy"]
        names = shadow_datasets(self.config)
        if not 0 <= k < len(names):
            raise ConfigError(f"pipeline shadow {k} is not planned (privacy.pipeline_shadows: {len(names)})")
        return {"index": self.index(p["pool"]), "half_index": self.index(names[k]),
                "model": self.model_file(names[k], "syn", self.seeds[0], p["variant"], p["scale"])}

    # ------------------------------------------------------------------ target lists
    def table_datasets(self, what: str, names: list[str], needs: str) -> list[str]:
        """The datasets a table is over; none is an error naming the table and what it needs."""
        if not names:
            raise ConfigError(f"{what} needs {needs}")
        return names

    def class_table_datasets(self, what: str) -> list[str]:
        return self.table_datasets(
            what, self.class_datasets,
            f"a single-label dataset under config key datasets; attribute datasets "
            f"({', '.join(self.attr_datasets) or 'none'}) report in {table('table10')}")

    def table1_metrics(self, datasets: list[str] | None = None) -> list[str]:
        """metrics.json of every table-1 cell (table_spec rows x seeds)."""
        t = self.config["tables"]
        names = self.class_table_datasets("table 1") if datasets is None else datasets
        return [self.metrics(ds, r.setting, s, r.variant, t["scale"])
                for ds in names for s in self.seeds for r in table1_spec(t)]

    def table10_metrics(self) -> list[str]:
        names = self.table_datasets("table 10", self.attr_datasets,
                                    "an attribute dataset (kind celeba with datasets.<name>.attributes)")
        return self.table1_metrics(datasets=names)

    def grid_seeds(self, table: str) -> list[int]:
        """Seeds of a grid: ``tables.<table>_seeds`` (a cut grid), else every seed."""
        return self.config["tables"][f"{table}_seeds"] or self.seeds

    def table2_metrics(self) -> list[str]:
        t = self.config["tables"]
        return [self.metrics(ds, "syn", s, v, t["table2_scale"]) for ds in self.class_table_datasets("table 2")
                for v in t["table2_variants"] for s in self.grid_seeds("table2")]

    def table3_metrics(self) -> list[str]:
        m, seeds = self.config["tables"]["table1_method"], self.grid_seeds("table3")
        out = [self.metrics(ds, "real", s) for ds in self.class_table_datasets("table 3") for s in seeds]
        return out + [self.metrics(ds, mix, s, m, k) for ds in self.class_datasets for mix in ("syn", "realsyn")
                      for k in self.config["scales"] for s in seeds]

    def sample_manifests(self) -> list[str]:
        """Manifests of the overview sample figure: each dataset's baseline and method (first seed)."""
        t = self.config["tables"]
        return list(dict.fromkeys(self.manifest(ds, v, self.seeds[0], t["scale"]) for ds in self.datasets
                                  for v in (t["table1_baseline"], t["table1_method"])))

    def dataset_sample_manifests(self, dataset: str) -> list[str]:
        """Manifests of one dataset's table-1 variants (baselines, then ours), first seed."""
        get_dataset(self.config, dataset)
        t = self.config["tables"]
        names = [t["table1_baseline"], t["table1_caption_baseline"], t["table1_method"], t["table1_official"]]
        return list(dict.fromkeys(self.manifest(dataset, v, self.seeds[0], t["scale"]) for v in names if v))

    def quality_sets(self) -> list[str]:
        t, q = self.config["tables"], self.config["quality"]
        seeds = self.grid_seeds("table2")
        out = [P.quality_set.format(dataset=ds, variant=v, seed=s, scale=t["table2_scale"], which="manifest")
               for ds in self.class_datasets for v in t["table2_variants"] for s in seeds]
        if q["filter"] != "none":
            out += [P.quality_set.format(dataset=ds, variant=t["table1_method"], seed=s, scale=t["table2_scale"],
                                         which="filtered") for ds in self.class_datasets for s in seeds]
        return out

    def quality_metrics(self) -> list[str]:
        t = self.config["tables"]
        out = self.table2_metrics()
        if self.config["quality"]["filter"] != "none":
            out += [self.metrics(ds, mix, s, t["table1_method"], t["table2_scale"]) for ds in self.class_datasets
                    for mix in ("synfilt", "realsynfilt", "realsyn") for s in self.grid_seeds("table2")]
        return out

    def ood_metrics(self) -> list[str]:
        o, t = self.config["ood"], self.config["tables"]
        if o["dataset"] is None:
            raise ConfigError("table 4 needs config key ood.dataset (an ImageNet-kind dataset) and ood.sets")
        ds, m, k = o["dataset"], t["table1_method"], t["scale"]
        baselines = [v for v in (t["table1_baseline"], t["table1_caption_baseline"]) if v]
        runs = []  # paper Tab. 4: the baselines, ours at every scale, real only, real + ours
        for s in self.seeds:
            runs += [f"real/s{s}", *(f"syn/{v}/{k}x/s{s}" for v in baselines),
                     *(f"syn/{m}/{scale}x/s{s}" for scale in self.config["scales"]), f"realsyn/{m}/{k}x/s{s}"]
        runs = list(dict.fromkeys(runs))
        return [P.ood_metrics.format(dataset=ds, run=r, oodset=name) for r in runs for name, root in o["sets"].items() if root]

    def claims_tables(self) -> list[str]:
        """Tables the claims are read from besides tables 1 and 2: table 4 when OOD sets are configured."""
        return [table("table4")] if self.config["ood"]["dataset"] else []

    def demo_targets(self) -> list[str]:
        out = [figure("samples", "png"), figure("samples", "pdf")]
        out += [table("table1")] if self.class_datasets else []
        out += [table("table10")] if self.attr_datasets else []
        for ds in self.datasets:
            out += [P.captions.format(dataset=ds), P.class_means.format(dataset=ds)]
        return out

    def ablation_targets(self) -> list[str]:
        out = []
        if self.class_datasets:
            out += [table("table2"), figure("ablation", "png"), figure("ablation", "pdf"), table("claims"),
                    table("table3"), figure("fig2_scaling", "png"), figure("fig2_scaling", "pdf"), table("table9"),
                    table("quality"), figure("quality", "png"), figure("quality", "pdf")]
        out += [figure(f"samples_{ds}", ext) for ds in self.datasets for ext in ("png", "pdf")]
        out += [figure(f"fig4_nearest_{ds}", ext) for ds in self.datasets for ext in ("png", "pdf")]
        if self.config["privacy"]["pool"]:
            out += [table("table_privacy"), figure("fig3_lira", "png"), figure("fig3_lira", "pdf")]
        if self.config["ood"]["dataset"]:
            out += [table("table4")]
        return out

    # ------------------------------------------------------------------ resources and rule params
    def train_images(self, dataset: str) -> int:
        """Real training images of a dataset, planned from config (train_per_class, or the kind's
        typical count; CelebA's count is for the whole set, not per attribute class)."""
        ds = get_dataset(self.config, dataset)
        if ds["train_per_class"]:
            n = ds["train_per_class"] * class_count(self.config, dataset)
        elif ds["kind"] == "celeba":
            n = TRAIN_PER_CLASS["celeba"]
        else:
            n = TRAIN_PER_CLASS.get(ds["kind"], TRAIN_PER_CLASS["imagefolder"]) * class_count(self.config, dataset)
        return n // 2 if ds["member_half"] is not None else n

    def test_images(self, dataset: str) -> int:
        ds = get_dataset(self.config, dataset)
        per = TEST_PER_CLASS.get(ds["kind"], TEST_PER_CLASS["imagefolder"])
        return per if ds["kind"] == "celeba" else per * class_count(self.config, dataset)

    def stage_items(self, stage: str, w: dict) -> tuple[int, int]:
        """(rows the stage keeps, items it processes) for one job with wildcards ``w``."""
        ds = w.get("dataset")
        if ds is None:
            return 0, 0
        n_train, n_test = self.train_images(ds), self.test_images(ds)
        scale = int(w.get("scale", 1) or 1)
        if stage == "index":
            return n_train + n_test, n_train + n_test
        if stage in ("caption", "embed", "nearest"):
            return n_train, n_train
        if stage == "finetune":
            f = dataset_section(self.config, "finetune", ds)
            seen = f["epochs"] * n_train * f["train_fraction"] if f.get("epochs") else f["steps"] * f["batch_size"]
            return n_train, int(seen)
        if stage == "generate":
            return n_train, n_train * scale // shard_count(self.config, ds, scale)
        if stage == "merge":
            return n_train * scale, n_train * scale
        if stage in ("classify", "shadow"):  # classify_real has no scale; shadow classifiers train on real data
            mix = w.get("mix", "real")
            n = (n_train if "real" in mix else 0) + (n_train * scale if "scale" in w else 0)
            return n, int(dataset_section(self.config, "classify", ds)["epochs"] * n + n_test)
        if stage == "quality":
            return n_train * scale, n_train * scale + n_test
        if stage == "shadow_score":  # the pipeline shadow's own LoRA, set and classifier are their own jobs
            return n_train, n_train
        if stage == "ood":  # the largest OOD set (ImageNet-Sketch, 50,889 images)
            return 0, 50889
        return 0, 0

    def resources(self, stage: str, wildcards: dict | None = None) -> dict[str, int]:
        """mem_mb, runtime (minutes) and gpu of one job of a stage, from the cost model and the rows
        and items the job's wildcards imply (``PAPER_COSTS``); fixed small values in the mini world."""
        if stage not in PAPER_COSTS:
            raise KeyError(f"no resources planned for stage {stage!r} (known: {sorted(PAPER_COSTS)})")
        mem, minutes, gpu = self.unsegmented(stage, wildcards or {})
        segments = self.segments(stage, wildcards or {})
        per_segment = -(-minutes // segments)
        return {"mem_mb": mem, "runtime": int(min(-(-per_segment // 10) * 10, self.max_minutes)), "gpu": gpu}

    @property
    def max_minutes(self) -> int:
        return int(self.config["max_job_minutes"])

    def unsegmented(self, stage: str, w: dict) -> tuple[int, float, int]:
        """(mem_mb, runtime in minutes, gpus) of a job as if it ran unsegmented."""
        cost = PAPER_COSTS[stage]
        if not self.paper_scale:
            mem, minutes = MINI_RESOURCES
            return mem, minutes, 0
        rows, items = self.stage_items(stage, w)
        gpus = self.gpus(stage, w)  # data-parallel processes: each holds its models and loader
        mem = (cost.mem_mb + rows * cost.kb_per_row / 1024) * gpus
        minutes = SAFETY * (cost.minutes + items * cost.s_per_item / 60 / gpus)
        return int(-(-mem // 1000) * 1000), minutes, int(cost.gpu) * gpus

    def segments(self, stage: str, w: dict) -> int:
        """Jobs (segments) a training run is split into so each fits ``max_job_minutes``: LoRA
        fine-tuning and classifiers only, each segment resuming from the previous one's checkpoint
        (docs/cluster.md); every other stage runs as one job."""
        if stage not in SEGMENTED:
            return 1
        n = max(1, int(-(-self.unsegmented(stage, w)[1] // self.max_minutes)))
        if n > 1 and stage == "classify" and w.get("dataset") and \
                dataset_section(self.config, "classify", w["dataset"])["replicas"] > 1:
            raise ConfigError(f"a classifier of dataset {w['dataset']} needs {n} jobs to fit max_job_minutes "
                              f"{self.max_minutes}, and classify.replicas > 1 cannot run in segments: set replicas 1")
        return n

    def max_segments(self, stage: str) -> int:
        """The most segments any job of a stage has (a rule's ``retries``: Snakemake reruns a job
        that ended a segment, as it would a failed one)."""
        if stage not in SEGMENTED:
            return 0
        jobs = [{"dataset": d, "scale": k, "mix": m} for d in self.config["datasets"] for k in self.config["scales"]
                for m in ("real", "syn", "realsyn")]
        return max([self.segments(stage, w) for w in jobs] or [1])

    def gpus(self, stage: str, wildcards: dict) -> int:
        """Data-parallel processes (GPUs) of one job: finetune.gpus / classify.gpus of the job's
        dataset for those stages; every other stage runs one process (generation's parallelism is
        its shards)."""
        ds = wildcards.get("dataset")
        if ds is None or stage not in DATA_PARALLEL:
            return 1
        return int(dataset_section(self.config, stage, ds)["gpus"])

    def launcher(self, stage: str, wildcards: dict) -> str:
        """The command that starts a job's stage module (``realfake.<stage>``): ``python -m``, or
        torchrun with one process per GPU."""
        return launcher(self.gpus(stage, wildcards), f"realfake.{stage}")

    def threads(self, stage: str, wildcards: dict | None = None) -> int:
        """CPU threads of a stage's jobs: config ``threads`` (torch threads, decode and loader
        workers) per data-parallel process, declared so Slurm grants them; 1 for the stages that
        do not parallelise."""
        if stage == "pretrain":
            return int(self.config["pretrain"]["threads"])
        if stage in ("merge", "report", "fetch"):
            return 1
        return int(self.config["threads"]) * self.gpus(stage, wildcards or {})

    def cfg_json(self, sections: tuple[str, ...], wildcards: dict) -> str:
        """The config sections a rule reads, as JSON, narrowed to its wildcards (a dataset's job gets
        only that dataset's entry). Passing only these keeps Snakemake's params rerun trigger
        precise: editing classify.epochs reruns classifiers, not the fine-tuning."""
        out = {"run_name": self.config["run_name"], "threads": self.config["threads"]}
        if "seeds" in sections:
            out["seeds"] = self.config["seeds"]
        for sec in sections:
            if sec == "seeds":
                continue
            value = self.config[sec]
            key = {"datasets": "dataset", "loras": "lora", "variants": "variant"}.get(sec)
            if key and key in wildcards:
                value = {wildcards[key]: value[wildcards[key]]}
            out[sec] = value
        return json.dumps(out, sort_keys=True)


def placeholders(default_resources: dict, set_resources: dict) -> list[str]:
    """Profile values still left as an EDIT_ME placeholder, as 'where: key=value' lines."""

    def texts(mapping, prefix=""):
        for key, value in dict(mapping or {}).items():
            if hasattr(value, "items"):
                yield from texts(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", str(getattr(value, "raw", value))

    return [f"{where}: {key}={text}"
            for where, mapping in (("default-resources", default_resources), ("set-resources", set_resources))
            for key, text in texts(mapping) if "EDIT_ME" in text]
