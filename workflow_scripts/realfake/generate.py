"""Stage `generate`: synthetic training images (paper Sec. 3.3, Tab. 6).

Latent prior = img2img from a real training image (strength 0.75); otherwise text-to-image.
UniPC, CFG, LoRA scale from config; the guidance token goes in through ``prompt_embeds``.
Every image has its own seed derived from (dataset, source image, replica, replicate seed), so
any shard can be regenerated alone and gives the same bytes. One job writes one tar shard (a chunk
of classes, ``generate.classes_per_shard``) and resumes it after a crash (see shards.py); ``merge``
concatenates the shards' rows into the set's manifest.parquet.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from .atomic import write_json, write_parquet
from .cli import fault_hook, parser, provenance, run, setup
from .config import get_dataset, get_variant, shard_count, shard_of
from .data import load_rgb
from .finetune import guidance_table
from .method import build_prompt, encode_text, inject_guidance
from .models import load_pipeline
from .shards import ShardWriter, member_names

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
def generate(pipes, batches: list[pd.DataFrame], prompts: dict, guidance, gcfg: dict, variant: dict, size: int,
             negative: str, rescale: bool, writer: ShardWriter, lora_used: bool) -> None:
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
    kwargs = {"num_inference_steps": gcfg["steps"], "guidance_scale": gcfg["cfg"], "output_type": "pil"}
    if lora_used:
        kwargs["cross_attention_kwargs"] = {"scale": gcfg["lora_scale"]}
    done = writer.done_batches
    for step, batch in enumerate(tqdm(batches[done:], desc="generate", mininterval=10), start=done + 1):
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
        writer.write_batch((k, encode_image(im, gcfg["image_format"], gcfg["jpeg_quality"]), lab)
                           for k, im, lab in zip(batch.key, images, batch.label))
        fault_hook("generate", step)


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--shard", type=int, required=True, help="shard number (classes shard*classes_per_shard ...)")
    p.add_argument("--base", required=True)
    p.add_argument("--lora", default=None)
    p.add_argument("--index", required=True)
    p.add_argument("--captions", required=True)
    p.add_argument("--means", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--shard-out", required=True, help="the shard's .tar")
    p.add_argument("--rows-out", required=True, help="the shard's manifest rows (.parquet)")
    args = p.parse_args(argv)
    cfg = setup(args)
    ds, variant, gcfg = get_dataset(cfg, args.dataset), get_variant(cfg, args.variant), cfg["generate"]
    if args.scale < 1:
        raise ValueError(f"scale must be a positive integer, got {args.scale}")
    if (variant["lora"] is None) != (args.lora is None):
        raise ValueError(f"variant {args.variant!r} expects lora={variant['lora']!r}, got file {args.lora!r}")
    n_shards = shard_count(cfg, args.dataset)
    if not 0 <= args.shard < n_shards:
        raise ValueError(f"shard {args.shard} out of range: dataset {args.dataset} has {n_shards} shards")
    index = pd.read_parquet(args.index)
    train = index[index.split == "train"].reset_index(drop=True)
    caps = pd.read_parquet(args.captions).set_index("image_id").caption
    jobs = plan(args.dataset, train, args.scale, gcfg["seed"] * 1000003 + args.seed)
    jobs = jobs[[shard_of(lab, gcfg["classes_per_shard"]) == args.shard for lab in jobs.label]]
    jobs = jobs.reset_index(drop=True)
    jobs["key"] = [shard_key(i) for i in jobs.image_id]
    use_captions = ds["use_captions"] if variant["captions"] is None else variant["captions"]
    jobs["caption"] = [caps.get(i, "") if use_captions else "" for i in jobs.source_image]
    jobs["prompt"] = [build_prompt(ds["prompt_template"], c, cap) for c, cap in zip(jobs.class_name, jobs.caption)]
    guidance = guidance_table(variant["guidance"], jobs.label, jobs.source_image, args.means, args.embeddings)
    lora_hash = file_hash(args.lora)
    batches = batches_of(jobs, gcfg["batch_size"])
    fingerprint = {"cfg": cfg, "args": {k: v for k, v in vars(args).items() if k not in ("log", "threads")},
                   "lora_hash": lora_hash, "keys": list(jobs.key)}
    writer = ShardWriter(args.shard_out, [list(b.key) for b in batches], fingerprint, fmt=gcfg["image_format"])
    log.info("shard %d/%d: %d images in %d batches (%d done before)", args.shard, n_shards, len(jobs),
             len(batches), writer.done_batches)
    if writer.pending:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        pipes = make_pipelines(args.base, args.lora, device, dtype, gcfg["torch_compile"])
        generate(pipes, batches, dict(zip(jobs.index, jobs.prompt)), guidance, gcfg, variant, ds["image_size"],
                 ds["negative_prompt"], cfg["image_encoder"]["rescale_to_token_norm"], writer, args.lora is not None)
    writer.close()
    jobs["guidance"] = variant["guidance"]
    jobs["lora_hash"] = lora_hash
    jobs["shard"] = args.shard_out
    jobs["member"] = [member_names(k, gcfg["image_format"])[0] for k in jobs.key]
    write_parquet(jobs[MANIFEST_COLUMNS], args.rows_out)


def shard_key(image_id: str) -> str:
    """Tar member stem of a synthetic image: the image id with '/' and '.' made safe."""
    key = image_id.replace("/", "_").replace(".", "_")
    if len(key) > 90:
        key = key[:70] + "_" + hashlib.sha256(image_id.encode()).hexdigest()[:16]
    return key


def merge(argv=None) -> None:
    """Concatenate the shards' rows into manifest.parquet, checking every shard is there."""
    p = parser("Merge shard rows into one manifest.")
    p.add_argument("--rows", nargs="+", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--scale", type=int, required=True)
    args = p.parse_args(argv)
    cfg = setup(args)
    parts = []
    for rows in args.rows:
        df = pd.read_parquet(rows)
        for shard in df.shard.unique():
            if not Path(shard).is_file():
                raise FileNotFoundError(f"shard {shard} listed in {rows} is missing")
        parts.append(df)
    man = pd.concat(parts, ignore_index=True)
    if man.image_id.duplicated().any():
        raise ValueError(f"duplicate image ids across shards, e.g. {man.image_id[man.image_id.duplicated()].iloc[0]}")
    write_parquet(man, args.manifest)
    write_json(provenance(cfg, dataset=args.dataset, variant=args.variant, seed=args.seed, scale=args.scale,
                          shards=sorted(man.shard.unique()), lora_hash=sorted(man.lora_hash.unique()), n=len(man)),
               args.manifest + ".meta.json")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "merge":
        run(lambda: merge(sys.argv[2:]))
    else:
        run(main)
