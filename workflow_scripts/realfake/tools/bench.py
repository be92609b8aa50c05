"""`make bench`: speed of generation, classifier data loading and DAG planning, as ratios.

Everything is measured in one process run, back to back, so machine noise mostly cancels in the
ratios. Writes results/bench/{generation,flops,loading,dryrun,decode}.csv and prints a summary.

* generation: our generate stage (one model load, prompt embeddings cached per class, images
  appended to a tar shard) vs a reference loop that does what the official generate.py does (one
  pipeline call per batch with prompt strings encoded on every call, guidance read per image with
  torch.load, model CPU offload when on CUDA, one JPEG file per image with an exists() check);
* flops: UNet FLOPs per image (torch.utils.flop_counter) x images/s vs the measured matmul FLOP/s;
* loading: classifier input images/s from tar shards vs one-file-per-image folders, loader only and
  with a training step;
* dryrun: `snakemake -n` job count and seconds vs dataset size (IN-10/100/1K) and scale (1x/10x);
* decode: CPU milliseconds (one thread) to decode a 512 px JPEG and run each paper classifier
  recipe's training transform, at 224 and 448 px: the loader's side of a classifier's price
  (``resources.DECODE_MS``);
* lora_step: one LoRA fine-tuning step of SD 1.5's architecture (random weights) split into its
  parts (VAE encode, text encoder, UNet forward, UNet backward), with the frozen VAE and text
  encoder in float32 and in half precision (``lora.frozen_half``: float16 on a GPU, bfloat16 on the
  CPU), so the share each part takes, and what half precision saves, shows without a GPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..atomic import atomic_path
from ..classifier_data import fixed_batches
from ..classifier_models import SmallCNN
from ..config import load_config
from ..synthesis import batches_of, generate, pipelines_for
from ..images import load_rgb, to_tensor
from ..lora import add_lora
from ..method import encode_text, inject_guidance, realfake_loss
from ..models import load_pipeline
from ..recipes import train_transform
from ..settings import Classify, Generate
from ..shards import ShardDataset, ShardWriter, in_stream_order, loader_rounds
from ..tiny_sd import TEXT_HIDDEN, build_tiny_pipeline, build_tokenizer
from .sd15 import build_sd15

REPO = Path(__file__).resolve().parents[3]


def _clock() -> float:
    return time.perf_counter()


# ----------------------------------------------------------------------------- generation
def _bench_world(work: Path, n_classes: int, per_class: int, size: int, seed: int = 0):
    """A tiny random SD pipeline folder, source images on disk, per-image guidance files."""
    tok = build_tokenizer(work / "_tok")
    build_tiny_pipeline(tok, seed=seed, image_size=size).save_pretrained(work / "pipe")
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_classes):
        for i in range(per_class):
            p = work / "src" / f"{c}_{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p)
            rows.append({"label": c, "source_path": str(p), "key": f"c{c}_{i}", "seed": int(rng.integers(1 << 62)),
                         "prompt": f"a photo of class {c}"})
    jobs = pd.DataFrame(rows)
    guidance = torch.randn(len(jobs), TEXT_HIDDEN, generator=torch.Generator().manual_seed(seed))
    return work / "pipe", jobs, guidance, write_guidance_files(jobs.key, guidance, work / "guidance")


def write_guidance_files(keys, guidance: torch.Tensor, gdir: Path) -> Path:
    """One ``<key>.pt`` per guidance row, the official code's per-image layout (``run_reference`` reads it)."""
    gdir.mkdir(parents=True, exist_ok=True)
    for k, g in zip(keys, guidance):
        torch.save(g.clone(), gdir / f"{k}.pt")
    return gdir


