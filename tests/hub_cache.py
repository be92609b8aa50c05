"""A Hugging Face hub cache in the real on-disk layout, built offline for the fetch tests:
``models--<org>--<name>/refs/main`` (the commit), ``blobs/<name>`` (LFS files named by their sha256,
other files by git's blob sha1) and ``snapshots/<commit>/<path>`` symlinks into the blobs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".pth")


def add_snapshot(cache: Path, repo: str, revision: str, files: dict[str, bytes]) -> Path:
    """Put ``files`` ({path in repo: content}) into ``cache`` as commit ``revision`` of ``repo``;
    return the snapshot folder."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(revision)
    (base / "blobs").mkdir(exist_ok=True)
    snap = base / "snapshots" / revision
    for rel, data in files.items():
        if rel.endswith(LFS_SUFFIXES):
            blob = hashlib.sha256(data).hexdigest()
        else:
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (base / "blobs" / blob).write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(base / "blobs" / blob, link.parent))
    return snap


def folder_files(folder: Path) -> dict[str, bytes]:
    """{relative path: content} of every file under a folder (e.g. a saved pipeline)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
