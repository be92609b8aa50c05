"""`make rehearsal`: every stage's entry point at paper-like counts, tiny images and tiny models.

A test at 150 images says nothing about 1.28 M. This runs each stage's real command line (the one
its rule runs) on an IN-100-shaped folder of tiny images and on IN-1K-10x-shaped tables, each at two
sizes 4x apart, every job under the memory its rule declares at IN-1K 10x (``Plan.resources``,
enforced by the kernel through ``RLIMIT_AS``), and records the peak resident memory of the job's
whole process tree (loader workers included) and its wall time:

* ``results/rehearsal/stages.csv``: ``stage, n_images, peak_rss_mb, declared_mem_mb, wall_s``;
  targets: peak <= declared for every row, peak at the larger size <= 1.3x the smaller;
* ``results/rehearsal/shuffle.csv``: the class mix of classifier batches streamed from synthetic
  shards (median over batches of the largest single-class share) for IN-10- and IN-1K-shaped 10x
  sets, against a fully shuffled loader and against the class-sorted shards of a naive writer;
* ``results/rehearsal/projection.csv``: each stage's memory and data-path time extrapolated
  linearly to its IN-1K 10x count (tiny models: model memory and GPU compute come on top; the
  cost model in ``realfake.plan`` adds them).

Tiny images (8 px files, resized to 16-32 px by the stages) keep the pixel work small; everything
that grows with the number of images (tables, file lists, shard plans, chunk bookkeeping, decode
fan-out) is at full count.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch
from PIL import Image

from ..atomic import write_parquet
from ..config import load_config, shard_count
from ..plan import Plan
from ..shards import ShardWriter, as_unit, chunk_rounds, stream_order, worker_units
from ..synthesis import MANIFEST_COLUMNS, set_order, shard_bounds
from ..tiny_models import build_tiny_blip2
from ..tiny_sd import TEXT_HIDDEN, build_tiny_pipeline, build_tokenizer

REPO = Path(__file__).resolve().parents[3]
PAPER_SCALE = {"index": 1_331_167, "caption": 1_281_167, "embed": 1_281_167, "finetune": 1_281_167,
               "generate": 12_811_670, "manifest": 12_811_670, "classify": 1_281_167, "quality": 50_000,
               "nearest": 1_281_167}  # each stage's count at IN-1K 10x (quality: 50 per class, the FID size)
DECLARED_AS = {"index": "index", "caption": "caption", "embed": "embed", "finetune": "finetune",
               "generate": "generate", "manifest": "merge", "classify": "classify", "quality": "quality",
               "nearest": "nearest", "loader": "classify"}
PAPER_SCALE["loader"] = 12_811_670 + 1_281_167  # real + synthetic rows of a real+syn 10x classifier
# The classifier's set-up over a 10x manifest: its training table and the stream loader's shard plan
# (no pixels: the rehearsal's shards are empty files beside full rows files).
LOADER_SETUP = """
import sys, pandas as pd
from realfake.classifier_data import StreamData
index = pd.read_parquet(sys.argv[1])
settings = type("Settings", (), {"shuffle_buffer": 2048, "streams": 16})()
data = StreamData(index[index.split == "train"], [sys.argv[2]], 224, 0, settings)
assert not data.dataset.keep, "a whole manifest must stream without key sets"
print(len(data), "rows,", len(data.dataset.shards), "shards")
"""


# ----------------------------------------------------------------------------- measuring
def declared_mem_mb(stage: str) -> int:
    """The memory the stage's rule declares for one process of an IN-1K 10x job
    (config/imagenet1k.yaml; a data-parallel job declares this per process)."""
    plan = Plan(load_config(REPO / "config" / "imagenet1k.yaml"))
    w = {"dataset": "imagenet1k", "scale": "10", "mix": "realsyn"}
    return plan.resources(DECLARED_AS[stage], w)["mem_mb"] // plan.gpus(DECLARED_AS[stage], w)


def measure(cmd: list[str], limit_mb: int, log: Path) -> tuple[float, float]:
    """Run ``cmd`` under an address-space limit of ``limit_mb``; return (peak memory of its process
    tree in MB, wall seconds). The tree's proportional set size (PSS: pages shared by forked loader
    workers counted once, as a Slurm cgroup counts them) is sampled every 50 ms; the kernel's own
    maximum RSS of the largest process is taken too, so a short spike of one process is not missed."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb * 2**20, limit_mb * 2**20))

    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "2"}
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=limit)
        peak, done = [0.0], threading.Event()

        def sample():
            p = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    tree = [p] + p.children(recursive=True)
                    peak[0] = max(peak[0], sum(q.memory_full_info().pss for q in tree) / 2**20)
                except psutil.Error:
                    pass
                time.sleep(0.05)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)  # reaps the child: Popen must not wait on it too
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        watcher.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed ({proc.returncode}) under {limit_mb} MB: see {log}\n"
                           + log.read_text()[-3000:])
    return max(peak[0], usage.ru_maxrss / 1024), wall


