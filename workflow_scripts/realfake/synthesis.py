"""The generation library: per-image seeds, the generation plan of a set, pipelines with UniPC and
a LoRA, and the batched generation loop that appends to a tar shard. The generate stage is a thin
CLI over it; the benchmark drives the same loop.
"""

from __future__ import annotations

import hashlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .atomic import fault_hook
from .images import load_rgb
from .method import LORA_TARGETS, encode_text, inject_guidance
from .models import load_pipeline
from .settings import Generate
from .shards import ShardWriter, synthetic_id

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ["image_id", "label", "class_name", "source_image", "replica", "seed", "prompt", "caption",
                    "guidance", "lora_hash", "shard", "member"]
PROMPT_CACHE = 1024  # encoded prompts kept per job (77 x 768 fp16 each: 120 MB at paper scale)


def image_seed(dataset: str, source_image: str, replica: int, base_seed: int) -> int:
    """Deterministic 63-bit seed per synthetic image."""
    key = f"{dataset}|{source_image}|{replica}|{base_seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def file_hash(path: str | Path | None) -> str:
    if path is None:
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def make_pipelines(base: str, lora: str | None, device: str, dtype, compile_unet: bool = False,
                   fuse_scale: float | None = None):
    """(text2img, img2img) sharing one set of weights, UniPC scheduler, LoRA loaded if given; with
    ``fuse_scale`` the LoRA is folded into the UNet's weights at that scale and its layers unloaded
    (``generate.fuse_lora``), so calls then run the plain UNet.

    Loaded once per job and kept on the device (no CPU offload); attention runs through PyTorch
    SDPA (diffusers' default AttnProcessor2_0, checked in tests)."""
    from diffusers import StableDiffusionImg2ImgPipeline, UniPCMultistepScheduler

    pipe = load_pipeline(base, device=device, dtype=dtype)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    if lora is not None:
        check_lora_fits(pipe.unet, lora, base)
        pipe.load_lora_weights(str(Path(lora).parent), weight_name=Path(lora).name)
        if fuse_scale is not None:
            pipe.fuse_lora(lora_scale=fuse_scale)
            pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    return pipe, img2img


def pipelines_for(base: str, lora: str | None, device: str, dtype, g: Generate):
    """``make_pipelines`` as the ``generate`` settings ask (compiled UNet, LoRA fused at its scale);
    ``generate`` reads the same settings, so a fused LoRA is not scaled a second time."""
    return make_pipelines(base, lora, device, dtype, g.torch_compile, g.lora_scale if g.fuse_lora else None)


