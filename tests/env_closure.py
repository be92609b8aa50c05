"""A Python per conda env file that can import exactly what that env would install.

Conda channels are unreachable here, so ``envs/*.yaml`` cannot be solved. What can be checked is the
part that breaks rules: whether each rule's command finds its imports in its env. For each env file
this builds a site folder holding only the pip dependency closure of the file's pins (requirements
read from the installed distributions' metadata, markers evaluated for this platform), linked from
the venv's site-packages, and a ``python`` wrapper that runs the venv's interpreter with ``-S`` (no
site-packages) and that folder first on ``sys.path``. Anything outside the closure is unimportable.
"""

from __future__ import annotations

import os
import re
import site
import stat
import sys
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def env_requirements(env_file: Path) -> list[Requirement]:
    """The pip requirements of a conda env file (python and pip themselves excluded)."""
    env = yaml.safe_load(env_file.read_text())
    reqs = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            reqs += [Requirement(r) for r in dep.get("pip", [])]
    return reqs


def closure(reqs: list[Requirement]) -> dict[str, metadata.Distribution]:
    """Installed distributions the requirements pull in, transitively (extras followed only where a
    requirement names them). A required distribution that is not installed is an error."""
    out: dict[str, metadata.Distribution] = {}
    todo = [(r, set(r.extras)) for r in reqs]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{req} is required but not installed in {sys.prefix}") from None
        if name in out and not extras:
            continue
        out[name] = dist
        for spec in dist.requires or []:
            sub = Requirement(spec)
            wanted = [""] + sorted(extras)
            if sub.marker and not any(sub.marker.evaluate({"extra": e}) for e in wanted):
                continue
            todo.append((sub, set(sub.extras)))
    return out


def _site_packages() -> Path:
    return Path(next(p for p in site.getsitepackages() if p.endswith("site-packages")))


def build(env_file: Path, root: Path) -> Path:
    """Build the closure site folder and python wrapper of ``env_file`` under ``root``; return the
    wrapper's bin folder (put it first on PATH and ``python`` is the env's)."""
    reqs = env_requirements(env_file)
    for req in reqs:  # the pins must be what is installed, or the closure proves nothing
        have = metadata.version(req.name)
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            raise RuntimeError(f"{env_file}: {req} but {req.name} {have} is installed")
    dists = closure(reqs)
    sp = _site_packages()
    lib, bin_dir = root / "site", root / "bin"
    lib.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for dist in dists.values():
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            src, dst = sp / top, lib / top
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
    wrapper = bin_dir / "python"
    wrapper.write_text("#!/bin/sh\n"
                       f'PYTHONPATH="{lib}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def rule_commands() -> list[tuple[str, str, str, str]]:
    """(rule, env file name, module, action) of every rule that runs ``python -m realfake.<module>``
    (directly or through its launcher, which is ``python`` or torchrun's module)."""
    out = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for body in re.split(r"\nrule ", smk.read_text())[1:]:
            name = body.split(":")[0]
            env = re.search(r'"\.\./envs/([a-z_]+\.yaml)"', body)
            cmd = re.search(r"python -m realfake\.(\w+) (\w+)", body)
            launched = re.search(r'launch=launcher\("(\w+)"\)', body), re.search(r"\{params\.launch\} (\w+)", body)
            if env and cmd:
                out.append((name, env.group(1), cmd.group(1), cmd.group(2)))
            elif env and all(launched):  # python -m realfake.<stage>, or torchrun starting it
                out.append((name, env.group(1), launched[0].group(1), launched[1].group(1)))
    return out


def env_without_site() -> dict:
    """The process environment minus anything that would put the venv's packages back on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(REPO / "workflow_scripts")
    return env

