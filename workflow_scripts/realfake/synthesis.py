"""The generation library: per-image seeds, the generation plan of a set, pipelines with UniPC and
a LoRA, and the batched generation loop that appends to a tar shard. The generate stage is a thin
CLI over it; the benchmark drives the same loop.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from .atomic import fault_hook
from .images import load_rgb
from .method import encode_text, inject_guidance
from .models import load_pipeline
from .settings import Generate
from .shards import ShardWriter

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ["image_id", "label", "class_name", "source_image", "replica", "seed", "prompt", "caption",
                    "guidance", "lora_hash", "shard", "member"]


def image_seed(dataset: str, source_image: str, replica: int, base_seed: int) -> int:
    """Deterministic 63-bit seed per synthetic image."""
    key = f"{dataset}|{source_image}|{replica}|{base_seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def file_hash(path: str | Path | None) -> str:
    if path is None:
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def make_pipelines(base: str, lora: str | None, device: str, dtype, compile_unet: bool = False):
    """(text2img, img2img) sharing one set of weights, UniPC scheduler, LoRA loaded if given.

    Loaded once per job and kept on the device (no CPU offload); attention runs through PyTorch
    SDPA (diffusers' default AttnProcessor2_0, checked in tests)."""
    from diffusers import StableDiffusionImg2ImgPipeline, UniPCMultistepScheduler

    pipe = load_pipeline(base, device=device, dtype=dtype)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    if lora is not None:
        check_lora_fits(pipe.unet, lora, base)
        pipe.load_lora_weights(str(Path(lora).parent), weight_name=Path(lora).name)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    return pipe, img2img


def check_lora_fits(unet, lora: str | Path, base: str) -> None:
    """A LoRA file made for another base model (other layer names or widths) is an error naming
    both files; diffusers alone would skip unknown layers with a warning, or fail deep inside."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(lora))
    except Exception as exc:  # safetensors raises its own error types for a foreign file
        raise ValueError(f"LoRA file {lora} is not a readable safetensors file: {exc}") from exc
    modules = dict(unet.named_modules())
    for key, tensor in state.items():
        name = key.removeprefix("unet.")
        for tail, dim in ((".lora_A.weight", "in_features"), (".lora_B.weight", "out_features"),
                          (".lora.down.weight", "in_features"), (".lora.up.weight", "out_features")):
            if name.endswith(tail):
                target = modules.get(name[: -len(tail)])
                if target is None or not hasattr(target, dim):
                    raise ValueError(f"LoRA file {lora} does not fit the base model {base}: it adapts layer "
                                     f"{name[: -len(tail)]!r}, which the base UNet does not have")
                want = getattr(target, dim)
                got = tensor.shape[1] if dim == "in_features" else tensor.shape[0]
                if got != want:
                    raise ValueError(f"LoRA file {lora} does not fit the base model {base}: layer "
                                     f"{name[: -len(tail)]!r} is {want} wide in the base, {got} in the LoRA")
                break
        else:
            raise ValueError(f"LoRA file {lora}: unexpected tensor {key!r} (not a diffusers UNet LoRA)")


def plan(dataset: str, train: pd.DataFrame, scale: int, base_seed: int) -> pd.DataFrame:
    """One row per synthetic image: source image, replica and seed; ordered by class."""
    rows = []
    for r in range(scale):
        for row in train.itertuples():
            rows.append((row.image_id, int(row.label), row.class_name, row.path, r,
                         image_seed(dataset, row.image_id, r, base_seed)))
    df = pd.DataFrame(rows, columns=["source_image", "label", "class_name", "source_path", "replica", "seed"])
    df = df.sort_values(["label", "replica", "source_image"], kind="stable").reset_index(drop=True)
    df["image_id"] = [f"{s.replace('/', '_')}_r{r}" for s, r in zip(df.source_image, df.replica)]
    return df


def batches_of(jobs: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Generation batches: one class at a time (one prompt encoding per class where prompts agree)."""
    out = []
    for _, group in jobs.groupby("label", sort=True):
        out += [group.iloc[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return out


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
             size: int, negative: str, rescale: bool, writer: ShardWriter, lora_used: bool) -> None:
    """Run the pipeline over the pending batches and append each batch to the shard."""
    text2img, img2img = pipes
    tok, te = text2img.tokenizer, text2img.text_encoder
    device = text2img.unet.device
    cache: dict[str, torch.Tensor] = {}

    def embed(prompt):
        if prompt not in cache:
            cache[prompt] = encode_text(tok, te, [prompt], device)[0]
        return cache[prompt]

    neg = encode_text(tok, te, [negative], device)
    kwargs = {"num_inference_steps": g.steps, "guidance_scale": g.cfg, "output_type": "pil"}
    if lora_used:
        kwargs["cross_attention_kwargs"] = {"scale": g.lora_scale}
    done = writer.done_batches
    for step, batch in enumerate(tqdm(batches[done:], desc="generate", mininterval=10), start=done + 1):
        hidden = torch.stack([embed(prompts[i]) for i in batch.index])
        token = None if guidance is None else guidance[list(batch.index)].to(device)
        hidden = inject_guidance(hidden, token, rescale)
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in batch.seed]
        common = dict(prompt_embeds=hidden.to(text2img.unet.dtype),
                      negative_prompt_embeds=neg.expand(len(batch), -1, -1).to(text2img.unet.dtype),
                      generator=gens, **kwargs)
        if latent_prior:
            init = [load_rgb(p, size) for p in batch.source_path]
            images = img2img(image=init, strength=g.strength, **common).images
        else:
            images = text2img(height=size, width=size, **common).images
        writer.write_batch((k, encode_image(im, g.image_format, g.jpeg_quality), lab)
                           for k, im, lab in zip(batch.key, images, batch.label))
        fault_hook("generate", step)


def shard_key(image_id: str) -> str:
    """Tar member stem of a synthetic image: the image id with '/' and '.' made safe."""
    key = image_id.replace("/", "_").replace(".", "_")
    if len(key) > 90:
        key = key[:70] + "_" + hashlib.sha256(image_id.encode()).hexdigest()[:16]
    return key
