"""Load, default-fill and validate the workflow configuration.

The JSON Schema in ``config/schema.yaml`` is the single source of truth: every key has a
description and a default, and unknown keys are errors. Errors name the offending key
as a dotted path (``finetune.lr``) so a user can find it in their YAML.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import string
from pathlib import Path

import jsonschema
import yaml

from .classlists import read_classlist
from .errors import ConfigError
from .paths import MODELS

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
# A dataset name becomes a folder under results/ and a wildcard value: letters, digits, _ and -,
# starting with a letter, and none of the folders results/ holds for other things.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED_NAMES = {"synthetic", "tables", "figures", "logs", "benchmarks", "bench", "rehearsal", "plan",
                  "base_model", "image_encoder", "models"}
PROMPT_FIELDS = {"classname", "caption"}


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last one, so a
    second ``classify:`` section would silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}): the second would silently replace the first",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        raise ConfigError(f"config file {path} is empty or holds only comments: give at least one key (an empty "
                          "file would otherwise run the defaults silently)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


EXTENDS = "extends"  # a config file's base files (paths relative to it), merged beneath it


def read_config_file(path: str | Path, _chain: tuple = ()) -> dict:
    """One config file with the files its ``extends:`` names merged beneath it, left to right
    (each base may extend others; a file that extends itself, directly or not, is an error)."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"config key {EXTENDS} in {_chain[-1]}: the files extend each other ({cycle})")
    data = read_yaml(path)
    bases = data.pop(EXTENDS, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"config key {EXTENDS} in {path}: a file name or a list of file names (relative to "
                          f"{path.parent}), got {bases!r}")
    merged: dict = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"config key {EXTENDS} in {path}: base file {base_path} not found")
        merged = deep_merge(merged, read_config_file(base_path, (*_chain, path)))
    return deep_merge(merged, data)


def read_config_files(paths, overrides: dict | None = None) -> dict:
    """Config files merged left to right, each with its bases (``extends:``) beneath it, then
    ``overrides`` (Snakemake's ``--config``) on top."""
    merged: dict = {}
    for path in paths:
        merged = deep_merge(merged, read_config_file(path))
    return deep_merge(merged, overrides or {})


_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")
_WORDS = {"true": True, "True": True, "false": False, "False": False, "null": None, "None": None}


def command_line_values(node):
    """Values of Snakemake's ``--config`` as YAML would read them: Snakemake reads a list or mapping
    there as strings (``seeds=[0]`` gives ``['0']``), so each string that spells a number, a boolean
    or null becomes one; any other string stays as given."""
    if isinstance(node, dict):
        return {k: command_line_values(v) for k, v in node.items()}
    if isinstance(node, list):
        return [command_line_values(v) for v in node]
    if not isinstance(node, str):
        return node
    text = node.strip()
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return _WORDS.get(text, node)


def apply_dataset_defaults(config: dict, schema: dict | None = None) -> dict:
    """``dataset_defaults``: keys every dataset gets (``all``), then those of its kind, beneath what
    the dataset itself sets. The shared recipe says a family's prompts once, not per dataset."""
    defaults = config.get("dataset_defaults") or {}
    if not isinstance(defaults, dict) or not isinstance(config.get("datasets") or {}, dict):
        return config  # the schema names the key
    kind_default = (schema or load_schema())["properties"]["datasets"]["additionalProperties"]["properties"]["kind"]["default"]
    for ds in (config.get("datasets") or {}).values():
        if not isinstance(ds, dict):
            continue
        layered = {**(defaults.get("all") or {}), **(defaults.get(ds.get("kind", kind_default)) or {})}
        for key, value in layered.items():
            ds.setdefault(key, copy.deepcopy(value))
    return config