def run_ours(base: Path, jobs, guidance, g: Generate, size, out: Path, device, dtype, lora: Path | None = None,
             warmup: bool = True, on_loaded=None) -> float:
    """Images/s of our generate loop (latent prior, the LoRA at ``g.lora_scale`` when given).
    ``on_loaded()`` is called once the pipelines are loaded, before the first batch."""
    pipes = pipelines_for(str(base), None if lora is None else str(lora), device, dtype, g)
    if on_loaded is not None:
        on_loaded()
    scaled = lora is not None  # the LoRA runs at g.lora_scale
    batches = batches_of(jobs, g.batch_size)
    prompts = dict(zip(jobs.index, jobs.prompt))
    out.mkdir(parents=True, exist_ok=True)
    if warmup:  # one batch (not timed), into a throwaway shard
        warm = ShardWriter(out / "warm.tar", [list(batches[0].key)], "warm")
        generate(pipes, batches[:1], prompts, guidance, g, True, size, "", False, warm, scaled)
    writer = ShardWriter(out / "ours.tar", [list(b.key) for b in batches], "bench")
    t0 = _clock()
    generate(pipes, batches, prompts, guidance, g, True, size, "", False, writer, scaled)
    writer.close()
    return len(jobs) / (_clock() - t0)


def run_reference(base: Path, jobs, gdir: Path, g: Generate, size, out: Path, device, dtype,
                  lora: Path | None = None, on_loaded=None) -> float:
    """Images/s of what the official generate.py does per batch (see module docstring)."""
    from diffusers import StableDiffusionImg2ImgPipeline, UniPCMultistepScheduler

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(base), torch_dtype=dtype, safety_checker=None)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    extra = {}
    if lora is not None:
        pipe.load_lora_weights(str(Path(lora).parent), weight_name=Path(lora).name)
        extra["cross_attention_kwargs"] = {"scale": g.lora_scale}
    if device == "cuda":
        pipe.enable_model_cpu_offload()
    else:  # CPU offload needs an accelerator: on CPU the reference keeps the model in place
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if on_loaded is not None:
        on_loaded()
    bs = g.batch_size
    batches = [jobs.iloc[i : i + bs] for i in range(0, len(jobs), bs)]
    out.mkdir(parents=True, exist_ok=True)

    def one(batch):
        paths = [out / f"{k}.jpg" for k in batch.key]  # JPEG at PIL's default quality, as generate.py saves
        if paths[-1].exists():  # the official resume check: last file of the batch only
            return
        prompts = [f"{p}, photo, best quality" for p in batch.prompt]
        negative = ["distorted, unrealistic, blurry"] * len(batch)
        dev = pipe._execution_device
        hidden = encode_text(pipe.tokenizer, pipe.text_encoder, prompts, dev)
        neg = encode_text(pipe.tokenizer, pipe.text_encoder, negative, dev)
        token = torch.stack([torch.load(gdir / f"{k}.pt") for k in batch.key])
        hidden = inject_guidance(hidden, token.to(dev), False)
        init = [Image.open(p).convert("RGB").resize((size, size)) for p in batch.source_path]
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in batch.seed]
        images = pipe(prompt_embeds=hidden.to(dtype), negative_prompt_embeds=neg.to(dtype), image=init,
                      strength=g.strength, num_inference_steps=g.steps, guidance_scale=g.cfg,
                      generator=gens, **extra).images
        for im, p in zip(images, paths):
            im.save(p)

    one(batches[0])  # warm-up (not timed)
    for p in out.iterdir():
        p.unlink()
    t0 = _clock()
    for b in batches:
        one(b)
    return len(jobs) / (_clock() - t0)


