"""Planning: every artifact path (from :mod:`realfake.paths`) and target list of the workflow, and
the params a rule passes its command. Resource requests come from :mod:`realfake.resources` (``Plan``
builds on ``Resources``); table rows from :mod:`realfake.tablespec`. Snakemake (``rules/common.smk``)
wraps these in one-line input functions. Everything here is a pure function of the validated config
(no Snakemake, no file reads beyond class lists), so it is unit-tested directly (``tests/test_plan.py``).
"""

from __future__ import annotations

import json
import shlex

from .config import class_count, dataset_section, get_dataset, get_variant, model_path, shadow_datasets, shard_count
from .errors import ConfigError
from .paths import P, figure, table
from .resources import Resources
from .settings import Nearest, Ood, Privacy, Quality, Tables
from .tablespec import table1_spec

TINY_BASE = P.tiny_base
RANDOM_ENCODER = P.random_encoder


class Plan(Resources):
    """The planned workflow of one validated config."""

    def __init__(self, config: dict):
        super().__init__(config)
        self.tables, self.quality, self.nearest = Tables.of(config), Quality.of(config), Nearest.of(config)
        self.privacy, self.ood = Privacy.of(config), Ood.of(config)
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
            if self.quality.filter == "none":
                raise ConfigError(f"mix {mix} trains on a filtered synthetic set but config key quality.filter "
                                  "is none")
            return self.manifest(dataset, variant, seed, scale, "filtered")
        return self.manifest(dataset, variant, seed, scale)

    def quality_models(self, dataset: str) -> dict[str, str]:
        """What the quality features need: the real-data classifier or the image encoder (or nothing)."""
        get_dataset(self.config, dataset)
        f = self.quality.features
        if f == "real_classifier":
            return {"classifier": self.model_file(dataset, "real", self.seeds[0])}
        if f == "inception":  # models.inception's download, unless quality.inception names a file
            return {} if self.quality.inception else {"inception": m for m in self.fetched("inception")}
        return self.encoder_input() if f == "clip" else {}

    def inception_weights(self) -> str | None:
        """The Inception-v3 file of inception features: quality.inception, else models.inception."""
        return self.quality.inception or model_path(self.config, "inception")

    def filter_models(self, dataset: str, seed) -> dict[str, str]:
        """The filter's scorer: the real classifier of the same seed, or the image encoder."""
        get_dataset(self.config, dataset)
        f = self.quality.filter
        if f == "none":
            raise ConfigError("a filtered synthetic set was requested but config key quality.filter is none")
        if f == "classifier_confidence":
            return {"classifier": self.model_file(dataset, "real", seed)}
        return self.encoder_input()

    def scorer_args(self, inputs: dict, encoder: bool) -> str:
        """CLI arguments of the model a quality/filter job scores with (paths shell-quoted)."""
        if "classifier" in inputs:
            return f"--classifier {shlex.quote(str(inputs['classifier']))}"
        if not encoder and self.quality.features == "inception" and self.inception_weights():
            return f"--inception {shlex.quote(str(self.inception_weights()))}"
        return f"--encoder {shlex.quote(str(self.encoder_checkpoint()))}" if encoder else ""

    def nearest_manifest(self, dataset: str) -> str:
        get_dataset(self.config, dataset)
        n = self.nearest
        return self.manifest(dataset, n.variant, self.seeds[0], n.scale)

    def lira_targets(self) -> dict[str, str]:
        """model.pt of the two attacked classifiers: trained on the real members, and on synthetic
        data made from them."""
        p = self.privacy
        s = self.seeds[0]
        return {"real_target": self.model_file(p.members, "real", s),
                "synthetic_target": self.model_file(p.members, "syn", s, p.variant, p.scale)}

    def lira_inputs(self) -> dict:
        p = self.privacy
        return {"index": self.index(p.pool), "members_index": self.index(p.members),
                "shadows": [P.shadow.format(dataset=p.pool, k=k) for k in range(p.shadows)],
                "synthetic_shadows": [P.pipeline_shadow.format(dataset=p.pool, k=k)
                                      for k in range(len(shadow_datasets(self.config)))],
                **self.lira_targets()}

    def pipeline_shadow_inputs(self, k: int) -> dict:
        """A pipeline shadow's derived dataset index and its synthetic-data classifier."""
        p = self.privacy
        names = shadow_datasets(self.config)
        if not 0 <= k < len(names):
            raise ConfigError(f"pipeline shadow {k} is not planned (privacy.pipeline_shadows: {len(names)})")
        return {"index": self.index(p.pool), "half_index": self.index(names[k]),
                "model": self.model_file(names[k], "syn", self.seeds[0], p.variant, p.scale)}

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
        t = self.tables
        names = self.class_table_datasets("table 1") if datasets is None else datasets
        return [self.metrics(ds, r.setting, s, r.variant, t.scale)
                for ds in names for s in self.seeds for r in table1_spec(t)]

    def table10_metrics(self) -> list[str]:
        names = self.table_datasets("table 10", self.attr_datasets,
                                    "an attribute dataset (kind celeba with datasets.<name>.attributes)")
        return self.table1_metrics(datasets=names)

    def grid_seeds(self, table: str) -> list[int]:
        """Seeds of a grid: ``tables.<table>_seeds`` (a cut grid), else every seed."""
        return getattr(self.tables, f"{table}_seeds") or self.seeds

    def table2_metrics(self) -> list[str]:
        t = self.tables
        return [self.metrics(ds, "syn", s, v, t.table2_scale) for ds in self.class_table_datasets("table 2")
                for v in t.table2_variants for s in self.grid_seeds("table2")]

    def table3_metrics(self) -> list[str]:
        m, seeds = self.tables.table1_method, self.grid_seeds("table3")
        out = [self.metrics(ds, "real", s) for ds in self.class_table_datasets("table 3") for s in seeds]
        return out + [self.metrics(ds, mix, s, m, k) for ds in self.class_datasets for mix in ("syn", "realsyn")
                      for k in self.config["scales"] for s in seeds]

    def sample_manifests(self) -> list[str]:
        """Manifests of the overview sample figure: each dataset's baseline and method (first seed)."""
        t = self.tables
        return list(dict.fromkeys(self.manifest(ds, v, self.seeds[0], t.scale) for ds in self.datasets
                                  for v in (t.table1_baseline, t.table1_method)))

    def dataset_sample_manifests(self, dataset: str) -> list[str]:
        """Manifests of one dataset's table-1 variants (baselines, then ours), first seed."""
        get_dataset(self.config, dataset)
        t = self.tables
        names = [t.table1_baseline, t.table1_caption_baseline, t.table1_method, t.table1_official]
        return list(dict.fromkeys(self.manifest(dataset, v, self.seeds[0], t.scale) for v in names if v))

    def quality_sets(self) -> list[str]:
        t, q = self.tables, self.quality
        seeds = self.grid_seeds("table2")
        out = [P.quality_set.format(dataset=ds, variant=v, seed=s, scale=t.table2_scale, which="manifest")
               for ds in self.class_datasets for v in t.table2_variants for s in seeds]
        if q.filter != "none":
            out += [P.quality_set.format(dataset=ds, variant=t.table1_method, seed=s, scale=t.table2_scale,
                                         which="filtered") for ds in self.class_datasets for s in seeds]
        return out

    def quality_metrics(self) -> list[str]:
        t = self.tables
        out = self.table2_metrics()
        if self.quality.filter != "none":
            out += [self.metrics(ds, mix, s, t.table1_method, t.table2_scale) for ds in self.class_datasets
                    for mix in ("synfilt", "realsynfilt", "realsyn") for s in self.grid_seeds("table2")]
        return out

    def ood_metrics(self) -> list[str]:
        o, t = self.ood, self.tables
        if o.dataset is None:
            raise ConfigError("table 4 needs config key ood.dataset (an ImageNet-kind dataset) and ood.sets")
        ds, m, k = o.dataset, t.table1_method, t.scale
        baselines = [v for v in (t.table1_baseline, t.table1_caption_baseline) if v]
        runs = []  # paper Tab. 4: the baselines, ours at every scale, real only, real + ours
        for s in self.seeds:
            runs += [f"real/s{s}", *(f"syn/{v}/{k}x/s{s}" for v in baselines),
                     *(f"syn/{m}/{scale}x/s{s}" for scale in self.config["scales"]), f"realsyn/{m}/{k}x/s{s}"]
        runs = list(dict.fromkeys(runs))
        return [P.ood_metrics.format(dataset=ds, run=r, oodset=name) for r in runs for name, root in o.sets.items() if root]

    def claims_tables(self) -> list[str]:
        """Tables the claims are read from besides tables 1 and 2: table 4 when OOD sets are configured."""
        return [table("table4")] if self.ood.dataset else []

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
        if self.privacy.pool:
            out += [table("table_privacy"), figure("fig3_lira", "png"), figure("fig3_lira", "pdf")]
        if self.ood.dataset:
            out += [table("table4")]
        return out

    # ------------------------------------------------------------------ rule params
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
