"""Loading of every model from a local path (a pinned download is one once fetch_model has made it;
the loading stages never reach the hub)."""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import write_torch
from .config import TINY_ENCODERS
from .errors import ConfigError



def check_local(path: str | Path, what: str, key: str) -> Path:
    p = Path(path)
    if not p.exists():
        hint = ""
        if "/" in str(path) and not str(path).startswith(("/", ".")) and len(Path(path).parts) == 2:
            hint = (" (this looks like a hub id: give it as {hub: <id>, revision: <40-hex commit>} and the "
                    "fetch_model rule downloads it, or put the weights in a local folder)")
        raise ConfigError(f"{what} not found at {p} (config key {key}){hint}")
    return p


def load_pipeline(path: str | Path, key: str = "models.sd15", device: str = "cpu", dtype=torch.float32):
    """A StableDiffusionPipeline from a local folder (SD 1.5 or the mini world's tiny model)."""
    from diffusers import StableDiffusionPipeline

    p = check_local(path, "Stable Diffusion pipeline folder", key)
    if not (p / "model_index.json").is_file():
        raise ConfigError(f"{p} is not a diffusers pipeline folder (no model_index.json) (config key {key})")
    pipe = StableDiffusionPipeline.from_pretrained(
        p, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def register_tiny_clip() -> None:
    import open_clip

    open_clip.add_model_config(TINY_ENCODERS)


def create_open_clip(model_name: str, pretrained: str | Path | None, key: str = "models.clip"):
    """(model, preprocess) through open_clip's own factory, weights from a local file."""
    import open_clip

    register_tiny_clip()
    if pretrained is not None:
        check_local(pretrained, "open_clip checkpoint", key)
        pretrained = str(pretrained)
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    return model.eval(), preprocess


def write_random_open_clip(model_name: str, seed: int, out: str | Path) -> None:
    """Seeded random init of an open_clip model, saved as a checkpoint file (mini world)."""
    torch.manual_seed(seed)
    model, _ = create_open_clip(model_name, None)
    write_torch(model.state_dict(), out)
