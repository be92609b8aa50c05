"""The LoRA fine-tuning library (paper Sec. 3.1-3.2, Tab. 7): the rank-r LoRA on the UNet's
attention projections, the seeded per-step batches and crops, and the training loop with the
min-SNR + distribution-matching loss and the visual-guidance token. The finetune stage is a thin CLI
over it; the full-size rehearsal drives the same loop.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import checkpoint
from .atomic import atomic_path, fault_hook
from .distributed import World
from .errors import SegmentDone, segment_stop
from .images import load_rgb
from .method import LORA_TARGETS, encode_text, inject_guidance, realfake_loss
from .provenance import seed_everything
from .settings import Finetune

log = logging.getLogger(__name__)


def add_lora(unet, rank: int) -> list[torch.nn.Parameter]:
    """Freeze the UNet and add a rank-r LoRA on the attention projections; return its params."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def save_lora(unet, out: str | Path) -> None:
    """Save the UNet LoRA as diffusers-format safetensors, loadable by pipe.load_lora_weights."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    with tempfile.TemporaryDirectory(dir=Path(out).parent) as tmpdir, atomic_path(out) as tmp:
        StableDiffusionPipeline.save_lora_weights(tmpdir, unet_lora_layers=layers, safe_serialization=True)
        shutil.move(str(Path(tmpdir) / "pytorch_lora_weights.safetensors"), tmp)


def random_crop(im: Image.Image, size: int, seed: int) -> Image.Image:
    """The short side resized to ``size`` (bilinear), then a ``size`` x ``size`` crop at an offset
    drawn from ``seed`` (torchvision's Resize(size) + RandomCrop(size), seeded)."""
    w, h = im.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((rw, rh), Image.BILINEAR)
    rng = np.random.default_rng(seed)
    x, y = int(rng.integers(rw - size + 1)), int(rng.integers(rh - size + 1))
    return im.crop((x, y, x + size, y + size))


class TrainImages(torch.utils.data.Dataset):
    """The real training images as uint8 tensors (3, size, size), decoded on demand (in DataLoader
    workers): memory is a few batches, not the dataset (3 MiB per image as float at 512 px).
    ``crop`` squash resizes each image to size x size; random (keys are (index, crop seed) pairs)
    resizes its short side and crops at a seeded offset."""

    def __init__(self, paths: list[str], size: int, crop: str = "squash"):
        self.paths, self.size, self.crop = list(paths), size, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> torch.Tensor:
        if self.crop == "random":
            i, seed = key
            im = random_crop(load_rgb(self.paths[i]), self.size, seed)
        else:
            im = load_rgb(self.paths[key], self.size)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


class RankBatches:
    """This process's rows (``World.part``) of every global batch a sampler yields."""

    def __init__(self, sampler, world: World):
        self.sampler, self.world = sampler, world

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for keys in self.sampler:
            yield keys[self.world.part(len(keys))]


class StepSampler:
    """The batch of every step, drawn with replacement from a generator seeded by (seed, step): a
    resumed run reads the same batches from its first step on, and no index list is held (IN-1K at
    100 epochs would be 128 M indices). With ``crop_seeds`` each key is (index, crop seed), the
    seed a function of (seed, step, position) alone."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, start: int = 0, crop_seeds: bool = False):
        self.n, self.batch_size, self.steps, self.seed, self.start = n, batch_size, steps, seed, start
        self.crop_seeds = crop_seeds

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        for step in range(self.start, self.steps):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            idx = torch.randint(self.n, (self.batch_size,), generator=g).tolist()
            if self.crop_seeds:
                base = (self.seed * 1_000_003 + step) * 65_537
                idx = [(i, base + j) for j, i in enumerate(idx)]
            yield idx


def frozen_half(pipe, f: Finetune) -> None:
    """On a GPU with ``finetune.amp``: the frozen VAE and text encoder in float16, as the official
    script casts them (``weight_dtype``; the VAE encode is 41 % of a step's FLOPs), and the UNet in
    channels-last memory format. Their outputs are used in float32. Nothing changes on the CPU."""
    if not (f.amp and pipe.unet.device.type == "cuda"):
        return
    pipe.vae.to(dtype=torch.float16)
    pipe.text_encoder.to(dtype=torch.float16)
    pipe.unet.to(memory_format=torch.channels_last)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """A loader batch (uint8, or float in [-1, 1]) as float in [-1, 1]."""
    return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x


def train_lora(pipe, images, prompts, guidance, f: Finetune, dm_weight: float, seed: int, rescale: bool,
               ckpt_path: str | Path | None = None, fingerprint: dict | None = None, workers: int = 0,
               world: World = World(), on_step=None, segments: int = 1, preview=None):
    """The fine-tuning loop; returns the per-step (loss, base, dm) history.

    ``segments`` > 1 (a run longer than a job may be): the run stops at the end of its segment,
    saves the checkpoint and raises ``SegmentDone``; the next job resumes there.

    ``images`` is a map-style dataset of image tensors (``TrainImages``, or a float tensor in
    [-1, 1]); ``workers`` DataLoader processes decode the batches ahead of the GPU. With
    ``ckpt_path`` it saves a checkpoint every ``finetune.checkpoint_every`` steps and resumes from
    one (same fingerprint only) with identical results to an uninterrupted run.

    Data parallel (``world`` of N processes): ``finetune.batch_size`` is the global batch; each
    process decodes its ``World.part`` of the step's rows, draws the step's flips, VAE samples,
    noise and timesteps for the whole batch and keeps its part, and the LoRA gradients are
    averaged before clipping and the AdamW step, so every process holds the same LoRA. The loss
    is the same function of the global batch for any N (distribution matching over
    ``finetune.dm_group`` rows, which never straddle two processes); only rank 0 writes.

    ``on_step()`` is called after every optimiser step (the full-size rehearsal times steps with it).
    ``preview(step)`` is called on rank 0 every ``finetune.preview_every`` steps and after the last
    (under a forked RNG, the UNet in eval mode: the LoRA is the same with or without it)."""
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    unet, vae, te, sched = pipe.unet, pipe.vae, pipe.text_encoder, pipe.scheduler
    vae.requires_grad_(False)
    te.requires_grad_(False)
    params = add_lora(unet, f.rank)
    world.broadcast([p.data for p in params])
    opt = torch.optim.AdamW(params, lr=f.lr)
    device = unet.device
    B = f.batch_size  # global; this process's rows of it: rows
    rows = world.part(B)
    acp = sched.alphas_cumprod
    history = []
    unet.train()
    steps = f.steps
    if f.epochs:
        steps = int(np.ceil(f.epochs * len(images) / f.batch_size))
    start = 0
    state = checkpoint.load(ckpt_path, fingerprint) if ckpt_path else None
    if state is not None:
        for p, v in zip(params, state["params"]):
            p.data.copy_(v)
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        history, start = state["history"], state["step"] + 1
    sampler = StepSampler(len(images), f.batch_size, steps, seed, start,
                          crop_seeds=getattr(images, "crop", "squash") == "random")
    loader = torch.utils.data.DataLoader(images, batch_sampler=RankBatches(sampler, world), num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=False)
    amp = f.amp and device.type == "cuda"
    every = f.checkpoint_every
    stop = segment_stop(start, steps, segments)
    if stop < steps and not ckpt_path:
        raise ValueError("fine-tuning in segments needs a checkpoint path")
    bar = tqdm(range(start, stop), desc="finetune", mininterval=10, initial=start, total=steps,
               disable=not world.main)
    for step, (keys, x) in zip(bar, zip(RankBatches(sampler, world), loader)):
        idx = torch.as_tensor([k[0] if isinstance(k, tuple) else k for k in keys])
        x = _as_float(x.to(device, non_blocking=True))
        if f.random_flip:
            flip = (torch.rand(B, generator=gen)[rows] < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        with torch.no_grad():
            posterior = vae.encode(x.to(device, vae.dtype)).latent_dist
            # the sample diffusers' latent_dist.sample(generator) draws, for the global batch (drawn in
            # float32 whatever the VAE's precision, so a half-precision VAE sees the same noise)
            eps = torch.randn((B, *posterior.mean.shape[1:]), generator=gen, dtype=torch.float32)[rows]
            mean, std = posterior.mean.float(), posterior.std.float()
            latents = (mean + std * eps.to(device)) * vae.config.scaling_factor
            ids = pipe.tokenizer([prompts[i] for i in idx.tolist()], padding="max_length", truncation=True,
                                 max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
            hidden = te(ids.to(device))[0].float()
            hidden = inject_guidance(hidden, None if guidance is None else guidance[idx].to(device), rescale)
        noise = torch.randn((B, *latents.shape[1:]), generator=gen)[rows].to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (B,), generator=gen)[rows].to(device)
        noisy = sched.add_noise(latents, noise, t)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = unet(noisy, t, hidden).sample
        loss, base, dm = realfake_loss(pred.float(), noise, acp, t, f.snr_gamma, dm_weight, f.dm_group)
        parts = torch.stack([loss.detach(), base, dm])
        world.average([parts])  # the global batch's loss (processes' means of equal parts)
        if not torch.isfinite(parts[0]):
            raise ValueError(f"fine-tuning loss became {float(parts[0])} at step {step} (lr {f.lr}): stopping")
        opt.zero_grad()
        loss.backward()
        world.average([p.grad for p in params])
        if f.max_grad_norm is not None:  # the official script clips at 1.0
            torch.nn.utils.clip_grad_norm_(params, f.max_grad_norm)
        opt.step()
        history.append(tuple(parts.tolist()))  # .tolist() waits for the device: the step is done
        if on_step is not None:
            on_step()
        if step % 50 == 0:
            log.info("step %d loss %.4f (min-snr %.4f, dm %.4f)", step, *history[-1])
        if preview is not None and world.main and f.preview_every and (
                (step + 1) % f.preview_every == 0 or step + 1 == steps):
            unet.eval()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
                preview(step + 1)
            unet.train()
        if ckpt_path and ((every and (step + 1) % every == 0) or step + 1 == stop) and step + 1 < steps:
            if world.main:  # every process holds the same LoRA, optimiser and generators
                checkpoint.save(ckpt_path, fingerprint, f"step {step + 1} of {steps}", step=step,
                                params=[p.detach().clone() for p in params], opt=opt.state_dict(),
                                gen=gen.get_state(), rng=torch.get_rng_state(), history=history)
            world.barrier()
            fault_hook("finetune", step + 1)
    if stop < steps:
        raise SegmentDone(f"fine-tuning segment ended at step {stop} of {steps}; checkpoint {ckpt_path}")
    unet.eval()
    return history


PREVIEW_CLASSES, PREVIEW_STEPS, PREVIEW_CFG = 4, 25, 2.0


def preview_rows(labels) -> list[int]:
    """Positions of the first training row of each of the first ``PREVIEW_CLASSES`` classes."""
    labels = np.asarray(labels)
    return [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:PREVIEW_CLASSES]]


def preview_images(pipe, prompts: list[str], guidance, rescale: bool, size: int, negative: str,
                   seed: int) -> Image.Image:
    """One image per prompt from the pipeline's UNet as it is now (UniPC, ``PREVIEW_STEPS`` steps,
    CFG ``PREVIEW_CFG``, seeds ``seed + i``), side by side in one image. ``guidance``: one embedding
    per prompt (or None), injected as in training."""
    from diffusers import StableDiffusionPipeline, UniPCMultistepScheduler

    text2img = StableDiffusionPipeline(**{**pipe.components,
                                          "scheduler": UniPCMultistepScheduler.from_config(pipe.scheduler.config)})
    text2img.set_progress_bar_config(disable=True)
    device, dtype = pipe.unet.device, pipe.unet.dtype
    hidden = encode_text(pipe.tokenizer, pipe.text_encoder, prompts, device)
    hidden = inject_guidance(hidden, None if guidance is None else guidance.to(device), rescale)
    neg = encode_text(pipe.tokenizer, pipe.text_encoder, [negative], device).expand(len(prompts), -1, -1)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    half = pipe.vae.dtype != dtype  # a float16 VAE beside the float32 UNet (``frozen_half``)
    with torch.autocast(device.type, dtype=pipe.vae.dtype, enabled=half):
        images = text2img(prompt_embeds=hidden.float().to(dtype), negative_prompt_embeds=neg.float().to(dtype),
                          height=size, width=size, num_inference_steps=PREVIEW_STEPS, guidance_scale=PREVIEW_CFG,
                          generator=gens).images
    grid = Image.new("RGB", (size * len(images), size))
    for i, im in enumerate(images):
        grid.paste(im, (i * size, 0))
    return grid
