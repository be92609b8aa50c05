"""Stage `generate`: synthetic training images (paper Sec. 3.3, Tab. 6).

Latent prior = img2img from a real training image (strength 0.75); otherwise text-to-image.
UniPC, CFG, LoRA scale from config; the guidance token goes in through ``prompt_embeds``.
Every image has its own seed derived from (dataset, source image, replica, replicate seed), so
any shard can be regenerated alone and gives the same bytes. One job writes one tar shard (a chunk
run of the set's seeded global order, see ``synthesis.plan``) and resumes it after a crash (see
shards.py); ``merge`` streams the shards' rows into the set's manifest.parquet.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .atomic import atomic_path, write_json, write_parquet
from .cli import Command, job_cpus, run
from .data import captions_for, read_table
from .method import build_prompt, guidance_table
from .provenance import provenance
from .settings import Dataset, Generate, ImageEncoder, Variant
from .shards import ShardWriter, member_names, shard_key
from .synthesis import MANIFEST_COLUMNS, batches_of, file_hash, generate, pipelines_for, plan

log = logging.getLogger(__name__)


def shard_main(args, cfg: dict) -> None:
    ds, variant, g = Dataset.of(cfg, args.dataset), Variant.of(cfg, args.variant), Generate.of(cfg)
    if args.scale < 1:
        raise ValueError(f"scale must be a positive integer, got {args.scale}")
    if (variant.lora is None) != (args.lora is None):
        raise ValueError(f"variant {args.variant!r} expects lora={variant.lora!r}, got file {args.lora!r}")
    n_shards = args.shards
    if not 0 <= args.shard < n_shards:
        raise ValueError(f"shard {args.shard} out of range: dataset {args.dataset} has {n_shards} shards")
    index = read_table(args.index, "index")
    train = index[index.split == "train"].reset_index(drop=True)
    jobs = plan(args.dataset, train, args.scale, g.seed * 1000003 + args.seed, args.shard, n_shards)
    jobs["key"] = [shard_key(i) for i in jobs.image_id]
    use_captions = ds.use_captions if variant.captions is None else variant.captions
    jobs["caption"] = captions_for(args.captions, list(jobs.source_image), use_captions)
    template = variant.prompt_template or ds.prompt_template
    jobs["prompt"] = [build_prompt(template, c, cap) for c, cap in zip(jobs.class_name, jobs.caption)]
    guidance = guidance_table(variant.guidance, jobs.label, jobs.source_image, args.means, args.embeddings)
    lora_hash = file_hash(args.lora)
    batches = batches_of(jobs, g.batch_size)
    # the same keys as before the CLI had subcommands, so partial shards written then still resume
    fingerprint = {"cfg": cfg, "args": {k: v for k, v in vars(args).items() if k not in ("log", "threads", "action")},
                   "lora_hash": lora_hash, "keys": list(jobs.key)}
    writer = ShardWriter(args.shard_out, [list(b.key) for b in batches], fingerprint, fmt=g.image_format)
    log.info("shard %d/%d: %d images in %d batches (%d done before)", args.shard, n_shards, len(jobs),
             len(batches), writer.done_batches)
    if writer.pending:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        pipes = pipelines_for(args.base, args.lora, device, dtype, g)
        generate(pipes, batches, dict(zip(jobs.index, jobs.prompt)), guidance, g, variant.latent_prior,
                 ds.image_size, ds.negative_prompt, ImageEncoder.of(cfg).rescale_to_token_norm, writer,
                 args.lora is not None, io_threads=job_cpus(args, cfg))
    writer.close()
    jobs["guidance"] = variant.guidance
    jobs["lora_hash"] = lora_hash
    jobs["shard"] = args.shard_out
    jobs["member"] = [member_names(k, g.image_format)[0] for k in jobs.key]
    write_parquet(jobs[MANIFEST_COLUMNS], args.rows_out)


def merge_main(args, cfg: dict) -> None:
    """Stream the shards' rows into manifest.parquet, one shard's rows in memory at a time; checks
    that every shard is there and that no image id repeats (64-bit hashes: 100 MB at 12.8 M rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pa.set_memory_pool(pa.system_memory_pool())  # freed shard tables go back to the OS (jemalloc keeps them)
    hashes, shards, lora_hashes, schema = [], [], set(), None
    with atomic_path(args.manifest) as tmp:
        writer = None
        for rows in args.rows:
            table = pq.read_table(rows)
            for shard in pc.unique(table.column("shard")).to_pylist():
                if not Path(shard).is_file():
                    raise FileNotFoundError(f"shard {shard} listed in {rows} is missing")
                shards.append(shard)
            if schema is None:
                schema = table.schema
                writer = pq.ParquetWriter(tmp, schema)
            elif not table.schema.equals(schema):
                raise ValueError(f"{rows} has other columns than {args.rows[0]}: {table.schema.names}")
            ids = table.column("image_id").to_pandas()
            hashes.append(pd.util.hash_pandas_object(ids, index=False).to_numpy())
            lora_hashes.update(pc.unique(table.column("lora_hash")).to_pylist())
            writer.write_table(table)
            del table, ids
        writer.close()
        every = np.sort(np.concatenate(hashes))
        if len(every) > 1 and (every[1:] == every[:-1]).any():
            raise ValueError(f"duplicate image ids across the shards of {args.manifest}")
    write_json(provenance(cfg, dataset=args.dataset, variant=args.variant, seed=args.seed, scale=args.scale,
                          shards=sorted(shards), lora_hash=sorted(lora_hashes), n=len(every)),
               args.manifest + ".meta.json")


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("shard", "generate one tar shard of a synthetic set", shard_main)
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--shard", type=int, required=True, help="shard number (a run of the set's seeded order)")
    p.add_argument("--shards", type=int, required=True, help="shards of the set (the plan's shard_count)")
    p.add_argument("--base", required=True)
    p.add_argument("--lora", default=None)
    p.add_argument("--index", required=True)
    p.add_argument("--captions", required=True)
    p.add_argument("--means", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--shard-out", required=True, help="the shard's .tar")
    p.add_argument("--rows-out", required=True, help="the shard's manifest rows (.parquet)")
    p = cmd.action("merge", "merge the shards' rows into the set's manifest.parquet", merge_main)
    p.add_argument("--rows", nargs="+", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--scale", type=int, required=True)
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
