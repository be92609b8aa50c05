"""Stage `generate`: synthetic training images (paper Sec. 3.3, Tab. 6).

Latent prior = img2img from a real training image (strength 0.75); otherwise text-to-image.
UniPC, CFG, LoRA scale from config; the guidance token goes in through ``prompt_embeds``.
Every image has its own seed derived from (dataset, source image, replica, replicate seed), so
any subset can be regenerated alone and gives the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from .atomic import atomic_dir, write_json, write_parquet
from .cli import parser, provenance, run, setup
from .config import get_dataset, get_variant
from .data import load_rgb
from .finetune import guidance_table
from .method import build_prompt, encode_text, inject_guidance
from .models import load_pipeline

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ["image_id", "label", "class_name", "source_image", "replica", "seed", "prompt", "caption",
                    "guidance", "lora_hash", "shard", "path"]


def image_seed(dataset: str, source_image: str, replica: int, base_seed: int) -> int:
    """Deterministic 63-bit seed per synthetic image."""
    key = f"{dataset}|{source_image}|{replica}|{base_seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def file_hash(path: str | Path | None) -> str:
    if path is None:
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def make_pipelines(base: str, lora: str | None, device: str, dtype):
    """(text2img, img2img) sharing one set of weights, UniPC scheduler, LoRA loaded if given."""
    from diffusers import StableDiffusionImg2ImgPipeline, UniPCMultistepScheduler

    pipe = load_pipeline(base, device=device, dtype=dtype)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    if lora is not None:
        pipe.load_lora_weights(str(Path(lora).parent), weight_name=Path(lora).name)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    return pipe, img2img


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


@torch.no_grad()
def generate(pipes, jobs: pd.DataFrame, prompts: list[str], guidance, gcfg: dict, variant: dict, size: int,
             negative: str, rescale: bool, out_dir: Path, lora_used: bool) -> None:
    """Run the pipeline over ``jobs`` in batches (one class at a time) and save PNGs to out_dir."""
    text2img, img2img = pipes
    tok, te = text2img.tokenizer, text2img.text_encoder
    device = text2img.unet.device
    cache: dict[str, torch.Tensor] = {}

    def embed(prompt):
        if prompt not in cache:
            cache[prompt] = encode_text(tok, te, [prompt], device)[0]
        return cache[prompt]

    neg = encode_text(tok, te, [negative], device)
    kwargs = {"num_inference_steps": gcfg["steps"], "guidance_scale": gcfg["cfg"], "output_type": "pil"}
    if lora_used:
        kwargs["cross_attention_kwargs"] = {"scale": gcfg["lora_scale"]}
    bs = gcfg["batch_size"]
    batches = []
    for _, group in jobs.groupby("label", sort=True):
        batches += [group.iloc[i : i + bs] for i in range(0, len(group), bs)]
    for batch in tqdm(batches, desc="generate", mininterval=10):
        hidden = torch.stack([embed(prompts[i]) for i in batch.index])
        g = None if guidance is None else guidance[list(batch.index)].to(device)
        hidden = inject_guidance(hidden, g, rescale)
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in batch.seed]
        common = dict(prompt_embeds=hidden.to(text2img.unet.dtype),
                      negative_prompt_embeds=neg.expand(len(batch), -1, -1).to(text2img.unet.dtype),
                      generator=gens, **kwargs)
        if variant["latent_prior"]:
            init = [load_rgb(p, size) for p in batch.source_path]
            images = img2img(image=init, strength=gcfg["strength"], **common).images
        else:
            images = text2img(height=size, width=size, **common).images
        for iid, im in zip(batch.image_id, images):
            im.save(out_dir / f"{iid}.png")


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--lora", default=None)
    p.add_argument("--index", required=True)
    p.add_argument("--captions", required=True)
    p.add_argument("--means", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--images-out", required=True)
    p.add_argument("--manifest", required=True)
    args = p.parse_args(argv)
    cfg = setup(args)
    ds, variant, gcfg = get_dataset(cfg, args.dataset), get_variant(cfg, args.variant), cfg["generate"]
    if args.scale < 1:
        raise ValueError(f"scale must be a positive integer, got {args.scale}")
    if (variant["lora"] is None) != (args.lora is None):
        raise ValueError(f"variant {args.variant!r} expects lora={variant['lora']!r}, got file {args.lora!r}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    pipes = make_pipelines(args.base, args.lora, device, dtype)
    index = pd.read_parquet(args.index)
    train = index[index.split == "train"].reset_index(drop=True)
    caps = pd.read_parquet(args.captions).set_index("image_id").caption
    jobs = plan(args.dataset, train, args.scale, gcfg["seed"] * 1000003 + args.seed)
    jobs["caption"] = [caps.get(i, "") if ds["use_captions"] else "" for i in jobs.source_image]
    jobs["prompt"] = [build_prompt(ds["prompt_template"], c, cap) for c, cap in zip(jobs.class_name, jobs.caption)]
    guidance = guidance_table(variant["guidance"], jobs.label, jobs.source_image, args.means, args.embeddings)
    with atomic_dir(args.images_out) as tmp:
        generate(pipes, jobs, list(jobs.prompt), guidance, gcfg, variant, ds["image_size"], ds["negative_prompt"],
                 cfg["image_encoder"]["rescale_to_token_norm"], tmp, args.lora is not None)
    jobs["guidance"] = variant["guidance"]
    jobs["lora_hash"] = file_hash(args.lora)
    jobs["shard"] = Path(args.images_out).name
    jobs["path"] = [str(Path(args.images_out) / f"{i}.png") for i in jobs.image_id]
    write_parquet(jobs[MANIFEST_COLUMNS], args.manifest)
    write_json(provenance(cfg, dataset=args.dataset, variant=args.variant, seed=args.seed, scale=args.scale,
                          lora=args.lora, lora_hash=file_hash(args.lora), n=len(jobs)), args.manifest + ".meta.json")


if __name__ == "__main__":
    run(main)