def _fill_defaults(node, schema: dict):
    """Recursively insert schema defaults for missing keys (objects only)."""
    if not isinstance(node, dict) or schema.get("type") != "object":
        return node
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            _fill_defaults(node[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in node.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)
    return node


def _strict_integer(checker, value) -> bool:
    """An integer is an int, never a bool and never a float: JSON Schema counts 5.0 as an integer,
    and ``seeds: [0.0]`` would end up in paths as ``s0.0``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _finite_number(checker, value) -> bool:
    """A number is finite and not a bool: NaN and infinity pass every range check."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _strict_integer, "number": _finite_number}))


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _format_error(err: jsonschema.ValidationError) -> str:
    where = _dotted(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if err.absolute_path else k for k in extra)
        hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        return f"unknown config key {keys}{hint}"
    if err.validator == "type":
        wanted = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        hints = {"integer": "a whole number without a decimal point (not true/false)",
                 "number": "a finite number (not NaN, infinity or true/false)"}
        allowed = ", or ".join(hints.get(t, "null" if t == "null" else f"a {t}") for t in wanted)
        return f"config key {where}: {err.instance!r} is not allowed here; give {allowed}"
    if err.validator == "uniqueItems":
        return f"config key {where}: {err.instance!r} names an item twice; each may appear once"
    if err.validator == "anyOf":  # e.g. a number or the word auto
        forms = [json.dumps(n["const"]) if "const" in n else
                 {"integer": "a whole number"}.get(n.get("type"), f"a {n.get('type')}")
                 + (f" >= {n['minimum']}" if "minimum" in n else "") for n in err.validator_value]
        return f"config key {where}: {err.instance!r} is not allowed here; give {' or '.join(forms)}"
    return f"config key {where}: {err.message}"


def validate(config: dict, schema: dict | None = None) -> dict:
    """Return a default-filled copy of ``config`` or raise ConfigError naming the bad key."""
    schema = schema or load_schema()
    _check_placeholders(config)
    config = _fill_defaults(apply_dataset_defaults(copy.deepcopy(config), schema), schema)
    validator = Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    errors += _override_errors(config, schema)
    if errors:
        raise ConfigError("; ".join(_format_error(e) for e in errors))
    _check_names(config)
    _check_models(config)
    _cross_check(config)
    _check_privacy(config)
    _check_library_names(config)
    _add_shadow_datasets(config)
    _check_ood(config)
    _check_substitutes(config)
    return config


def _check_placeholders(node, path=()) -> None:
    """A template's ``EDIT_ME`` left in place (``config/my_dataset.yaml``) is named before the
    schema reports it as a wrong type."""
    if isinstance(node, dict):
        for k, v in node.items():
            _check_placeholders(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_placeholders(v, (*path, i))
    elif isinstance(node, str) and "EDIT_ME" in node:
        raise ConfigError(f"config key {_dotted(path)}: still the template's placeholder {node!r}; replace it "
                          "with your value (README, 'Apply it to your own dataset')")


def _check_substitutes(config: dict) -> None:
    """No silent stand-ins: the tiny digit-font base model and the random image encoder serve the
    digits datasets of the mini world, and other datasets only where ``mini_substitutes`` says so."""
    photos = sorted(d for d, ds in config["datasets"].items() if ds["kind"] != "digits")
    missing = [k for k in ("sd15", "clip") if config["models"].get(k) is None]
    if photos and missing and not config["mini_substitutes"]:
        raise ConfigError(f"config key models.{missing[0]}: null selects the mini world's stand-in (a tiny "
                          f"digit-font model or a random encoder), but dataset {photos[0]!r} is kind "
                          f"{config['datasets'][photos[0]]['kind']!r}; give the model (extends: paper_recipe.yaml "
                          "pins SD 1.5 and CLIP ViT-L/14) or set mini_substitutes: true for a test run")


SHADOW_HALF_BASE = 2**31  # member_half seeds of the pipeline shadows: far from any a user writes


def shadow_datasets(config: dict) -> list[str]:
    """Names of the derived datasets of the pipeline shadows (privacy.synthetic_shadows pipeline):
    ``<members>_shadow<k>``, each the pool with a seeded half kept (docs/evaluation.md)."""
    pc = config["privacy"]
    if pc["pool"] is None or pc["synthetic_shadows"] != "pipeline":
        return []
    n = pc["pipeline_shadows"] or pc["shadows"]
    return [f"{pc['members']}_shadow{k}" for k in range(n)]


def _add_shadow_datasets(config: dict) -> None:
    pc = config["privacy"]
    for k, name in enumerate(shadow_datasets(config)):
        if name in config["datasets"] and config["datasets"][name].get("shadow_of") != pc["members"]:
            raise ConfigError(f"config key datasets.{name}: the name is taken by the privacy shadows (pipeline "
                              "shadows are named <privacy.members>_shadow<k>); rename the dataset")
        config["datasets"][name] = {**config["datasets"][pc["members"]],
                                    "member_half": SHADOW_HALF_BASE + 1024 * pc["seed"] + k, "shadow_of": pc["members"]}


OVERRIDDEN = ("classify", "finetune")  # sections a dataset may override: datasets.<name>.<section>_overrides


def _override_errors(config: dict, schema: dict) -> list:
    """``datasets.<name>.<section>_overrides`` checked against that section's own schema (same
    types and ranges), errors pathed to the override key."""
    errors = []
    dataset = {k: v for k, v in schema["properties"]["datasets"]["additionalProperties"].items() if k != "required"}
    for kind, keys in (config.get("dataset_defaults") or {}).items():
        if isinstance(keys, dict):
            for err in Validator(dataset).iter_errors(keys):
                err.path.extendleft(reversed(["dataset_defaults", kind]))
                errors.append(err)
    for section in OVERRIDDEN:
        props = schema["properties"][section]["properties"]
        sub = {"type": "object", "properties": props, "additionalProperties": False}
        for name, ds in (config.get("datasets") or {}).items():
            overrides = ds.get(f"{section}_overrides") if isinstance(ds, dict) else None
            if not isinstance(overrides, dict):
                continue
            for err in Validator(sub).iter_errors(overrides):
                err.path.extendleft(reversed(["datasets", name, f"{section}_overrides"]))
                errors.append(err)
    return errors


HEX40, HEX64 = re.compile(r"[0-9a-f]{40}"), re.compile(r"[0-9a-f]{64}")
HUB_KEYS, URL_KEYS = {"hub", "revision", "files", "file", "sha256"}, {"url", "sha256"}
MODELS_DIR = MODELS


def _check_models(config: dict) -> None:
    """A model given as a download: a hub repo pinned to a commit, or a URL (sha256 pinned or null)."""
    for name, spec in config["models"].items():
        if not isinstance(spec, dict):
            continue
        key = f"models.{name}"
        kind, allowed = ("hub", HUB_KEYS) if "hub" in spec else ("url", URL_KEYS) if "url" in spec else (None, None)
        if kind is None:
            raise ConfigError(f"config key {key}: give a local path, {{hub: <repo id>, revision: <commit>}} or "
                              "{url: <URL>, sha256: <hash>}")
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ConfigError(f"unknown config key {key}.{unknown[0]} (a {kind} model takes {', '.join(sorted(allowed))})")
        if kind == "hub":
            if not isinstance(spec["hub"], str) or spec["hub"].count("/") != 1 or ".." in spec["hub"].split("/"):
                raise ConfigError(f"config key {key}.hub: {spec['hub']!r} is not a hub repo id (<org>/<name>)")
            if not HEX40.fullmatch(str(spec.get("revision", ""))):
                raise ConfigError(f"config key {key}.revision: {spec.get('revision')!r} is not a 40-hex commit: pin the "
                                  "exact revision (a branch name like main moves, and the results with it)")
            hashes = spec.get("sha256") or {}
            if not isinstance(hashes, dict) or not all(HEX64.fullmatch(str(h)) for h in hashes.values()):
                raise ConfigError(f"config key {key}.sha256: a map from file path to a 64-hex sha256")
            if spec.get("files") is not None and not (isinstance(spec["files"], list) and spec["files"]):
                raise ConfigError(f"config key {key}.files: a non-empty list of file patterns (or leave it out)")
            if spec.get("file") is not None and not _inside(spec["file"]):
                raise ConfigError(f"config key {key}.file: {spec['file']!r} must be a path inside the model's folder "
                                  f"under {MODELS_DIR}/{name}/ (no leading /, no '..')")
        else:
            if not isinstance(spec["url"], str) or "://" not in spec["url"]:
                raise ConfigError(f"config key {key}.url: {spec['url']!r} is not a URL")
            if url_file_name(spec["url"]) in ("download", "", ".", ".."):
                raise ConfigError(f"config key {key}.url: {spec['url']!r} names no file (its path must end in the "
                                  "file's name, which the download keeps)")
            if spec.get("sha256") is not None and not HEX64.fullmatch(str(spec["sha256"])):
                raise ConfigError(f"config key {key}.sha256: {spec['sha256']!r} is not a 64-hex sha256 (or null)")


def _inside(relative: str) -> bool:
    """A relative path that stays inside its folder (no absolute path, no '..' part)."""
    p = Path(str(relative))
    return bool(str(relative)) and not p.is_absolute() and ".." not in p.parts


def model_path(config: dict, name: str) -> str | None:
    """Where a stage finds model ``name``: its local path, or for a download the place fetch_model
    puts it (``results/models/<name>``, or the file in it the config names)."""
    spec = config["models"][name]
    if not isinstance(spec, dict):
        return spec
    if "hub" in spec:
        return f"{MODELS_DIR}/{name}/{spec['file']}" if spec.get("file") else f"{MODELS_DIR}/{name}"
    return f"{MODELS_DIR}/{name}/{url_file_name(spec['url'])}"


def url_file_name(url: str) -> str:
    from urllib.parse import urlparse

    return Path(urlparse(url).path).name or "download"


def _check_names(config: dict) -> None:
    """Names that become folders and wildcards, and prompt templates' placeholders."""
    templates = [(f"variants.{v}.prompt_template", var.get("prompt_template")) for v, var in config["variants"].items()]
    for name, ds in config["datasets"].items():
        templates += [(f"datasets.{name}.{key}", ds.get(key)) for key in ("prompt_template", "finetune_prompt_template")]
    for key, template in templates:
        if template is None:
            continue
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise ConfigError(f"config key {key}: {exc}") from None
        unknown = sorted(fields - PROMPT_FIELDS)
        if unknown:
            raise ConfigError(f"config key {key}: unknown placeholder {{{unknown[0]}}} (known: {{classname}}, {{caption}})")
    for name, ds in config["datasets"].items():
        if not NAME_PATTERN.fullmatch(str(name)) or name in RESERVED_NAMES:
            why = (f"is reserved (results/{name} holds other things)" if name in RESERVED_NAMES else
                   "must start with a letter and hold only letters, digits, _ and - (at most 64): it names "
                   "folders under results/ and appears in shell commands")
            raise ConfigError(f"config key datasets.{name}: dataset name {name!r} {why}")
    for section in ("variants", "loras"):
        for name in config[section]:
            if not NAME_PATTERN.fullmatch(str(name)):
                raise ConfigError(f"config key {section}.{name}: name {name!r} must start with a letter and hold "
                                  "only letters, digits, _ and - (it names folders under results/)")


def _cross_check(config: dict) -> None:
    loras, variants = config["loras"], config["variants"]
    if config["tables"]["table2_variants"] is None:
        config["tables"]["table2_variants"] = list(variants)
    if config["tables"]["table2_scale"] is None:
        config["tables"]["table2_scale"] = config["tables"]["scale"]
    for name, var in variants.items():
        if var["lora"] is not None and var["lora"] not in loras:
            raise ConfigError(f"config key variants.{name}.lora: unknown LoRA {var['lora']!r} (defined: {sorted(loras)})")
    tables = config["tables"]
    for key in ("table1_baseline", "table1_method"):
        if variants and tables[key] not in variants:
            raise ConfigError(f"config key tables.{key}: unknown variant {tables[key]!r} (defined: {sorted(variants)})")
    for key in ("table1_caption_baseline", "table1_official"):
        if tables[key] is not None and tables[key] not in variants:
            raise ConfigError(f"config key tables.{key}: unknown variant {tables[key]!r} (defined: {sorted(variants)})")
    for key in ("table2_seeds", "table3_seeds"):
        odd = sorted(set(tables[key] or []) - set(config["seeds"]))
        if odd:
            raise ConfigError(f"config key tables.{key}: seed {odd[0]} is not one of seeds {config['seeds']}")
    for name in tables["table2_variants"]:
        if name not in variants:
            raise ConfigError(f"config key tables.table2_variants: unknown variant {name!r} (defined: {sorted(variants)})")
    for key in ("scale", "table2_scale"):
        if tables[key] not in config["scales"]:
            raise ConfigError(f"config key tables.{key}: {tables[key]} is not one of scales {config['scales']}")
    if config["classify"]["pretrained"] and not config["models"]["resnet50_pretrained"]:
        raise ConfigError("config key models.resnet50_pretrained: required when classify.pretrained is true")
    for name, ds in config["datasets"].items():
        for section in OVERRIDDEN:
            unknown = sorted(set(ds[f"{section}_overrides"]) - set(config[section]))
            if unknown:
                raise ConfigError(f"unknown config key datasets.{name}.{section}_overrides.{unknown[0]} "
                                  f"(allowed: {', '.join(sorted(config[section]))})")
        if ds["kind"] == "digits" and not DIGITS_CLASSES <= ds["test_size"] <= DIGITS_IMAGES - DIGITS_CLASSES:
            raise ConfigError(f"config key datasets.{name}.test_size: {ds['test_size']} is impossible for the digits "
                              f"({DIGITS_IMAGES} images, {DIGITS_CLASSES} classes): a stratified split needs "
                              f"{DIGITS_CLASSES} to {DIGITS_IMAGES - DIGITS_CLASSES} test images")
        if ds["kind"] != "digits" and not ds["root"]:
            raise ConfigError(f"config key datasets.{name}.root: required for kind {ds['kind']!r}")
        if (ds["kind"] == "celeba") != bool(ds.get("attributes")):
            raise ConfigError(f"config key datasets.{name}.attributes: " + (
                "required for kind 'celeba' (e.g. [Smiling, Attractive, Heavy_Makeup])" if ds["kind"] == "celeba"
                else f"only for kind 'celeba', not {ds['kind']!r}"))
        ccfg = dataset_section(config, "classify", name)
        _check_recipe(ccfg, name)
        _check_data_parallel(ccfg, dataset_section(config, "finetune", name), name)


def _check_data_parallel(c: dict, f: dict, dataset: str) -> None:
    """Global batches that split evenly over the data-parallel processes (docs/cluster.md, "GPUs per stage")."""
    where = f"(dataset {dataset})"
    if f["batch_size"] % f["gpus"]:
        raise ConfigError(f"config key finetune.batch_size {where}: {f['batch_size']} does not split evenly over "
                          f"finetune.gpus {f['gpus']} (it is the global batch)")
    local = f["batch_size"] // f["gpus"]
    if f["dm_group"] is not None and local % f["dm_group"]:
        raise ConfigError(f"config key finetune.dm_group {where}: each process's {local} rows (batch_size / gpus) "
                          f"must be a multiple of it ({f['dm_group']}), so no group straddles two processes")
    if f["gpus"] > 1 and f["dm_group"] is None:
        raise ConfigError(f"config key finetune.dm_group {where}: with finetune.gpus {f['gpus']} set it (the official "
                          "script's 8, or batch_size / gpus): a whole-batch sum would straddle the processes")
    if c["batch_size"] % c["gpus"] or c["batch_size"] // c["gpus"] < 2:
        raise ConfigError(f"config key classify.batch_size {where}: {c['batch_size']} must split evenly over "
                          f"classify.gpus {c['gpus']} into at least 2 rows per process (batch norm)")


RAND_AUGMENT = re.compile(r"rand(-(m\d+(\.\d+)?|n\d+|mstd\d+(\.\d+)?|mmax\d+(\.\d+)?|inc[01]|p\d+(\.\d+)?|w\d+))*")


def library_names(library: str) -> list[str]:
    """The model names timm (``library`` "timm") or open_clip ("open_clip") knows, read once per
    installed version and kept in ``$XDG_CACHE_HOME/realfake`` (importing both costs about 8 s, on
    every ``snakemake`` start otherwise); a cache that cannot be written or read is skipped."""
    import importlib.metadata

    dist = {"timm": "timm", "open_clip": "open_clip_torch"}[library]
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "realfake" / f"{library}-{version}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    if library == "timm":
        import timm

        names = sorted(timm.list_models())
    else:
        import open_clip

        names = sorted(open_clip.list_models())
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps(names))
        os.replace(tmp, cache)
    except OSError:
        pass
    return names


def _check_library_names(config: dict) -> None:
    """Architecture and encoder names that timm or open_clip must know: a typo ('resnet5O') stops
    the plan naming the key and the nearest names, not a traceback in a GPU job hours later."""
    import difflib

    archs = {dataset_section(config, "classify", d)["arch"] for d in config["datasets"]} | {config["classify"]["arch"]}
    archs.discard("smallcnn")
    if archs:
        known = set(library_names("timm"))
        for arch in sorted(archs):
            if arch.split(".")[0] not in known:  # a pretrained tag (resnet50.a1_in1k) names the same model
                near = difflib.get_close_matches(arch, sorted(known), n=3)
                raise ConfigError(f"config key classify.arch: {arch!r} is neither smallcnn nor a timm model"
                                  f"{' (did you mean ' + ', '.join(near) + '?)' if near else ''}")
    name = config["image_encoder"]["model_name"]
    tiny = sorted(p.stem for p in TINY_ENCODERS.glob("*.json"))  # the mini world's, registered by models.py
    if name not in tiny:
        known = library_names("open_clip")
        if name not in known:
            near = difflib.get_close_matches(name, known + tiny, n=3)
            raise ConfigError(f"config key image_encoder.model_name: {name!r} is neither one of {', '.join(tiny)} "
                              f"nor an open_clip model{' (did you mean ' + ', '.join(near) + '?)' if near else ''}")


TINY_ENCODERS = Path(__file__).with_name("model_configs")


def _check_recipe(c: dict, dataset: str) -> None:
    """Combinations of classify keys (after the dataset's overrides) that cannot be trained."""
    where = f"(dataset {dataset})"
    if c["warmup_epochs"] and c["schedule"] == "onecycle":
        raise ConfigError(f"config key classify.warmup_epochs {where}: one-cycle has its own warm-up; warm-up needs "
                          "schedule multistep or cosine")
    if c["transform"] == "timm" and c["loader"] != "stream":
        raise ConfigError(f"config key classify.transform {where}: timm transforms augment each image in the loader's "
                          "workers and need classify.loader stream")
    if c["transform"] == "timm" and c["randaugment_ops"]:
        raise ConfigError(f"config key classify.randaugment_ops {where}: torchvision RandAugment is for transform "
                          "simple; with transform timm set classify.auto_augment (e.g. rand-m7-mstd0.5)")
    if c["transform"] == "simple" and c["auto_augment"]:
        raise ConfigError(f"config key classify.auto_augment {where}: needs classify.transform timm")
    if c["arch"] == "smallcnn" and c["drop_path_rate"]:
        raise ConfigError(f"config key classify.drop_path_rate {where}: smallcnn has no residual blocks to drop; "
                          "use a timm architecture")
    if c["nesterov"] and c["optimizer"] != "sgd":
        raise ConfigError(f"config key classify.nesterov {where}: Nesterov momentum is for optimizer sgd, "
                          f"not {c['optimizer']!r}")
    if c["scale"][0] > c["scale"][1] or c["ratio"][0] > c["ratio"][1]:
        raise ConfigError(f"config key classify.scale / classify.ratio {where}: each range is [low, high]")
    if c["auto_augment"] and not RAND_AUGMENT.fullmatch(c["auto_augment"]):
        raise ConfigError(f"config key classify.auto_augment {where}: {c['auto_augment']!r} is not a timm RandAugment "
                          "policy: 'rand' then '-'-separated m<magnitude>, n<ops>, mstd<std>, mmax<max>, inc<0|1>, "
                          "p<prob>, w<weights index> (e.g. rand-m7-mstd0.5)")


def _check_ood(config: dict) -> None:
    oc = config["ood"]
    if oc["dataset"] is None:
        return
    ds = config["datasets"].get(oc["dataset"])
    if ds is None:
        raise ConfigError(f"config key ood.dataset: unknown dataset {oc['dataset']!r} (defined: {sorted(config['datasets'])})")
    if ds["kind"] != "imagenet":
        raise ConfigError(f"config key ood.dataset: {oc['dataset']!r} is of kind {ds['kind']!r}; the OOD sets hold "
                          "ImageNet classes, so it must be kind imagenet")
    if not any(oc["sets"].values()):
        raise ConfigError("config key ood.sets: give the root of at least one of v2, sketch, r, a")


def _check_privacy(config: dict) -> None:
    nc = config["nearest"]
    if config["variants"] and nc["variant"] not in config["variants"]:
        raise ConfigError(f"config key nearest.variant: unknown variant {nc['variant']!r}")
    if nc["scale"] not in config["scales"]:
        raise ConfigError(f"config key nearest.scale: {nc['scale']} is not one of scales {config['scales']}")
    pc = config["privacy"]
    if pc["pool"] is None:
        return
    for key in ("pool", "members"):
        if pc[key] not in config["datasets"]:
            raise ConfigError(f"config key privacy.{key}: unknown dataset {pc[key]!r} (defined: {sorted(config['datasets'])})")
    pool, mem = config["datasets"][pc["pool"]], config["datasets"][pc["members"]]
    if pool.get("attributes"):
        raise ConfigError(f"config key privacy.pool: {pc['pool']!r} is an attribute (multi-label) dataset; "
                          "the LiRA attack scores single-label classifiers")
    if mem["member_half"] is None:
        raise ConfigError(f"config key datasets.{pc['members']}.member_half: required for privacy.members")
    data_keys = ("kind", "root", "classlist", "test_fraction", "train_per_class", "test_size", "split_seed",
                 "image_size", "num_classes")  # what decides the images; prompts etc. may differ
    differ = [k for k in data_keys if mem[k] != pool[k]]
    if differ or pool["member_half"] is not None:
        raise ConfigError(f"config key privacy.members: dataset {pc['members']!r} must read the same data as "
                          f"{pc['pool']!r} (differs in {', '.join(differ) or 'member_half, set on the pool'})")
    if pc["variant"] not in config["variants"]:
        raise ConfigError(f"config key privacy.variant: unknown variant {pc['variant']!r}")
    if pc["scale"] not in config["scales"]:
        raise ConfigError(f"config key privacy.scale: {pc['scale']} is not one of scales {config['scales']}")


def load_config(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Merge YAML files left to right, each with its ``extends:`` bases (then ``overrides``), fill
    defaults and validate."""
    return validate(read_config_files(paths, overrides))


def deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_hash(obj) -> str:
    """Stable short hash of any JSON-able object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def get_dataset(config: dict, name: str) -> dict:
    if name not in config["datasets"]:
        raise ConfigError(f"unknown dataset {name!r}: not under config key datasets (defined: {sorted(config['datasets'])})")
    return config["datasets"][name]


def dataset_section(config: dict, section: str, dataset: str) -> dict:
    """A section a dataset may override (``OVERRIDDEN``: classify, finetune) with the dataset's
    ``<section>_overrides`` applied."""
    return {**config[section], **get_dataset(config, dataset).get(f"{section}_overrides", {})}


def get_variant(config: dict, name: str) -> dict:
    if name not in config["variants"]:
        raise ConfigError(f"unknown variant {name!r}: not under config key variants (defined: {sorted(config['variants'])})")
    return config["variants"][name]


DIGITS_IMAGES, DIGITS_CLASSES = 1797, 10  # scikit-learn's digits: the mini world's data
KIND_CLASSES = {"digits": DIGITS_CLASSES, "cub": 200, "cars": 196, "pets": 37, "eurosat": 10}


def class_count(config: dict, name: str) -> int:
    """Classes of a dataset from config alone (no data read): plans shards at DAG time."""
    ds = get_dataset(config, name)
    if ds["num_classes"]:
        return ds["num_classes"]
    if ds["kind"] == "imagenet":
        if ds["classlist"]:
            return len(read_classlist(ds["classlist"]))
        return 1000
    if ds["kind"] == "celeba":  # one class per combination of the attributes
        return 2 ** len(ds["attributes"])
    if ds["kind"] in KIND_CLASSES:
        return KIND_CLASSES[ds["kind"]]
    raise ConfigError(f"config key datasets.{name}.num_classes: required for kind {ds['kind']!r}")


def shard_count(config: dict, name: str, scale: int) -> int:
    """Generation jobs (tar shards) of one synthetic set, from config alone (DAG time): a shard holds
    about ``generate.classes_per_shard`` classes' worth of images per 1x of scale, so a job's size
    and runtime do not grow with the scale, and a small set is one job. The number of loader workers
    does not matter: a classifier with more workers than shards streams interleaved parts of them
    (``shards.worker_units``)."""
    return -(-class_count(config, name) * int(scale) // config["generate"]["classes_per_shard"])