def unet_flops_per_image(pipe, size: int, steps: int, strength: float) -> float:
    """UNet FLOPs for one image: batch of 2 (CFG) per denoising step, img2img steps only."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = pipe.unet
    lat = size // pipe.vae_scale_factor
    x = torch.randn(2, unet.config.in_channels, lat, lat, device=unet.device, dtype=unet.dtype)
    ctx = torch.randn(2, pipe.tokenizer.model_max_length, unet.config.cross_attention_dim,
                      device=unet.device, dtype=unet.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500, 500], device=unet.device), encoder_hidden_states=ctx)
    return counter.get_total_flops() * int(steps * strength)


def matmul_flops_per_s(device: str, dtype, n: int = 1024, seconds: float = 2.0) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, _clock()
    while _clock() - t0 < seconds:
        a @ b
        reps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (_clock() - t0)


def bench_generation(work: Path, quick: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    size = 64
    n_classes, per_class = (2, 8) if quick else (2, 16)
    g = Generate(steps=10 if quick else 30, cfg=2.0, strength=0.75, lora_scale=0.5, batch_size=8 if quick else 16,
                 seed=0, classes_per_shard=1, image_format="png", jpeg_quality=95, fuse_lora=False,
                 torch_compile=False)
    base, jobs, guidance, gdir = _bench_world(work, n_classes, per_class, size)
    rows = []
    for rep in range(1 if quick else 2):  # interleaved so drift hits both
        ref = run_reference(base, jobs, gdir, g, size, work / f"ref{rep}", device, dtype)
        ours = run_ours(base, jobs, guidance, g, size, work / f"ours{rep}", device, dtype)
        rows.append({"rep": rep, "device": device, "images": len(jobs), "image_size": size, "steps": g.steps,
                     "batch_size": g.batch_size, "reference_img_per_s": ref, "ours_img_per_s": ours,
                     "speedup": ours / ref})
        (work / f"ours{rep}" / "ours.tar").unlink()
    gen = pd.DataFrame(rows)

    pipe = load_pipeline(str(base), device=device, dtype=dtype)
    per_image = unet_flops_per_image(pipe, size, g.steps, g.strength)
    peak = matmul_flops_per_s(device, dtype)
    best = gen.ours_img_per_s.max()
    flops = pd.DataFrame([{"device": device, "dtype": str(dtype).replace("torch.", ""), "unet_gflop_per_image": per_image / 1e9,
                           "ours_img_per_s": best, "achieved_gflop_per_s": per_image * best / 1e9,
                           "matmul_gflop_per_s": peak / 1e9, "fraction_of_bound": per_image * best / peak,
                           "flop_bound_img_per_s": peak / per_image}])
    return gen, flops


# ----------------------------------------------------------------------------- loading
class _FolderDataset(torch.utils.data.Dataset):
    def __init__(self, paths, labels, size):
        self.paths, self.labels, self.size = paths, labels, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return to_tensor([load_rgb(self.paths[i], self.size)])[0], self.labels[i]


def bench_loading(work: Path, quick: bool) -> pd.DataFrame:
    n, size, per_shard = (512, 32, 128) if quick else (4096, 64, 512)
    rng = np.random.default_rng(0)
    paths, labels, shards = [], [], []
    folder = work / "files"
    for s in range(n // per_shard):
        keys = [f"{s}_{i}" for i in range(per_shard)]
        w = ShardWriter(work / "shards" / f"{s:05d}.tar", [keys], "bench")
        items = []
        for k in keys:
            lab = int(rng.integers(10))
            arr = (rng.random((size, size, 3)) * 40 + rng.integers(0, 200)).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            p = folder / str(lab) / f"{k}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(buf.getvalue())
            paths.append(str(p))
            labels.append(lab)
            items.append((k, buf.getvalue(), lab))
        w.write_batch(items)
        w.close()
        shards.append(str(work / "shards" / f"{s:05d}.tar"))
    workers = 2
    rows = []
    model = SmallCNN(10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for with_step in (False, True):
        for name in ("files", "shards", "files", "shards"):
            if name == "files":
                loader = torch.utils.data.DataLoader(_FolderDataset(paths, labels, size), batch_size=64, shuffle=True,
                                                     generator=torch.Generator().manual_seed(0), num_workers=workers)
            else:  # the classifier's stream loader: 2 streams per worker, batches of 64 from their rounds
                ds = ShardDataset(shards, size, 0, 256, streams=2 * workers)
                loader = fixed_batches(in_stream_order(loader_rounds(ds, workers)), 64, -(-n // 64))
            t0, seen = _clock(), 0
            for x, y in loader:
                if with_step:
                    loss = torch.nn.functional.cross_entropy(model(x), torch.as_tensor(y))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                seen += len(x)
            rows.append({"source": name, "with_train_step": with_step, "images": seen, "image_size": size,
                         "workers": workers, "img_per_s": seen / (_clock() - t0),
                         "files_opened": n if name == "files" else len(shards)})
    df = pd.DataFrame(rows).groupby(["source", "with_train_step", "images", "image_size", "workers", "files_opened"],
                                     as_index=False).img_per_s.max()
    return df


# ----------------------------------------------------------------------------- dry-run
def _dry_run(work: Path, configs: list[Path], extra: dict) -> tuple[int, float]:
    cfg = work / f"extra_{abs(hash(json.dumps(extra, sort_keys=True)))}.yaml"
    cfg.write_text(json.dumps(extra))
    smk = Path(sys.executable).parent / "snakemake"
    cmd = [str(smk), "results/tables/table1.csv", "-n", "-s", str(REPO / "Snakefile"), "-d", str(work / "dag"),
           "--cores", "1", "--quiet", "rules", "--configfile", *map(str, configs), str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts")}
    t0 = _clock()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    secs = _clock() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"dry run failed: {proc.stderr[-2000:]}")
    m = re.search(r"^total\s+(\d+)", proc.stdout + proc.stderr, re.M)
    if not m:
        raise RuntimeError(f"no job count in dry-run output: {proc.stdout[-1000:]}")
    return int(m.group(1)), secs


def bench_dryrun(work: Path, quick: bool) -> pd.DataFrame:
    rows = []
    sets = [("imagenet10", 10), ("imagenet100", 100), ("imagenet1k", 1000)]
    scales = [1, 10]
    for name, classes in sets:
        for scale in scales:
            extra = {"scales": [scale], "tables": {"scale": scale}, "nearest": {"scale": scale}}
            jobs, secs = _dry_run(work, [REPO / "config" / f"{name}.yaml"], extra)
            rows.append({"config": name, "classes": classes, "scale": scale, "jobs": jobs, "seconds": secs})
    jobs, secs = _dry_run(work, [REPO / "config" / "paper.yaml"],
                          {"scales": [10], "tables": {"scale": 10}, "nearest": {"scale": 10}})
    rows.append({"config": "paper (7 datasets)", "classes": 1778, "scale": 10, "jobs": jobs, "seconds": secs})
    return pd.DataFrame(rows)


def bench_decode(quick: bool) -> pd.DataFrame:
    """CPU ms per image of decode + training transform (IN-10 recipe at 224 and 448 px, IN-1K's
    RandAugment recipe at 224) on 512 px JPEGs at quality 95, one thread, by process time."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:512, 0:512]
    jpegs = []
    for k in range(4 if quick else 16):  # smooth gradients plus noise: a photo-like JPEG, not pure noise
        base = np.stack([np.sin(x / (20 + k) + k), np.cos(y / (30 + k)), np.sin((x + y) / (40 + k))], -1)
        arr = ((base * 0.5 + 0.5) * 200 + rng.normal(0, 12, (512, 512, 3))).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
        jpegs.append(buf.getvalue())
    rows = []
    for config, size in (("imagenet10", 224), ("imagenet10", 448), ("imagenet1k", 224)):
        cfg = load_config(REPO / "config" / f"{config}.yaml")
        tf = train_transform(Classify.of(cfg, config), size)
        for b in jpegs[:2]:
            tf(Image.open(io.BytesIO(b)).convert("RGB"))  # warm-up
        n, t0 = 0, time.process_time()
        while time.process_time() - t0 < (0.5 if quick else 5.0):
            for b in jpegs:
                tf(Image.open(io.BytesIO(b)).convert("RGB"))
                n += 1
        rows.append({"recipe": config, "input_size": size, "jpeg_kb": round(np.mean([len(b) for b in jpegs]) / 1000),
                     "cpu_ms_per_image": 1000 * (time.process_time() - t0) / n, "images": n})
    return pd.DataFrame(rows)


