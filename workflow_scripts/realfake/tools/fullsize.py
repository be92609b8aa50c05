"""`make rehearsal-full`: the paper's real architectures, with random weights, through each stage's
own code at the paper's image sizes.

`make rehearsal` proves that memory and bookkeeping stay bounded at paper-scale *counts* with tiny
models; this proves the stages run at paper-scale *model sizes* and measures what one item costs.
Random weights cost the same FLOPs and memory as trained ones, so the seconds per item here are the
real per-item cost on the machine that runs it.

It builds, in the layouts the loaders read (``save_pretrained`` folders, open_clip checkpoint):

* Stable Diffusion 1.5: ``UNet2DConditionModel`` and ``AutoencoderKL`` with SD 1.5's configuration,
  a CLIP ViT-L/14 text encoder with the real CLIP BPE tokenizer at 77 tokens, SD 1.5's scheduler;
* open_clip ``ViT-L-14`` (the visual guidance encoder);
* timm ``resnet50`` (the classifier, built by the classify stage's ``build_model``);
* BLIP-2 stays tiny (3.8 B parameters do not fit a 2-core CI machine; the caption row says so);

writes a few images per class of 2 classes at 512 px, and runs, each in its own process (peak
resident memory per stage: the process's VmHWM) with ``config/imagenet10.yaml``'s settings:
captions and embeddings (``encoders``, as the caption and embed stages), LoRA fine-tuning
(``lora.train_lora``: LoRA rank, min-SNR, distribution matching, guidance token, random crop,
gradient clipping; the per-GPU batch of 8 on a GPU), generation (``synthesis.generate``: the
LoRA at its scale, 30-step UniPC img2img at strength 0.75, CFG 2, JPEG into a tar shard) and one
classifier epoch at 224 (``classifier.train_classifier``: ResNet-50 and the paper's optimiser,
schedule, loss and mixed precision; data in memory, so the row is the GPU's share: loading is
``make bench``'s and ``make rehearsal``'s). With ``--device cuda`` it also runs the official-style
generation loop (a pipeline call per batch with model CPU offload, per-image guidance files, one
JPEG file per image, its batch of 24: ``bench.run_reference``) on the same images, for the speed-up,
and ours with ``generate.torch_compile`` on.

Output ``<out>/fullsize.csv``: ``model, params_m, stage, device, batch, items, item,
seconds_per_item, items_per_s, startup_s, peak_rss_mb, peak_gpu_mb`` (one row per stage; the first
batch or step of every timed stage is a warm-up and not counted; ``startup_s`` is a job's start-up:
the stage's process from its start, imports and model loading to its first batch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..atomic import atomic_path, write_json
from .bench import run_ours, run_reference, write_guidance_files
from ..classifier import train_classifier
from ..classifier_data import MemoryData
from ..classifier_models import build_model
from ..cli import loader_workers as rule_workers
from ..config import load_config
from ..encoders import caption_paths, embed_paths, load_blip2
from ..lora import TrainImages, save_lora, train_lora
from ..method import build_prompt
from ..models import create_open_clip, load_pipeline
from ..settings import Caption, Classify, Dataset, Finetune, Generate, ImageEncoder
from ..tiny_models import build_tiny_blip2
from ..tiny_sd import build_tiny_pipeline, build_tokenizer
from .sd15 import SD15_TEXT, SD15_UNET, SD15_VAE, TOKENS, build_sd15  # noqa: F401 (SD15_*: the tests read them here)

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "config" / "imagenet10.yaml"
DATASET = "imagenet10"
COLUMNS = ["model", "params_m", "stage", "device", "batch", "items", "item", "seconds_per_item", "items_per_s",
           "startup_s", "peak_rss_mb", "peak_gpu_mb"]
LOADED = "STAGE LOADED"  # the line a stage's process prints when its models are loaded


# ----------------------------------------------------------------------------- models
def build_clip(out: Path, model_name: str, seed: int = 0) -> Path:
    """open_clip ``model_name`` with seeded random weights, saved as a safetensors checkpoint (the
    layout of timm's hub copy of the OpenAI weights, ``open_clip_model.safetensors``)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model, _ = create_open_clip(model_name, None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return out


def arch_of(name: str, cfg: dict) -> dict:
    """What the run builds: ``paper`` (the real architectures at the config's sizes) or ``tiny``
    (the mini world's toy models at 32 px: a test of this module, not a measurement)."""

    if name == "tiny":
        return {"name": "tiny", "sd_size": 32, "classify_size": 32, "clip": "realfake-tiny-vit", "width": 64}
    return {"name": "paper", "sd_size": Dataset.of(cfg, DATASET).image_size,
            "classify_size": Classify.of(cfg, DATASET).image_size, "clip": ImageEncoder.of(cfg).model_name,
            "width": SD15_TEXT["hidden_size"]}


def read_arch(work: Path) -> dict:
    return json.loads((work / "arch.json").read_text())


def sd_name(work: Path) -> str:
    return "SD 1.5" if read_arch(work)["name"] == "paper" else "toy SD"


def build_models(work: Path, arch: dict) -> None:
    """The models of ``arch`` in ``work``: sd15/ (a pipeline folder with fp32 safetensors, as the
    pinned hub files, and its parameter count), clip.safetensors, blip2/ (always tiny)."""
    if arch["name"] == "tiny":
        with tempfile.TemporaryDirectory() as tok_dir:
            pipe = build_tiny_pipeline(build_tokenizer(Path(tok_dir)), seed=0, image_size=arch["sd_size"])
    else:
        pipe = build_sd15()
    pipe.save_pretrained(work / "sd15", safe_serialization=True)
    (work / "sd15" / "params_m.json").write_text(json.dumps({"sd15": params_m(pipe.unet, pipe.vae,
                                                                              pipe.text_encoder)}))
    del pipe  # 4.3 GB at SD 1.5's size: not held while the other models are built
    build_clip(work / "clip.safetensors", arch["clip"])
    build_tiny_blip2(work / "blip2")
    (work / "arch.json").write_text(json.dumps(arch))


def params_m(*modules) -> float:
    return sum(p.numel() for m in modules for p in m.parameters()) / 1e6


def write_images(folder: Path, classes: int, per_class: int, seed: int = 0) -> pd.DataFrame:
    """``per_class`` JPEGs per class at about ImageNet's typical size (500 x 375 to 640 x 480), smooth
    random colour fields (decode and resize cost like photographs, not like noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(classes):
        for i in range(per_class):
            w, h = int(rng.integers(500, 641)), int(rng.integers(375, 481))
            small = rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8)
            im = Image.fromarray(small).resize((w, h), Image.BICUBIC)
            path = folder / f"n{c:08d}" / f"img_{c}_{i}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path, quality=90)
            rows.append({"image_id": f"n{c:08d}/img_{c}_{i}", "label": c, "class_name": f"class {c}",
                         "path": str(path)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- stages (one process each)
class Timer:
    """Call times; ``seconds`` gives the time between consecutive calls."""

    def __init__(self):
        self.stamps: list[float] = []

    def __call__(self):
        self.stamps.append(time.perf_counter())

    def seconds(self) -> list[float]:
        return list(np.diff(self.stamps))


def loader_workers(cfg: dict) -> int:
    """Decode workers as the stage's rule gives them (``cli.loader_workers``), the config's threads
    capped at the CPUs here."""
    return rule_workers(argparse.Namespace(threads=min(cfg["threads"], os.cpu_count() or 1)), cfg)


def _dtype(device: str):
    """The stages' weights: fp16 on a GPU (as the caption and generate stages), fp32 on a CPU."""
    return torch.float16 if device == "cuda" else torch.float32


def loaded() -> None:
    """Tell the parent (``measure``) that the stage's models and data are ready: the time from the
    process's start to here is the job's start-up (imports, model load, to the first batch)."""
    print(LOADED, flush=True)


def stage_caption(work: Path, device: str, sizes: dict) -> dict:
    cfg = load_config(CONFIG)
    processor, model = load_blip2(str(work / "blip2"), device, _dtype(device))
    paths = list(pd.read_parquet(work / "images.parquet").path)
    b, workers = min(Caption.of(cfg).batch_size, sizes["caption_batch"]), loader_workers(cfg)
    loaded()
    caption_paths(processor, model, paths[:b], b, Caption.of(cfg).max_new_tokens, workers)  # warm-up
    t0 = time.perf_counter()
    caption_paths(processor, model, paths, b, Caption.of(cfg).max_new_tokens, workers)
    return {"model": "BLIP-2 (tiny: ViT + Q-Former + OPT at width 32; the real one is 3.8 B)",
            "params_m": params_m(model), "batch": b, "items": len(paths), "item": "image",
            "seconds": time.perf_counter() - t0}


def stage_embed(work: Path, device: str, sizes: dict) -> dict:
    cfg = load_config(CONFIG)
    arch = read_arch(work)
    model, preprocess = create_open_clip(arch["clip"], str(work / "clip.safetensors"))
    model = model.to(device)
    paths = list(pd.read_parquet(work / "images.parquet").path)
    paths = (paths * (sizes["embed_images"] // len(paths) + 1))[: sizes["embed_images"]]
    b, workers = sizes["embed_batch"], loader_workers(cfg)
    loaded()
    embed_paths(model, preprocess, paths[:b], b, device, workers)  # warm-up
    t0 = time.perf_counter()
    emb = embed_paths(model, preprocess, paths, b, device, workers)
    assert emb.shape == (len(paths), arch["width"]), emb.shape  # the guidance token's width
    return {"model": f"open_clip {arch['clip']} (image tower used)",
            "params_m": params_m(model.visual), "batch": b, "items": len(paths), "item": "image",
            "seconds": time.perf_counter() - t0}


def stage_finetune(work: Path, device: str, sizes: dict) -> dict:
    cfg = load_config(CONFIG)
    ds = Dataset.of(cfg, DATASET)
    b = sizes["finetune_batch"]  # one GPU's rows: the paper's 8 (finetune.batch_size / finetune.gpus)
    f = dataclasses.replace(Finetune.of(cfg, DATASET), steps=sizes["finetune_steps"] + 1, epochs=None, batch_size=b,
                            gpus=1, dm_group=b, checkpoint_every=0)
    pipe = load_pipeline(str(work / "sd15"), device=device)
    train = pd.read_parquet(work / "images.parquet")
    prompts = [build_prompt(ds.finetune_prompt_template or ds.prompt_template, c, "a caption of about ten words")
               for c in train.class_name]
    guidance = torch.randn(len(train), read_arch(work)["width"], generator=torch.Generator().manual_seed(0))
    loaded()
    timer = Timer()
    timer()
    images = TrainImages(list(train.path), read_arch(work)["sd_size"], f.crop)
    history = train_lora(pipe, images, prompts, guidance, f, 0.003, 0, False, on_step=timer)
    assert len(history) == f.steps and np.isfinite(history[-1][0]), history
    save_lora(pipe.unet, work / "lora.safetensors")
    steps = timer.seconds()[1:]  # the first step is the warm-up
    return {"model": "%s UNet + VAE + text encoder (LoRA rank %d trained)" % (sd_name(work), f.rank),
            "params_m": params_m(pipe.unet, pipe.vae, pipe.text_encoder), "batch": b, "items": len(steps) * b,
            "item": "training image (%d per step)" % b, "seconds": sum(steps)}


def _generation_jobs(work: Path, n: int) -> tuple[pd.DataFrame, torch.Tensor, Path]:
    """n img2img jobs over the real images, guidance rows, and per-image guidance files (the
    official loop's layout)."""
    train = pd.read_parquet(work / "images.parquet")
    src = train.iloc[np.arange(n) % len(train)].reset_index(drop=True)
    jobs = pd.DataFrame({"label": src.label, "source_path": src.path, "key": [f"g{i:06d}" for i in range(n)],
                         "seed": np.arange(n) + 1000, "prompt": [f"photo of {c}, a caption of about ten words, best "
                                                                 "quality" for c in src.class_name]})
    guidance = torch.randn(n, read_arch(work)["width"], generator=torch.Generator().manual_seed(1))
    return jobs, guidance, write_guidance_files(jobs.key, guidance, work / "guidance")


def _generate_settings(batch: int, **change):
    g = Generate.of(load_config(CONFIG))
    return dataclasses.replace(g, batch_size=min(g.batch_size, batch), **change)


def _run_generate(work: Path, device: str, sizes: dict, **change) -> dict:
    g = _generate_settings(sizes["generate_batch"], **change)
    jobs, guidance, _ = _generation_jobs(work, sizes["generate_images"])
    size = read_arch(work)["sd_size"]
    rate = run_ours(work / "sd15", jobs, guidance, g, size, work / "gen_ours", device, _dtype(device),
                    lora=work / "lora.safetensors", warmup=device == "cuda", on_loaded=loaded)
    return {"model": "%s img2img (UniPC %d steps x strength %.2f, CFG %.0f, LoRA at %.1f%s), fp%d" % (
                sd_name(work), g.steps, g.strength, g.cfg, g.lora_scale, ", torch.compile" if g.torch_compile else "",
                16 if device == "cuda" else 32),
            "params_m": json.loads((work / "sd15" / "params_m.json").read_text())["sd15"], "batch": g.batch_size,
            "items": len(jobs), "item": "generated image", "seconds": len(jobs) / rate}


def stage_generate(work: Path, device: str, sizes: dict) -> dict:
    """Our generate loop with config/imagenet10.yaml's generate settings."""
    return _run_generate(work, device, sizes)


def stage_generate_compiled(work: Path, device: str, sizes: dict) -> dict:
    """The same with ``generate.torch_compile: true`` (compiled during the warm-up batch)."""
    return _run_generate(work, device, sizes, torch_compile=True)


def stage_generate_official(work: Path, device: str, sizes: dict) -> dict:
    """The official generate.py's loop at its batch size (shell_generate.sh: --batch_size 24 per GPU)."""
    g = _generate_settings(sizes["official_batch"])
    jobs, _, gdir = _generation_jobs(work, sizes["generate_images"])
    rate = run_reference(work / "sd15", jobs, gdir, g, read_arch(work)["sd_size"], work / "gen_official",
                         device, _dtype(device), lora=work / "lora.safetensors", on_loaded=loaded)
    return {"model": "official-style loop: pipeline call per batch, model CPU offload, JPEG file per image",
            "params_m": None, "batch": g.batch_size, "items": len(jobs), "item": "generated image",
            "seconds": len(jobs) / rate}


def stage_classify(work: Path, device: str, sizes: dict) -> dict:
    cfg = load_config(CONFIG)
    c = Classify.of(cfg, DATASET)
    b = sizes["classify_batch"]  # one GPU's rows: the paper's 128 (classify.batch_size / classify.gpus)
    n = b * (sizes["classify_steps"] + 1)
    c = dataclasses.replace(c, epochs=1, batch_size=b, gpus=1, loader="memory", transform="simple", pad_crop=0,
                            random_flip=True, warmup_epochs=0, checkpoint_every=0,
                            image_size=read_arch(work)["classify_size"])
    x = torch.rand(n, 3, c.image_size, c.image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.arange(n) % 10
    loaded()
    timer = Timer()
    timer()
    train_classifier(MemoryData(x, y), 10, c, 0, on_step=timer)
    steps = timer.seconds()[1:]
    return {"model": f"timm {c.arch} at {c.image_size} px ({'bf16 autocast' if c.amp else 'fp32'} on a GPU)",
            "params_m": params_m(build_model(c.arch, 1000)), "batch": b, "items": len(steps) * b,
            "item": "training image (one step: forward, backward, SGD)", "seconds": sum(steps)}


STAGES = {"caption": stage_caption, "embed": stage_embed, "finetune": stage_finetune, "generate": stage_generate,
          "generate_official": stage_generate_official, "generate_compiled": stage_generate_compiled,
          "classify": stage_classify}
GPU_ONLY = ("generate_official", "generate_compiled")  # comparisons that mean something on a GPU only
SIZES = {  # per device: what one run measures (at 512 px: 11 minutes on 2 cores, 5 on an H200)
    "cpu": {"per_class": 4, "caption_batch": 4, "embed_images": 8, "embed_batch": 4, "finetune_batch": 1,
            "finetune_steps": 2, "generate_images": 1, "generate_batch": 1, "official_batch": 1, "classify_batch": 8,
            "classify_steps": 2},
    "cuda": {"per_class": 8, "caption_batch": 16, "embed_images": 1024, "embed_batch": 256, "finetune_batch": 8,
             "finetune_steps": 10, "generate_images": 192, "generate_batch": 64, "official_batch": 24,
             "classify_batch": 128, "classify_steps": 20},
}


def peak_rss_mb() -> float:
    """This process's peak resident memory: the kernel's high-water mark of its own address space
    (VmHWM; ``ru_maxrss`` would also count the parent's size at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(argv: list[str]) -> None:
    """Child process: one stage, its result as JSON on the last line of stdout."""
    stage, work, device, sizes = argv[0], Path(argv[1]), argv[2], json.loads(argv[3])
    torch.set_num_threads(os.cpu_count() or 1)
    result = STAGES[stage](work, device, sizes)
    if device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def measure(stage: str, work: Path, device: str, sizes: dict, log) -> dict:
    """Run one stage in a child process; its result plus the child's peak resident memory."""
    cmd = [sys.executable, "-m", "realfake.tools.fullsize", "--stage", stage, str(work), device, json.dumps(sizes)]
    started, startup = time.perf_counter(), None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        if line.strip() == LOADED and startup is None:
            startup = time.perf_counter() - started
        lines.append(line)
        log.write(line)
        log.flush()
    if proc.wait() != 0:
        raise RuntimeError(f"stage {stage} failed ({proc.returncode}):\n{''.join(lines[-30:])}")
    result = json.loads([ln for ln in lines if ln.startswith("RESULT ")][-1][len("RESULT "):])
    result.update(stage=stage, device=device, startup_s=startup)
    result["seconds_per_item"] = result["seconds"] / result["items"]
    result["items_per_s"] = result["items"] / result["seconds"]
    return result


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--stage"]:
        return run_stage(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/rehearsal", help="folder of fullsize.csv and fullsize.log")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work", default=None, help="folder for the random models and images (default: a temp folder)")
    p.add_argument("--stages", nargs="*", default=None, choices=list(STAGES),
                   help=f"default: every stage ({', '.join(GPU_ONLY)} on cuda only)")
    p.add_argument("--arch", choices=["paper", "tiny"], default="paper",
                   help="tiny: the mini world's toy models at 32 px (checks this module, measures nothing)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    sizes = SIZES[args.device]
    stages = args.stages or [s for s in STAGES if s not in GPU_ONLY or args.device == "cuda"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="realfake-fullsize-", dir=args.work) as tmp, \
            open(out / "fullsize.log", "w") as log:
        work = Path(tmp)
        t0 = time.perf_counter()
        write_images(work / "images", 2, sizes["per_class"]).to_parquet(work / "images.parquet")
        build_models(work, arch_of(args.arch, load_config(CONFIG)))
        print(f"built the models in {time.perf_counter() - t0:.0f} s", flush=True)
        rows, failed = [], []
        for stage in stages:
            t1 = time.perf_counter()
            try:
                rows.append(measure(stage, work, args.device, sizes, log))
            except RuntimeError as exc:  # the other stages still run: one cut-short GPU loan measures the rest
                print(exc, file=sys.stderr, flush=True)
                failed.append(stage)
                continue
            print(f"{stage}: {rows[-1]['seconds_per_item']:.4g} s per {rows[-1]['item']} "
                  f"({time.perf_counter() - t1:.0f} s with loading)", flush=True)
            with atomic_path(out / "fullsize.csv") as tmp_csv:  # after every stage: a cut-off run keeps its rows
                pd.DataFrame(rows).reindex(columns=COLUMNS).to_csv(tmp_csv, index=False, float_format="%.5g")
        df = pd.DataFrame(rows).reindex(columns=COLUMNS)
        summary = {"arch": args.arch, "device": args.device, "failed": failed,
                   "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
                   "torch": torch.__version__, "cpus": os.cpu_count()}
        rate = df.set_index("stage").items_per_s
        for ours in ("generate", "generate_compiled"):
            if {ours, "generate_official"} <= set(rate.index):
                summary[f"{ours}_speedup_vs_official"] = float(rate[ours] / rate["generate_official"])
        write_json(summary, out / "fullsize.json")
    print(df.to_string(index=False))
    print(json.dumps(summary))
    if failed:
        raise SystemExit(f"stages failed: {', '.join(failed)} (see {out / 'fullsize.log'})")


if __name__ == "__main__":
    main()