def check_lora_fits(unet, lora: str | Path, base: str) -> None:
    """A LoRA file made for another base model (other layer names or widths) is an error naming
    both files; diffusers alone would skip unknown layers with a warning, or fail deep inside."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(lora))
    except Exception as exc:  # safetensors raises its own error types for a foreign file
        raise ValueError(f"LoRA file {lora} is not a readable safetensors file: {exc}") from exc
    modules = dict(unet.named_modules())
    pairs: dict[str, dict[str, tuple]] = {}
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"LoRA file {lora}: tensor {key!r} holds NaN or infinite values (the fine-tuning "
                             "diverged or the file is damaged); it would generate black images. Rerun the "
                             "fine-tuning (e.g. with a lower finetune.lr)")
        name = key.removeprefix("unet.")
        for tail, dim in ((".lora_A.weight", "in_features"), (".lora_B.weight", "out_features"),
                          (".lora.down.weight", "in_features"), (".lora.up.weight", "out_features")):
            if name.endswith(tail):
                target = modules.get(name[: -len(tail)])
                if target is None or not hasattr(target, dim):
                    raise ValueError(f"LoRA file {lora} does not fit the base model {base}: it adapts layer "
                                     f"{name[: -len(tail)]!r}, which the base UNet does not have")
                if tensor.dim() != 2:
                    raise ValueError(f"LoRA file {lora}: tensor {key!r} has shape {tuple(tensor.shape)}; a LoRA "
                                     "weight is a matrix (the file is damaged or not a LoRA)")
                pairs.setdefault(name[: -len(tail)], {})["A" if dim == "in_features" else "B"] = tuple(tensor.shape)
                want = getattr(target, dim)
                got = tensor.shape[1] if dim == "in_features" else tensor.shape[0]
                if got != want:
                    raise ValueError(f"LoRA file {lora} does not fit the base model {base}: layer "
                                     f"{name[: -len(tail)]!r} is {want} wide in the base, {got} in the LoRA")
                break
        else:
            raise ValueError(f"LoRA file {lora}: unexpected tensor {key!r} (not a diffusers UNet LoRA)")
    for layer, ab in pairs.items():
        if set(ab) != {"A", "B"} or ab["A"][0] != ab["B"][1]:
            raise ValueError(f"LoRA file {lora}: layer {layer!r} has {sorted(ab) or 'no'} of its down/up pair "
                             f"({ab}); both, of one rank, are needed (the file is damaged)")
    expected = {n for n, m in modules.items()
                if n.endswith(tuple("." + t for t in LORA_TARGETS)) and hasattr(m, "in_features")}
    missing = sorted(expected - set(pairs))
    if pairs and missing:
        raise ValueError(f"LoRA file {lora}: {len(missing)} of the base UNet's {len(expected)} attention projections "
                         f"have no LoRA weights (first: {missing[0]!r}); the file is incomplete")


def set_order(dataset: str, n_train: int, scale: int, base_seed: int):
    """The synthetic set's global order: a seeded permutation of its ``n_train * scale`` positions
    (position p = replica ``p // n_train`` of training image ``p % n_train``). Shards are consecutive
    runs of it, so every shard, and every stretch of a shard, is a uniform sample of the whole set's
    classes: a streaming loader needs no large shuffle buffer. int32 where it fits: 51 MB at
    IN-1K 10x (12.8 M positions)."""
    key = hashlib.sha256(f"order|{dataset}|{scale}|{base_seed}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(key[:8], "big"))
    total = n_train * scale
    return rng.permutation(np.arange(total, dtype=np.int32 if total < 2**31 else np.int64))


def shard_bounds(total: int, n_shards: int, shard: int) -> tuple[int, int]:
    """Positions [lo, hi) of the set's order that shard ``shard`` of ``n_shards`` holds."""
    return shard * total // n_shards, (shard + 1) * total // n_shards


def plan(dataset: str, train: pd.DataFrame, scale: int, base_seed: int, shard: int = 0,
         n_shards: int = 1) -> pd.DataFrame:
    """One row per synthetic image of one shard, in generation (= stored) order: source image,
    replica and per-image seed. Only the shard's own rows are built (a shard job at IN-1K 10x
    builds 1/100 of the set's 12.8 M rows)."""
    order = set_order(dataset, len(train), scale, base_seed)
    lo, hi = shard_bounds(len(order), n_shards, shard)
    pos = order[lo:hi].astype(np.int64)
    src, replica = pos % len(train), pos // len(train)
    rows = train.iloc[src]
    ids = rows.image_id.to_numpy()
    df = pd.DataFrame({"source_image": ids, "label": rows.label.to_numpy().astype(int),
                       "class_name": rows.class_name.to_numpy(), "source_path": rows.path.to_numpy(),
                       "replica": replica})
    df["seed"] = [image_seed(dataset, s, int(r), base_seed) for s, r in zip(ids, replica)]
    df["image_id"] = [synthetic_id(s, r) for s, r in zip(ids, replica)]
    return df


def batches_of(jobs: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Generation batches: consecutive runs of the shard's (shuffled) order. Prompts differ within
    a batch; each is encoded once per job (cached by ``generate``)."""
    return [jobs.iloc[i : i + batch_size] for i in range(0, len(jobs), batch_size)]


def encode_image(im, fmt: str, quality: int) -> bytes:
    """PNG (lossless) or JPEG bytes; both deterministic for the same pixels."""
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, format="PNG")
    else:
        im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@torch.no_grad()
def generate(pipes, batches: list[pd.DataFrame], prompts: dict, guidance, g: Generate, latent_prior: bool,
             size: int, negative: str, rescale: bool, writer: ShardWriter, lora_used: bool,
             io_threads: int = 4) -> None:
    """Run the pipeline over the pending batches and append each batch to the shard.

    The GPU waits for neither the disk nor the JPEG encoder: the next batch's init images are read
    and resized, and the previous batch's images encoded (``io_threads`` at a time) and appended
    to the shard, in threads while the pipeline runs. Batches are appended in order, one at a
    time, so the shard's bytes are those of the plain loop."""
    text2img, img2img = pipes
    tok, te = text2img.tokenizer, text2img.text_encoder
    device = text2img.unet.device
    cache: dict[str, torch.Tensor] = {}

    def embed(prompts: list[str]) -> torch.Tensor:
        """Text states of a batch's prompts, each distinct prompt encoded once. The cache is bounded:
        with captions every source image has its own prompt (128k per shard at IN-1K 10x)."""
        new = sorted(set(prompts) - cache.keys())
        if len(cache) + len(new) > PROMPT_CACHE:
            cache.clear()
            new = sorted(set(prompts))
        if new:
            cache.update(zip(new, encode_text(tok, te, new, device)))
        return torch.stack([cache[p] for p in prompts])

    neg = encode_text(tok, te, [negative], device)
    # float output, checked, then made 8-bit exactly as diffusers' "pil" output does
    kwargs = {"num_inference_steps": g.steps, "guidance_scale": g.cfg, "output_type": "np"}
    if lora_used and not g.fuse_lora:  # a fused LoRA is in the weights at its scale already
        kwargs["cross_attention_kwargs"] = {"scale": g.lora_scale}
    done = writer.done_batches
    todo = batches[done:]
    with ThreadPoolExecutor(io_threads) as pool, ThreadPoolExecutor(1) as reads, ThreadPoolExecutor(1) as writes:
        def init_images(batch: pd.DataFrame):
            return list(pool.map(lambda path: load_rgb(path, size), batch.source_path)) if latent_prior else None

        def append(step: int, batch: pd.DataFrame, images: list) -> None:
            encoded = pool.map(lambda im: encode_image(im, g.image_format, g.jpeg_quality), images)
            writer.write_batch(zip(batch.key, encoded, batch.label))
            fault_hook("generate", step)

        upcoming = reads.submit(init_images, todo[0]) if todo else None
        written = None
        for i, batch in enumerate(tqdm(todo, desc="generate", mininterval=10)):
            step = done + i + 1
            init = upcoming.result()
            if i + 1 < len(todo):
                upcoming = reads.submit(init_images, todo[i + 1])
            hidden = embed([prompts[k] for k in batch.index])
            token = None if guidance is None else guidance[list(batch.index)].to(device)
            hidden = inject_guidance(hidden, token, rescale)
            gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in batch.seed]
            common = dict(prompt_embeds=hidden.to(text2img.unet.dtype),
                          negative_prompt_embeds=neg.expand(len(batch), -1, -1).to(text2img.unet.dtype),
                          generator=gens, **kwargs)
            if latent_prior:
                pixels = img2img(image=init, strength=g.strength, **common).images
            else:
                pixels = text2img(height=size, width=size, **common).images
            images = finite_images(pixels, batch, step, writer)
            if written is not None:
                written.result()  # the previous batch is on disk (or its error raised here)
            written = writes.submit(append, step, batch, images)
        if written is not None:
            written.result()


def finite_images(pixels: np.ndarray, batch: pd.DataFrame, step: int, writer) -> list:
    """8-bit images of a batch's float output; NaN or infinite pixels (a diverged LoRA, fp16
    overflow) are an error naming the images, instead of black images written as valid ones."""
    from diffusers.image_processor import VaeImageProcessor

    bad = ~np.isfinite(pixels).reshape(len(pixels), -1).all(axis=1)
    if bad.any():
        raise ValueError(f"generation produced NaN or infinite pixels in {int(bad.sum())} of {len(pixels)} images "
                         f"of batch {step} of {writer.final} (first: {batch.image_id.iloc[int(np.argmax(bad))]}): "
                         "check the LoRA and the base model (fp16 on CUDA can overflow where float32 does not)")
    return VaeImageProcessor.numpy_to_pil(pixels)