def bench_lora_step(quick: bool) -> pd.DataFrame:
    """Seconds of each part of a LoRA step (batch 2; SD 1.5's architecture at 256 px, or the tiny
    pipeline at 32 px with ``quick``), the frozen parts in float32 and in half precision; the median
    of 3 timed steps after one warm-up."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    half = torch.float16 if device == "cuda" else torch.bfloat16
    size, batch = (32, 2) if quick else (256, 2)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    rows = []
    for frozen in (torch.float32, half):
        if quick:
            with tempfile.TemporaryDirectory() as tok:
                pipe = build_tiny_pipeline(build_tokenizer(Path(tok)), seed=0, image_size=size)
        else:
            pipe = build_sd15(seed=0)
        pipe.to(device)
        pipe.vae.to(dtype=frozen)
        pipe.text_encoder.to(dtype=frozen)
        params = add_lora(pipe.unet, 4)
        opt = torch.optim.AdamW(params, lr=1e-4)
        x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
        ids = pipe.tokenizer(["a photo of a dog"] * batch, padding="max_length", truncation=True,
                             max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids.to(device)
        acp = pipe.scheduler.alphas_cumprod
        times: dict[str, list[float]] = {k: [] for k in ("vae_encode", "text_encoder", "unet_forward", "unet_backward")}
        for rep in range(4):
            marks = [time.perf_counter()]
            with torch.no_grad():
                latents = pipe.vae.encode(x.to(frozen)).latent_dist.mean.float() * pipe.vae.config.scaling_factor
                sync(), marks.append(time.perf_counter())
                hidden = pipe.text_encoder(ids)[0].float()
                sync(), marks.append(time.perf_counter())
            noise = torch.randn_like(latents)
            t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (batch,), device=device)
            pred = pipe.unet(pipe.scheduler.add_noise(latents, noise, t), t, hidden).sample
            loss = realfake_loss(pred.float(), noise, acp, t, 5.0, 0.003, None)[0]
            sync(), marks.append(time.perf_counter())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync(), marks.append(time.perf_counter())
            if rep:  # the first is a warm-up
                for k, (a, b) in zip(times, zip(marks, marks[1:])):
                    times[k].append(b - a)
        step = sum(float(np.median(v)) for v in times.values())
        for k, v in times.items():
            rows.append({"model": "tiny" if quick else "sd15_arch", "size": size, "batch": batch, "device": device,
                         "frozen_dtype": str(frozen).replace("torch.", ""), "part": k,
                         "seconds": float(np.median(v)), "share_of_step": float(np.median(v)) / step})
        del pipe, opt, params
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/bench")
    p.add_argument("--quick", action="store_true", help="small sizes (a test of the bench itself)")
    p.add_argument("--only", nargs="*", default=["generation", "loading", "dryrun", "decode", "lora_step"])
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2) if torch.cuda.is_available() else (os.cpu_count() or 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    def save(df, name):
        with atomic_path(out / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False, float_format="%.4g")
        print(f"\n== {out / name}.csv\n{df.to_string(index=False)}")

    with tempfile.TemporaryDirectory(prefix="realfake-bench-") as tmp:
        work = Path(tmp)
        if "generation" in args.only:
            gen, flops = bench_generation(work / "gen", args.quick)
            save(gen, "generation")
            save(flops, "flops")
        if "loading" in args.only:
            (work / "load").mkdir()
            save(bench_loading(work / "load", args.quick), "loading")
        if "dryrun" in args.only:
            (work / "dry").mkdir()
            save(bench_dryrun(work / "dry", args.quick), "dryrun")
        if "decode" in args.only:
            save(bench_decode(args.quick), "decode")
        if "lora_step" in args.only:
            save(bench_lora_step(args.quick), "lora_step")


if __name__ == "__main__":
    main()
