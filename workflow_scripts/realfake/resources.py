"""What a job asks the scheduler for: memory, runtime, GPUs, threads and the number of segments a
long training is cut into, from a cost model per stage and the rows and images a job's wildcards
imply. ``Plan`` (the paths and targets) builds on it; ``make cost`` prices a plan with it."""

from __future__ import annotations

from dataclasses import dataclass

from .config import class_count, dataset_section, get_dataset, shard_count
from .datasets import count_imagefolder
from .distributed import launcher
from .errors import ConfigError
from .settings import Classify, Dataset


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
# The classify and shadow rates above are the GPU's share of a ResNet-50 step at this input size;
# a classifier at another size costs its pixels' worth (FLOPs grow with the area).
CLASSIFY_REF_SIZE = 224
# CPU milliseconds to decode one 512 px JPEG and run the paper's training transform, a + b x (input
# size / 224)^2: 3.97 ms at 224 px and 7.10 ms at 448 px on one core of the 2-core CPU machine
# (docs/paper-scale.md, "What a run costs"). The stream loader's workers of each GPU process share
# it, so a classifier runs at the slower of its GPU and its decoding.
DECODE_MS = (2.93, 1.04)
MINI_RESOURCES = (3000, 60)
DATA_PARALLEL = ("finetune", "classify")  # stages whose jobs run one process per GPU (torchrun)
SEGMENTED = DATA_PARALLEL  # training stages that can run as several jobs, resuming
# Typical training images per class of each dataset kind (train_per_class null), for planning only.
TRAIN_PER_CLASS = {"imagenet": 1281, "cub": 30, "cars": 42, "pets": 100, "eurosat": 2160, "digits": 110,
                   "celeba": 162770, "imagefolder": 500}
# Test/evaluation images per class of each kind (for evaluation-time estimates).
TEST_PER_CLASS = {"imagenet": 50, "cub": 29, "cars": 41, "pets": 99, "eurosat": 540, "digits": 70,
                  "celeba": 19962, "imagefolder": 50}


class Resources:
    """Resource requests of the jobs of one config (``Plan`` adds the paths and target lists)."""

    def __init__(self, config: dict):
        self.config = config
        self.paper_scale = config["models"]["sd15"] is not None

    def train_images(self, dataset: str) -> int:
        """Real training images of a dataset, planned from config (train_per_class, or the kind's
        typical count; CelebA's count is for the whole set, not per attribute class). An image-folder
        dataset whose root is readable here is counted instead (``train_images_source`` says which)."""
        ds = get_dataset(self.config, dataset)
        counted = self._counted(dataset)
        if counted is not None:
            n = sum(min(c, ds["train_per_class"] or c) for c in counted)
        elif ds["train_per_class"]:
            n = ds["train_per_class"] * class_count(self.config, dataset)
        elif ds["kind"] == "celeba":
            n = TRAIN_PER_CLASS["celeba"]
        else:
            n = TRAIN_PER_CLASS.get(ds["kind"], TRAIN_PER_CLASS["imagefolder"]) * class_count(self.config, dataset)
        return n // 2 if ds["member_half"] is not None else n

    def _counted(self, dataset: str) -> tuple[int, ...] | None:
        ds = get_dataset(self.config, dataset)
        return count_imagefolder(ds["root"]) if ds["kind"] == "imagefolder" and ds["root"] else None

    def train_images_source(self, dataset: str) -> str:
        """Where ``train_images`` comes from, for ``make cost``'s report."""
        ds = get_dataset(self.config, dataset)
        if self._counted(dataset) is not None:
            return f"counted under {ds['root']}/train"
        if ds["train_per_class"]:
            return f"train_per_class {ds['train_per_class']} x {class_count(self.config, dataset)} classes"
        unread = f" ({ds['root']}/train is not readable here)" if ds["kind"] == "imagefolder" else ""
        return f"planned: the typical {ds['kind']} count{unread}"

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
        minutes = SAFETY * (cost.minutes + items * self.seconds_per_item(stage, w) / 60 / gpus)
        return int(-(-mem // 1000) * 1000), minutes, int(cost.gpu) * gpus

    def seconds_per_item(self, stage: str, w: dict, gpu_s: float | None = None) -> float:
        """Seconds per item on one GPU of a job: the cost model's rate (or ``gpu_s``, a measured
        one); a classifier's scaled by its input area over 224 px and never faster than its loader
        workers decode and transform JPEGs (``DECODE_MS``, stream loader)."""
        s = PAPER_COSTS[stage].s_per_item if gpu_s is None else gpu_s
        if stage not in ("classify", "shadow") or not w.get("dataset"):
            return s
        c, ds = Classify.of(self.config, w["dataset"]), Dataset.of(self.config, w["dataset"])
        area = (c.input_size(ds) / CLASSIFY_REF_SIZE) ** 2
        if c.loader != "stream":
            return s * area
        workers = c.loader_workers(self.threads_per_gpu(stage, w))
        decode = (DECODE_MS[0] + DECODE_MS[1] * area) / 1000 / max(1, workers)
        return max(s * area, decode)

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
        return self.threads_per_gpu(stage, wildcards or {}) * self.gpus(stage, wildcards or {})

    def threads_per_gpu(self, stage: str, wildcards: dict) -> int:
        """CPUs of each data-parallel process of a job: config ``threads``, or for classifiers
        (and the shadow classifiers trained the same way) ``classify.threads`` when set."""
        ds = wildcards.get("dataset")
        if stage in ("classify", "shadow") and ds:
            own = dataset_section(self.config, "classify", ds).get("threads")
            if own:
                return int(own)
        return int(self.config["threads"])
