"""Stage `finetune`: LoRA fine-tuning of the UNet with the distribution-matching loss and the
visual-guidance token (paper Sec. 3.1-3.2, Tab. 7) -> lora.safetensors (diffusers format).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from . import checkpoint, distributed
from .atomic import atomic_path, write_json
from .cli import Command, loader_workers, run
from .config import config_hash
from .data import captions_for, lora_training_rows, read_table
from .distributed import World
from .lora import TrainImages, frozen_half, preview_images, preview_rows, save_lora, train_lora
from .method import build_prompt, guidance_table
from .models import load_pipeline
from .provenance import provenance
from .settings import Dataset, Finetune, ImageEncoder, Lora

log = logging.getLogger(__name__)


def train_main(args, cfg: dict) -> None:
    ds, lora, f = Dataset.of(cfg, args.dataset), Lora.of(cfg, args.lora), Finetune.of(cfg, args.dataset)
    world = distributed.init(f.gpus, "finetune.gpus")
    try:
        train_on(args, cfg, ds, lora, f, world)
    finally:
        distributed.shutdown(world)


def train_on(args, cfg: dict, ds: Dataset, lora: Lora, f: Finetune, world: World) -> None:
    pipe = load_pipeline(args.base, device=world.device())
    frozen_half(pipe, f)
    index = read_table(args.index, "index")
    train = lora_training_rows(index[index.split == "train"].reset_index(drop=True), f.train_fraction, args.seed)
    log.info("fine-tuning on %d real training images (finetune.train_fraction %s)", len(train), f.train_fraction)
    template = ds.finetune_prompt_template or ds.prompt_template
    caps = captions_for(args.captions, list(train.image_id), ds.use_captions)
    prompts = [build_prompt(template, c, cap) for c, cap in zip(train.class_name, caps)]
    images = TrainImages(list(train.path), ds.image_size, f.crop)
    guidance = guidance_table(lora.guidance, train.label, train.image_id, args.means, args.embeddings)
    seed = args.seed  # same seed for every LoRA kind: the ablation compares like with like
    ckpt = args.out + ".ckpt"
    fingerprint = {"cfg": cfg, "lora": args.lora, "seed": seed, "base": args.base, "n_train": len(train),
                   "train_ids_hash": config_hash(list(train.image_id))}
    rescale = ImageEncoder.of(cfg).rescale_to_token_norm
    shown = preview_rows(train.label)

    def preview(step: int) -> None:  # previews/step<N>.png beside the LoRA (finetune.preview_every)
        grid = preview_images(pipe, [prompts[i] for i in shown], None if guidance is None else guidance[shown],
                              rescale, ds.image_size, ds.negative_prompt, seed)
        out = Path(args.out).parent / "previews" / f"step{step:07d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            grid.save(tmp, format="PNG")
        log.info("preview of step %d: %s", step, out)

    history = train_lora(pipe, images, prompts, guidance, f, lora.dm_weight, seed, rescale, ckpt, fingerprint,
                         workers=loader_workers(args, cfg, world.size), world=world, segments=args.segments,
                         preview=preview)
    if not world.main:
        return
    save_lora(pipe.unet, args.out)
    with atomic_path(args.out + ".loss.csv") as tmp:  # the loss curve, one row per optimiser step
        pd.DataFrame(history, columns=["loss", "min_snr", "dm"]).rename_axis("step").to_csv(tmp)
    checkpoint.remove(ckpt)
    write_json(provenance(cfg, dataset=args.dataset, lora=args.lora, seed=seed, base=args.base,
                          final_loss=history[-1], first_loss=history[0]), args.out + ".meta.json")


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("train", "fine-tune one LoRA", train_main)
    p.add_argument("--dataset", required=True)
    p.add_argument("--lora", required=True, help="name under config key loras")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--base", required=True, help="base pipeline folder")
    p.add_argument("--index", required=True)
    p.add_argument("--captions", required=True)
    p.add_argument("--means", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True, help="lora.safetensors to write")
    p.add_argument("--segments", type=int, default=1, help="jobs the run is split into (max_job_minutes)")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
