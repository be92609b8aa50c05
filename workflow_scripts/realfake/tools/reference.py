"""The config reference, generated from ``config/schema.yaml``: every key with its type, default
and description, as Markdown. ``python -m realfake.tools.reference > docs/config.md``; a test keeps the
committed page equal to this output."""

from __future__ import annotations

import json
import sys

from ..config import load_schema


def _type(node: dict) -> str:
    if "anyOf" in node:  # e.g. an integer or the word auto
        return " or ".join(f"`{json.dumps(n['const'])}`" if "const" in n else _type(n) for n in node["anyOf"])
    t = node.get("type", "any")
    return " or ".join(t) if isinstance(t, list) else str(t)


def _default(node: dict) -> str:
    if "default" not in node:
        return "(required)"
    return "`" + json.dumps(node["default"]) + "`"


def _text(node: dict) -> str:
    return " ".join(str(node.get("description", "")).split()).replace("|", "\\|")


def _rows(prefix: str, node: dict):
    props = node.get("properties")
    extra = node.get("additionalProperties")
    if props:
        for key, sub in props.items():
            yield f"{prefix}{key}", sub
            if isinstance(sub, dict) and (sub.get("properties") or isinstance(sub.get("additionalProperties"), dict)):
                yield from _rows(f"{prefix}{key}.", sub)
    elif isinstance(extra, dict):
        if extra.get("properties"):
            yield from _rows(f"{prefix}<name>.", extra)


def reference() -> str:
    schema = load_schema()
    out = ["# Config reference\n",
           "Generated from `config/schema.yaml` by `python -m realfake.tools.reference` (a test keeps this page",
           "equal to its output). Keys are dotted paths; `<name>` stands for a dataset, LoRA or variant",
           "name you choose. Defaults apply to every key left out.\n",
           "## Configs as overlays\n",
           "A config file may name base files under the top-level key `extends:` (a file name or a list,",
           "relative to the file). The bases are merged first, left to right, and the file's own keys go",
           "on top; a base may extend others. Mappings merge key by key; lists and values replace. Several",
           "`--configfile` files merge left to right in the same way, then `--config` on top.\n",
           "The paper configs use this. `config/paper_recipe.yaml` holds the model pins and every shared",
           "hyperparameter, and `dataset_defaults` holds each family's prompts. Each dataset config",
           "(`config/imagenet10.yaml`, `config/cub.yaml`, ...) extends it and holds only its data and what",
           "differs. `config/paper.yaml` extends all the dataset configs. To change the recipe for every",
           "dataset, edit `paper_recipe.yaml`; to change one dataset, edit its file; for your own run,",
           "write a file with `extends: imagenet10.yaml` and the keys you change.\n"]
    for section, node in schema["properties"].items():
        out.append(f"## `{section}`\n")
        if node.get("description"):
            out.append(_text(node) + "\n")
        rows = list(_rows(f"{section}.", node))
        if not rows:
            out.append(f"Type: {_type(node)}; default: {_default(node)}.\n")
            continue
        out.append("| key | type | default | what |")
        out.append("|---|---|---|---|")
        for key, sub in rows:
            out.append(f"| `{key}` | {_type(sub)} | {_default(sub)} | {_text(sub)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(reference())


if __name__ == "__main__":
    main()
