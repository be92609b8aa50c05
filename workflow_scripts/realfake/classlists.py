"""Ground floor: class lists (shipped ImageNet subsets and the lists timm ships); imports only errors."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

CLASSLISTS = Path(__file__).resolve().parents[2] / "config" / "classlists"


def read_classlist(name_or_path: str) -> list[str]:
    """A shipped class list (imagenet10, imagenet100) or a file: one id a line, '#' comments."""
    path = Path(name_or_path)
    if not path.is_file():
        path = CLASSLISTS / f"{name_or_path}.txt"
    if not path.exists():
        raise ConfigError(f"class list not found: {path}")
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines() if ln.split("#")[0].strip()]


def _timm_info(name: str) -> Path:
    import timm.data

    return Path(timm.data.__file__).parent / "_info" / name


IMAGENET_NAMES = CLASSLISTS / "imagenet1k_names.tsv"


def imagenet_classnames(wnids: list[str]) -> dict[str, str]:
    """WordNet id -> prompt name: the official code's curated list for the 1000 ImageNet-1K classes
    (open_clip's ``IMAGENET_CLASSNAMES`` with 7 edits, shipped as ``imagenet1k_names.tsv``: 'crane
    bird' and 'construction crane', not 'crane' twice); any other id gets its first WordNet lemma
    (timm's synset list), or the id itself."""
    curated = dict(ln.split("\t", 1) for ln in IMAGENET_NAMES.read_text().splitlines()
                   if ln and not ln.startswith("#"))
    lemmas = dict(ln.split("\t", 1) for ln in _timm_info("imagenet_synset_to_lemma.txt").read_text().splitlines()
                  if "\t" in ln)
    return {w: curated.get(w) or (lemmas[w].split(",")[0].strip() if w in lemmas else w) for w in wnids}


def imagenet_1k_wnids() -> list[str]:
    """The 1000 ImageNet-1K WordNet ids in the standard (sorted) class-index order."""
    return _timm_info("imagenet_synsets.txt").read_text().split()


def ood_classlist(kind: str) -> list[str]:
    """The 200 WordNet ids of ImageNet-R or ImageNet-A (lists shipped with timm)."""
    return _timm_info(f"imagenet_{kind}_synsets.txt").read_text().split()
