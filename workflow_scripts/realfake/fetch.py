"""Stage `fetch`: a model the config gives as a pinned download -> ``results/models/<name>/`` and
``results/models/<name>.manifest.json`` (every file's sha256 and size; the jobs that load the model
depend on the manifest).

- ``{hub: <org/name>, revision: <40-hex commit>, files: [patterns], file: <path>, sha256: {path: hex}}``:
  ``huggingface_hub.snapshot_download`` of that commit, only the files matching ``files`` (e.g. SD
  1.5's safetensors, not its 7 GB checkpoints), through the user's hub cache (``HF_HUB_CACHE``;
  ``HF_HUB_OFFLINE=1`` uses the cache alone). Every file is hashed; a file the hub stores in LFS
  must hash to its blob's name (the hub's own sha256), and to ``sha256`` where the config pins it.
  ``file`` names the one file a stage loads (an open_clip or timm checkpoint).
- ``{url: <URL>, sha256: <64-hex>}``: one file (SSCD's TorchScript, torchvision weights), its
  sha256 checked; with ``sha256: null`` the manifest records the hash to pin.

The folder is written beside its final place and renamed when complete; files are hard-linked from
the hub cache where it is on the same filesystem, else copied.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
from pathlib import Path

from .atomic import atomic_dir, write_json
from .cli import Command, run
from .config import HEX64, url_file_name
from .errors import ConfigError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: copy
        shutil.copyfile(src, dst)


def fetch_hub(spec: dict, dest: Path, key: str) -> dict:
    """The pinned snapshot's files into ``dest``; {path: {sha256, bytes}}."""
    from huggingface_hub import snapshot_download

    repo, rev = spec["hub"], spec["revision"]
    try:
        snap = Path(snapshot_download(repo_id=repo, revision=rev, allow_patterns=spec.get("files")))
    except Exception as exc:  # RepositoryNotFound, RevisionNotFound, LocalEntryNotFound (offline), HTTP errors
        cached = sorted(p.name for p in _cache_snapshots(repo))
        have = f"; the hub cache holds revisions {', '.join(cached)}" if cached else ""
        raise ValueError(f"config key {key}: cannot fetch {repo} at revision {rev} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}){have}") from None
    from huggingface_hub.utils import filter_repo_objects

    pinned = spec.get("sha256") or {}
    files = {}
    present = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    for rel in filter_repo_objects(present, allow_patterns=spec.get("files")):  # a cached snapshot may hold more
        f = snap / rel
        digest, blob = sha256_of(f), f.resolve().name
        if HEX64.fullmatch(blob) and blob != digest:  # an LFS file's blob is named by its sha256
            raise ValueError(f"{repo}@{rev}: {rel} hashes to {digest} but the hub stores it as {blob}: the cache is "
                             "corrupt; delete that blob and fetch again")
        if rel in pinned and pinned[rel] != digest:
            raise ValueError(f"config key {key}.sha256: {repo}@{rev} {rel} has sha256 {digest}, the config pins "
                             f"{pinned[rel]}")
        _place(f.resolve(), dest / rel)
        files[rel] = {"sha256": digest, "bytes": f.stat().st_size}
    missing = sorted(set(pinned) - set(files)) + ([spec["file"]] if spec.get("file") and spec["file"] not in files else [])
    if missing or not files:
        raise ValueError(f"config key {key}: {repo}@{rev} has no file {missing[0] if missing else 'matching files'} "
                         f"(fetched: {', '.join(list(files)[:8]) or 'nothing'}; check files/file)")
    return files


def _cache_snapshots(repo: str) -> list[Path]:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover
        return []
    folder = Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots"
    return list(folder.iterdir()) if folder.is_dir() else []


def fetch_url(spec: dict, dest: Path, key: str) -> dict:
    """One file from ``spec['url']`` into ``dest``, its sha256 checked; {name: {sha256, bytes}}."""
    url, name = spec["url"], url_file_name(spec["url"])
    h, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(dest / name, "wb") as out:
            while block := r.read(CHUNK):
                h.update(block)
                out.write(block)
                size += len(block)
    except OSError as exc:
        raise ValueError(f"config key {key}.url: cannot download {url} ({exc})") from None
    digest = h.hexdigest()
    if spec.get("sha256") and spec["sha256"] != digest:
        raise ValueError(f"config key {key}.sha256: {url} has sha256 {digest}, the config pins {spec['sha256']}")
    if not spec.get("sha256"):
        log.warning("%s is not pinned: set config key %s.sha256: %s", url, key, digest)
    return {name: {"sha256": digest, "bytes": size}}


def model_main(args, cfg: dict) -> None:
    key = f"models.{args.name}"
    spec = cfg["models"].get(args.name)
    if not isinstance(spec, dict):
        raise ConfigError(f"config key {key} is {spec!r}: not a download ({{hub, revision}} or {{url, sha256}})")
    with atomic_dir(args.folder) as tmp:
        files = fetch_hub(spec, tmp, key) if "hub" in spec else fetch_url(spec, tmp, key)
    log.info("%s: %d files, %.1f MB in %s", key, len(files), sum(f["bytes"] for f in files.values()) / 1e6,
             args.folder)
    write_json({"model": args.name, "source": spec, "files": files}, args.manifest)


def main(argv=None) -> None:
    cmd = Command(__doc__)
    p = cmd.action("model", "download one pinned model and write its manifest", model_main)
    p.add_argument("--name", required=True, help="the model's key under config models")
    p.add_argument("--folder", required=True, help="results/models/<name>")
    p.add_argument("--manifest", required=True, help="results/models/<name>.manifest.json")
    cmd.main(argv)


if __name__ == "__main__":
    run(main)