# ----------------------------------------------------------------------------- worlds
def tiny_png(value: tuple[int, int, int], rng: np.random.Generator) -> bytes:
    arr = np.clip(np.array(value, np.int16) + rng.integers(-30, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def image_folder(root: Path, classes: int, train_per_class: int, test_per_class: int, seed: int) -> Path:
    """An ImageFolder of 8 px PNGs (class colour plus noise)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 255, (classes, 3))
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            d = root / split / f"c{c:04d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{i:06d}.png").write_bytes(tiny_png(tuple(colours[c]), rng))
    return root


def synthetic_set(index: pd.DataFrame, out: Path, n_shards: int) -> Path:
    """A manifest and tar shards holding every training image of ``index`` once (its file bytes)."""
    train = index[index.split == "train"].reset_index(drop=True)
    rows = []
    for s, part in enumerate(np.array_split(np.arange(len(train)), n_shards)):
        keys = [f"k{i:07d}" for i in part]
        shard = out / f"{s:05d}.tar"
        w = ShardWriter(shard, [keys], "rehearsal")
        w.write_batch((k, Path(train.path[i]).read_bytes(), int(train.label[i])) for k, i in zip(keys, part))
        w.close()
        rows.append(pd.DataFrame({"image_id": keys, "label": train.label[part].to_numpy(),
                                  "class_name": train.class_name[part].to_numpy(), "source_image": train.image_id[part].to_numpy(),
                                  "shard": str(shard), "member": [f"{k}.png" for k in keys]}))
    manifest = out / "manifest.parquet"
    write_parquet(pd.concat(rows, ignore_index=True), manifest)
    return manifest


def shard_rows_files(out: Path, total: int, files: int, classes: int) -> list[Path]:
    """The per-shard rows files of an IN-1K-shaped set of ``total`` images (no pixels)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(files):
        lo, hi = s * total // files, (s + 1) * total // files
        n = np.arange(lo, hi)
        ids = pd.Series(n).map(lambda i: f"n{i % classes:08d}_{i // classes}")
        shard = out / f"{s:05d}.tar"
        shard.write_bytes(b"")
        df = pd.DataFrame({"image_id": ids + "_r0", "label": n % classes, "class_name": (n % classes).astype(str),
                           "source_image": "train/" + ids, "replica": n // (total // 10 or 1), "seed": n,
                           "prompt": "photo of a class, best quality", "caption": "", "guidance": "class_mean",
                           "lora_hash": "0123456789abcdef", "shard": str(shard), "member": ids + "_r0.jpg"})
        path = out / f"{s:05d}.parquet"
        df[MANIFEST_COLUMNS].to_parquet(path, index=False)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- shuffle
def max_class_share_median(labels_of_batches) -> float:
    return float(statistics.median(np.bincount(b).max() / len(b) for b in labels_of_batches))


def loader_batches(shard_labels: list[np.ndarray], streams: int, batch: int, buffer: int, seed: int,
                   max_batches: int) -> list[np.ndarray]:
    """The batches one process's stream loader yields over label-only shards (epoch 0), through the
    same ordering code as ``ShardDataset``: ``streams`` seeded streams (``stream_order``, each
    its ``worker_units`` of the shards) in rounds of ``STREAM_CHUNK`` (``chunk_rounds``)."""
    units = [str(i) for i in range(len(shard_labels))]

    def read(unit):
        name, part, parts = as_unit(unit)
        return shard_labels[int(name)][part::parts]

    order = {}
    for v in range(streams):
        mine = worker_units(units, v, streams)
        order[v] = stream_order([], mine, sum(len(read(u)) for u in mine), random.Random(f"{seed}|0|{v}"), buffer,
                                lambda u: iter(read(u)))
    out, buf = [], []
    for chunks in chunk_rounds(order):
        for _, items in chunks:
            for lab in items:
                buf.append(lab)
                if len(buf) == batch:
                    out.append(np.array(buf))
                    buf = []
                    if len(out) >= max_batches:
                        return out
    assert out, "no full batch"
    return out


def shuffle_rows(seed: int = 0, max_batches: int = 800) -> list[dict]:
    """Class mix of streamed batches for IN-10- and IN-1K-shaped 10x sets, with the paper configs'
    loader (16 streams, buffer 2048 each) and shard counts, as one process of a data-parallel classifier
    sees them: its share of the shards (every ``gpus``-th: the shards are of equal size, so this is
    the balanced split) and its batch_size / gpus rows per batch (128 of train.sh's 4 x 128)."""
    rows = []
    cfg = load_config(REPO / "config" / "paper.yaml")
    for name, dataset, classes, per_class in (("imagenet10_10x", "imagenet10", 10, 1300),
                                              ("imagenet1k_10x", "imagenet1k", 1000, 1281)):
        n_train, scale = classes * per_class, 10
        train_labels = np.repeat(np.arange(classes), per_class)
        c = cfg["classify"]
        gpus, batch = c["gpus"], c["batch_size"] // c["gpus"]
        n_shards = shard_count(cfg, dataset, scale)  # the generation plan's shards of that dataset's set
        order = set_order(name, n_train, scale, seed)
        shards = [train_labels[order[slice(*shard_bounds(len(order), n_shards, s))] % n_train]
                  for s in range(0, n_shards, gpus)]  # rank 0's shards
        ours = loader_batches(shards, c["streams"], batch, c["shuffle_buffer"], seed, max_batches)
        per = -(-classes // n_shards)  # a naive writer: classes in blocks, each shard class-sorted
        sorted_labels = np.sort(np.tile(train_labels, scale))
        naive = [sorted_labels[(sorted_labels >= s * per) & (sorted_labels < (s + 1) * per)] for s in range(n_shards)]
        naive = [s for s in naive if len(s)][::gpus]
        before = loader_batches(naive, c["streams"], batch, c["shuffle_buffer"], seed, max_batches)
        perm = np.random.default_rng(seed).permutation(len(order))
        every = np.tile(train_labels, scale)[perm[: max_batches * batch]]
        ref = [every[i : i + batch] for i in range(0, len(every), batch)]
        rows.append({"set": name, "images": n_train * scale, "shards": n_shards, "streams": c["streams"],
                     "gpus": gpus, "batch_size": batch, "shuffle_buffer": c["shuffle_buffer"],
                     "max_class_share_median": max_class_share_median(ours),
                     "shuffled_reference": max_class_share_median(ref),
                     "class_sorted_shards": max_class_share_median(before)})
    return rows


# ----------------------------------------------------------------------------- stages
def base_config(work: Path, blip: Path) -> dict:
    return load_config(REPO / "config" / "mini.yaml", overrides={
        "run_name": "rehearsal", "seeds": [0], "threads": 2,
        "models": {"blip2": str(blip)},
        "caption": {"batch_size": 64, "max_new_tokens": 4},
        "finetune": {"steps": 20, "batch_size": 8},
        "generate": {"steps": 2, "batch_size": 64, "classes_per_shard": 1, "image_format": "png"},
        "classify": {"arch": "smallcnn", "epochs": 1, "batch_size": 256, "loader": "stream", "num_workers": 2,
                     "shuffle_buffer": 1024, "image_size": 16},
        "quality": {"features": "clip", "filter": "none"},
        "variants": {"lp_vg": {"lora": None, "latent_prior": True, "guidance": "class_mean", "label": "LP+VG"}},
    })


def run_all(out: Path, work: Path, small: int, large: int, rows_small: int, rows_large: int,
            parts=("images", "rows"), say=print) -> pd.DataFrame:
    py = [sys.executable, "-m"]
    work.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    say("building tiny models")
    blip = build_tiny_blip2(work / "blip2")
    tok = build_tokenizer(work / "_tok")
    build_tiny_pipeline(tok, seed=0, image_size=32).save_pretrained(work / "pipe")
    cfg = base_config(work, blip)
    encoder = work / "encoder.pt"
    subprocess.run(py + ["realfake.embed", "init", "--cfg", json.dumps(cfg), "--checkpoint", str(encoder)], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts")})
    rows = []

    def record(stage, n, cmd):
        limit = declared_mem_mb(stage)
        peak, wall = measure(cmd, limit, logs / f"{stage}_{n}.log")
        rows.append({"stage": stage, "n_images": n, "peak_rss_mb": round(peak, 1), "declared_mem_mb": limit,
                     "wall_s": round(wall, 2)})
        say(f"  {stage:9s} n={n:>9,d}  peak {peak:8.1f} MB  (declared {limit} MB)  {wall:7.1f} s")

    classes = 100
    for n in (small, large) if "images" in parts else ():
        per_class = n // classes
        d = work / f"n{n}"
        say(f"IN-100-shaped folder: {classes} classes x {per_class} training images (8 px)")
        root = image_folder(d / "data", classes, per_class, 5, seed=n)
        ds = {"kind": "imagefolder", "root": str(root), "num_classes": classes, "image_size": 32,
              "train_per_class": None, "use_captions": False, "prompt_template": "a photo of {classname}"}
        c = json.loads(json.dumps(cfg))
        c["datasets"] = {"rh": {**cfg["datasets"]["mini"], **ds}}
        c["quality"]["max_per_class"] = max(2, per_class // 4)
        cj = json.dumps(c)
        common = ["--cfg", cj, "--threads", "2"]
        index = d / "real_index.parquet"
        record("index", n, py + ["realfake.prepare", "index", *common, "--dataset", "rh", "--out", str(index)])
        caps = d / "captions.parquet"
        record("caption", n, py + ["realfake.caption", "captions", *common, "--index", str(index), "--out", str(caps)])
        emb, means = d / "embeddings.pt", d / "class_means.pt"
        record("embed", n, py + ["realfake.embed", "embed", *common, "--checkpoint", str(encoder), "--index", str(index),
                                 "--embeddings", str(emb), "--means", str(means)])
        record("finetune", n, py + ["realfake.finetune", "train", *common, "--dataset", "rh", "--lora", "full",
                                    "--seed", "0", "--base", str(work / "pipe"), "--index", str(index),
                                    "--captions", str(caps), "--means", str(means), "--embeddings", str(emb),
                                    "--out", str(d / "lora.safetensors")])
        record("classify", n, py + ["realfake.classify", "train", *common, "--dataset", "rh", "--seed", "0",
                                    "--index", str(index), "--use-real", "--setting", "real",
                                    "--model-out", str(d / "model.pt"), "--metrics", str(d / "metrics.json")])
        manifest = synthetic_set(pd.read_parquet(index), d / "syn", 8)
        real_feats = d / "real_features.pt"
        quality = ["--dataset", "rh", "--index", str(index), "--encoder", str(encoder)]
        record("quality", c["quality"]["max_per_class"] * classes,
               py + ["realfake.quality", "real", *common, *quality, "--out", str(real_feats)])
        rows[-1]["stage"] = "quality_features"
        record("quality", c["quality"]["max_per_class"] * classes,
               py + ["realfake.quality", "set", *common, *quality, "--manifest", str(manifest),
                     "--real-features", str(real_feats), "--variant", "lp_vg", "--seed", "0", "--scale", "1",
                     "--which", "manifest", "--out", str(d / "quality.parquet")])
        record("nearest", n, py + ["realfake.nearest", "search", *common, "--index", str(index),
                                   "--manifest", str(manifest), "--out", str(d / "nearest.csv"),
                                   "--figure", str(d / "nearest.png")])
        shutil.rmtree(d / "data")
        shutil.rmtree(d / "syn")

    for total in (rows_small, rows_large) if "rows" in parts else ():
        d = work / f"rows{total}"
        classes, scale = 1000, 10
        n_train = total // scale
        say(f"IN-1K-shaped set: {n_train:,d} real images x {scale} = {total:,d} synthetic rows (no pixels)")
        d.mkdir(parents=True, exist_ok=True)
        src = image_folder(d / "src", 1, 100, 0, seed=1) / "train" / "c0000"
        files = sorted(str(p) for p in src.iterdir())
        i = np.arange(n_train)
        ids = pd.Series(i).map(lambda k: f"train/c{k % classes:04d}/{k // classes:06d}")
        index = pd.DataFrame({"image_id": ids, "split": "train", "label": i % classes,
                              "class_name": pd.Series(i % classes).map(lambda k: f"class {k}"),
                              "path": [files[k % len(files)] for k in i]})
        index.to_parquet(d / "real_index.parquet", index=False)
        index[["image_id", "label", "class_name"]].assign(caption="").to_parquet(d / "captions.parquet", index=False)
        torch.save({"means": {k: torch.randn(TEXT_HIDDEN) for k in range(classes)}}, d / "class_means.pt")
        torch.save({"image_id": [], "embedding": torch.zeros(0, TEXT_HIDDEN)}, d / "embeddings.pt")
        c = json.loads(json.dumps(cfg))
        c["datasets"] = {"rh": {**cfg["datasets"]["mini"], "kind": "imagefolder", "num_classes": classes,
                                "image_size": 32, "use_captions": False, "prompt_template": "a photo of {classname}"}}
        n_shards = 10_000  # classes_per_shard 1: 1,000 classes x 10
        record("generate", total, py + ["realfake.generate", "shard", "--cfg", json.dumps(c), "--threads", "2",
                                        "--dataset", "rh", "--variant", "lp_vg", "--seed", "0", "--scale", str(scale),
                                        "--shard", "0", "--shards", str(n_shards), "--base", str(work / "pipe"),
                                        "--index", str(d / "real_index.parquet"), "--captions", str(d / "captions.parquet"),
                                        "--means", str(d / "class_means.pt"), "--embeddings", str(d / "embeddings.pt"),
                                        "--shard-out", str(d / "gen" / "00000.tar"),
                                        "--rows-out", str(d / "gen" / "00000.parquet")])
        parts = shard_rows_files(d / "rows", total, 100, classes)
        record("manifest", total, py + ["realfake.generate", "merge", "--cfg", json.dumps(c), "--dataset", "rh",
                                        "--variant", "lp_vg", "--seed", "0", "--scale", str(scale),
                                        "--rows", *map(str, parts), "--manifest", str(d / "manifest.parquet")])
        record("loader", total + n_train, [sys.executable, "-c", LOADER_SETUP, str(d / "real_index.parquet"),
                                           str(d / "manifest.parquet")])
        shutil.rmtree(d)
    return pd.DataFrame(rows)


def projection(stages: pd.DataFrame) -> pd.DataFrame:
    """Each stage's peak memory and wall time extrapolated linearly (through its two sizes) to its
    count at IN-1K 10x."""
    out = []
    for stage, g in stages.groupby("stage", sort=False):
        g = g.sort_values("n_images")
        (n0, m0, t0), (n1, m1, t1) = g[["n_images", "peak_rss_mb", "wall_s"]].to_numpy()[[0, -1]]
        target = PAPER_SCALE.get(stage, PAPER_SCALE.get(stage.split("_")[0]))
        # a flat stage's small negative slope is sampling noise: it projects as flat, not shrinking
        slope_m, slope_t = max(0.0, (m1 - m0) / (n1 - n0)), max(0.0, (t1 - t0) / (n1 - n0))
        out.append({"stage": stage, "n_small": int(n0), "n_large": int(n1), "growth_peak": round(m1 / m0, 3),
                    "mb_per_1k_images": round(1000 * slope_m, 3), "n_paper": target,
                    "projected_peak_mb": round(m1 + slope_m * (target - n1), 0),
                    "projected_data_path_h": round((t1 + slope_t * (target - n1)) / 3600, 2),
                    "declared_mem_mb": int(g.declared_mem_mb.max())})
    return pd.DataFrame(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/rehearsal")
    p.add_argument("--work", default=None, help="scratch folder (default: <out>/work, removed at the end)")
    p.add_argument("--small", type=int, default=25_000, help="training images of the smaller image-stage run")
    p.add_argument("--large", type=int, default=100_000, help="training images of the larger image-stage run")
    p.add_argument("--rows-small", type=int, default=3_200_000, help="synthetic rows of the smaller table run")
    p.add_argument("--rows-large", type=int, default=12_800_000, help="synthetic rows of the larger table run")
    p.add_argument("--shuffle-batches", type=int, default=800)
    p.add_argument("--parts", nargs="+", default=["shuffle", "images", "rows"],
                   choices=["shuffle", "images", "rows"],
                   help="what to run; the stages of parts not run are kept from an existing stages.csv")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "work"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    if "shuffle" in args.parts:
        shuffle = pd.DataFrame(shuffle_rows(max_batches=args.shuffle_batches))
        shuffle.to_csv(out / "shuffle.csv", index=False)
        print(shuffle.to_string(index=False))
    stages = run_all(out, work, args.small, args.large, args.rows_small, args.rows_large, args.parts)
    row_stages = {"generate", "manifest", "loader"}
    if set(args.parts) != {"shuffle", "images", "rows"} and (out / "stages.csv").is_file():
        old = pd.read_csv(out / "stages.csv")
        rerun = row_stages if "rows" in args.parts else set()
        rerun |= set(old.stage) - row_stages if "images" in args.parts else set()
        stages = pd.concat([old[~old.stage.isin(rerun)], stages], ignore_index=True)
    if stages.empty:  # --parts shuffle alone, nothing measured before
        shutil.rmtree(work, ignore_errors=True)
        print(f"rehearsal took {time.perf_counter() - t0:.0f} s (the shuffle part only)")
        return
    stages.to_csv(out / "stages.csv", index=False)
    proj = projection(stages)
    proj.to_csv(out / "projection.csv", index=False)
    shutil.rmtree(work, ignore_errors=True)
    print(proj.to_string(index=False))
    over = stages[stages.peak_rss_mb > stages.declared_mem_mb]
    grew = proj[proj.growth_peak > 1.3]
    print(f"rehearsal took {time.perf_counter() - t0:.0f} s; stages over their declared memory: "
          f"{list(over.stage) or 'none'}; peak grew more than 1.3x: {list(grew.stage) or 'none'}")


if __name__ == "__main__":
    main()
