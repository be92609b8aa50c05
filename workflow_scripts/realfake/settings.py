"""Typed settings per stage, built once in each stage's ``main`` from the validated config.

A function that takes ``Classify`` reads classifier settings and nothing else: its signature says
so. Field names are the config keys (``config/schema.yaml``); :func:`section` refuses a section
whose keys and fields differ, so schema and settings cannot drift apart silently (tested).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from .config import dataset_section, get_dataset, get_variant, model_path
from .errors import ConfigError


def section(cls, values: dict):
    """``cls`` built from a config mapping with exactly its fields (those with a default may be absent:
    keys the schema has no default for)."""
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    required = {f.name for f in fields if f.default is dataclasses.MISSING}
    if not required <= set(values) <= names:
        odd = sorted((set(values) - names) | (required - set(values)))
        raise ConfigError(f"settings {cls.__name__}: config keys {odd} do not match its fields "
                          "(schema and settings out of step)")
    return cls(**values)


class Section:
    """A fixed config section: ``KEY`` names it, ``of(cfg)`` builds the settings."""

    KEY: ClassVar[str] = ""

    @classmethod
    def of(cls, cfg: dict):
        return section(cls, cfg[cls.KEY])


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: str
    root: str | None
    classlist: str | None
    test_fraction: float
    train_per_class: int | None
    test_size: int
    split_seed: int
    member_half: int | None
    shadow_of: str | None
    num_classes: int | None
    image_size: int
    use_captions: bool
    prompt_template: str
    finetune_prompt_template: str | None
    negative_prompt: str
    classify_overrides: dict
    finetune_overrides: dict
    classnames: dict | None
    attributes: list | None = None  # kind celeba only (no schema default)

    @classmethod
    def of(cls, cfg: dict, name: str) -> "Dataset":
        return section(cls, {"name": name, **get_dataset(cfg, name)})


@dataclass(frozen=True)
class Classify:
    """classify.* with the dataset's classify_overrides applied."""

    arch: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str
    schedule: str
    warmup_epochs: int
    nesterov: bool
    label_smoothing: float
    drop_path_rate: float
    transform: str
    scale: list
    ratio: list
    color_jitter: float
    auto_augment: str | None
    train_interpolation: str
    crop_pct: float | None
    loss: str
    mixup: float
    cutmix: float
    randaugment_ops: int
    randaugment_magnitude: int
    milestones: list
    random_flip: bool
    pad_crop: int
    pretrained: bool
    image_size: int | None
    loader: str
    num_workers: int | str
    streams: int
    threads: int | None
    gpus: int
    shuffle_buffer: int
    checkpoint_every: int
    validate_every: int
    amp: bool
    replicas: int

    @classmethod
    def of(cls, cfg: dict, dataset: str) -> "Classify":
        return section(cls, dataset_section(cfg, "classify", dataset))

    def input_size(self, ds: Dataset) -> int:
        """Pixels the classifier sees: classify.image_size, else the dataset's image size."""
        return self.image_size or ds.image_size

    def loader_workers(self, cpus: int) -> int:
        """Loader processes of one training process that has ``cpus`` CPUs: num_workers, or with
        auto the CPUs minus the one that feeds the GPU; never more than ``streams`` (a loader
        process reads whole streams)."""
        n = cpus - 1 if self.num_workers == "auto" else int(self.num_workers)
        return max(0, min(n, self.streams))

    def replace(self, **changes) -> "Classify":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Finetune:
    """finetune.* with the dataset's finetune_overrides applied (when a dataset is named)."""

    steps: int
    epochs: float | None
    batch_size: int
    lr: float
    rank: int
    snr_gamma: float
    random_flip: bool
    checkpoint_every: int
    preview_every: int
    amp: bool
    max_grad_norm: float | None
    crop: str
    gpus: int
    dm_group: int | None
    train_fraction: float

    @classmethod
    def of(cls, cfg: dict, dataset: str | None = None) -> "Finetune":
        return section(cls, cfg["finetune"] if dataset is None else dataset_section(cfg, "finetune", dataset))


@dataclass(frozen=True)
class Lora:
    name: str
    dm_weight: float
    guidance: str

    @classmethod
    def of(cls, cfg: dict, name: str) -> "Lora":
        if name not in cfg["loras"]:
            raise ConfigError(f"unknown LoRA {name!r}: not under config key loras (defined: {sorted(cfg['loras'])})")
        return section(cls, {"name": name, **cfg["loras"][name]})


@dataclass(frozen=True)
class Generate(Section):
    KEY: ClassVar[str] = "generate"

    steps: int
    cfg: float
    strength: float
    lora_scale: float
    batch_size: int
    seed: int
    classes_per_shard: int
    image_format: str
    jpeg_quality: int
    fuse_lora: bool
    torch_compile: bool


@dataclass(frozen=True)
class Variant:
    name: str
    lora: str | None
    latent_prior: bool
    guidance: str
    captions: bool | None
    prompt_template: str | None
    label: str

    @classmethod
    def of(cls, cfg: dict, name: str) -> "Variant":
        return section(cls, {"name": name, **get_variant(cfg, name)})


@dataclass(frozen=True)
class ImageEncoder(Section):
    KEY: ClassVar[str] = "image_encoder"

    model_name: str
    seed: int
    rescale_to_token_norm: bool


@dataclass(frozen=True)
class Caption(Section):
    KEY: ClassVar[str] = "caption"

    max_new_tokens: int
    batch_size: int


@dataclass(frozen=True)
class Models:
    """Where each model is read from: a local path, or where fetch_model put a download."""

    sd15: str | None
    blip2: str | None
    clip: str | None
    sscd: str | None
    resnet50_pretrained: str | None
    inception: str | None

    @classmethod
    def of(cls, cfg: dict) -> "Models":
        return section(cls, {name: model_path(cfg, name) for name in cfg["models"]})


@dataclass(frozen=True)
class Quality(Section):
    KEY: ClassVar[str] = "quality"

    features: str
    inception: str | None
    max_per_class: int | None
    knn: int
    kid_subsets: int
    kid_subset_size: int
    seed: int
    batch_size: int
    filter: str
    keep_fraction: float


@dataclass(frozen=True)
class Nearest(Section):
    KEY: ClassVar[str] = "nearest"

    variant: str
    scale: int
    queries: int
    top_k: int
    seed: int
    descriptor_width: int | None


@dataclass(frozen=True)
class Privacy(Section):
    KEY: ClassVar[str] = "privacy"

    pool: str | None
    members: str | None
    shadows: int
    seed: int
    variant: str
    scale: int
    synthetic_shadows: str
    pipeline_shadows: int | None


@dataclass(frozen=True)
class Ood(Section):
    KEY: ClassVar[str] = "ood"

    dataset: str | None
    sets: dict
    batch_size: int


@dataclass(frozen=True)
class Tables(Section):
    KEY: ClassVar[str] = "tables"

    table1_baseline: str
    table1_method: str
    table1_caption_baseline: str | None
    table1_official: str | None
    table2_variants: list
    table2_seeds: list | None
    table3_seeds: list | None
    scale: int
    table2_scale: int


@dataclass(frozen=True)
class Pretrain(Section):
    KEY: ClassVar[str] = "pretrain"

    seed: int
    samples_per_font_digit: int
    vae_steps: int
    unet_steps: int
    batch_size: int
    lr: float
    threads: int


SECTIONS: dict[str, Any] = {"classify": Classify, **{c.KEY: c for c in Section.__subclasses__()}}
