"""Models by hub id and revision (or URL and sha256): config checks, the fetch stage against a hub
cache built offline in the real layout (HF_HUB_OFFLINE=1), and the rule in the DAG."""

import hashlib
import json

import pytest

from conftest import REPO, run_cli, run_snakemake
from hub_cache import add_snapshot
from realfake.config import ConfigError, load_config, model_path
from realfake.plan import Plan
from realfake.settings import Models

REV = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
IN10 = REPO / "config" / "imagenet10.yaml"
FILES = {"model_index.json": b'{"_class_name": "StableDiffusionPipeline"}', "unet/config.json": b"{}",
         "unet/diffusion_pytorch_model.safetensors": b"weights" * 100, "v1-5-pruned.ckpt": b"big" * 100}


def _cfg(**models):
    """The smoke config (every model null: the mini world's substitutes) with these models set."""
    return load_config(REPO / "config" / "smoke.yaml", overrides={"models": models})


@pytest.mark.parametrize("spec, message", [
    ({"hub": "org/name"}, "models.sd15.revision: None is not a 40-hex commit"),
    ({"hub": "org/name", "revision": "main"}, "models.sd15.revision: 'main'"),
    ({"hub": "name-only", "revision": REV}, "models.sd15.hub: 'name-only' is not a hub repo id"),
    ({"hub": "org/name", "revision": REV, "branch": "x"}, "unknown config key models.sd15.branch"),
    ({"hub": "org/name", "revision": REV, "sha256": {"a": "xyz"}}, "models.sd15.sha256"),
    ({"url": "not a url"}, "models.sd15.url"),
    ({"url": "https://x/y.pt", "sha256": "abc"}, "models.sd15.sha256: 'abc'"),
    ({"path": "/x"}, "config key models.sd15: give a local path"),
])
def test_bad_model_specs_name_the_key(spec, message):
    _cfg(sd15={"hub": "org/name", "revision": REV})  # the base it is checked against is fine
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        _cfg(sd15=spec)


def test_where_stages_find_fetched_models():
    cfg = _cfg(sd15={"hub": "org/sd", "revision": REV},
               clip={"hub": "timm/clip", "revision": REV, "file": "open_clip_model.safetensors"},
               sscd={"url": "https://example.org/a/sscd.torchscript.pt", "sha256": None})
    m = Models.of(cfg)
    assert m.sd15 == "results/models/sd15" and m.clip == "results/models/clip/open_clip_model.safetensors"
    assert m.sscd == "results/models/sscd/sscd.torchscript.pt" and m.blip2 is None
    assert model_path(_cfg(blip2="/local/blip2"), "blip2") == "/local/blip2"
    plan = Plan(cfg)
    assert plan.base_model() == ["results/models/sd15.manifest.json"] and plan.base_model_path() == "results/models/sd15"
    assert plan.encoder_init() == ["results/models/clip.manifest.json"]
    assert plan.fetched("blip2", "sscd") == ["results/models/sscd.manifest.json"]


def test_quality_inception_weights_come_from_the_pin_unless_quality_inception_names_a_file():
    plan = Plan(load_config(REPO / "config" / "imagenet10.yaml"))
    weights = "results/models/inception/inception_v3_google-0cc3c7bd.pth"
    assert plan.quality_models("imagenet10") == {"inception": "results/models/inception.manifest.json"}
    assert plan.scorer_args(plan.quality_models("imagenet10"), False) == f"--inception {weights}"
    own = Plan(load_config(REPO / "config" / "imagenet10.yaml", overrides={"quality": {"inception": "/w/i v3.pth"}}))
    assert own.quality_models("imagenet10") == {} and own.scorer_args({}, False) == "--inception '/w/i v3.pth'"


def _fetch(tmp_path, spec, cache, check=True, name="sd15"):
    cfg = {"run_name": "t", "threads": 1, "models": {name: spec}}
    return run_cli("fetch", "model", "--cfg", json.dumps(cfg), "--name", name, "--folder", str(tmp_path / "out" / name),
                   "--manifest", str(tmp_path / "out" / f"{name}.manifest.json"), check=check,
                   env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})


def test_hub_fetch_offline_takes_the_pinned_files(tmp_path):
    cache = tmp_path / "cache"
    add_snapshot(cache, "org/sd", REV, FILES)
    spec = {"hub": "org/sd", "revision": REV, "files": ["*.json", "unet/*"],
            "sha256": {"unet/diffusion_pytorch_model.safetensors": hashlib.sha256(FILES["unet/diffusion_pytorch_model.safetensors"]).hexdigest()}}
    _fetch(tmp_path, spec, cache)
    out = tmp_path / "out" / "sd15"
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]  # no .ckpt
    assert all((out / rel).read_bytes() == FILES[rel] for rel in got)
    manifest = json.loads((tmp_path / "out" / "sd15.manifest.json").read_text())
    assert manifest["source"]["revision"] == REV
    assert {rel: f["sha256"] for rel, f in manifest["files"].items()} == {rel: hashlib.sha256(FILES[rel]).hexdigest() for rel in got}


def test_wrong_revision_or_hash_is_an_error_naming_both(tmp_path):
    cache = tmp_path / "cache"
    add_snapshot(cache, "org/sd", REV, FILES)
    proc = _fetch(tmp_path, {"hub": "org/sd", "revision": OTHER}, cache, check=False)
    assert proc.returncode == 2
    assert f"cannot fetch org/sd at revision {OTHER}" in proc.stderr and f"holds revisions {REV}" in proc.stderr
    bad = {"hub": "org/sd", "revision": REV, "sha256": {"unet/diffusion_pytorch_model.safetensors": "0" * 64}}
    proc = _fetch(tmp_path, bad, cache, check=False)
    real = hashlib.sha256(FILES["unet/diffusion_pytorch_model.safetensors"]).hexdigest()
    assert proc.returncode == 2 and f"has sha256 {real}, the config pins {'0' * 64}" in proc.stderr
    assert not (tmp_path / "out" / "sd15").exists() and not (tmp_path / "out" / "sd15.manifest.json").exists()
    proc = _fetch(tmp_path, {"hub": "org/sd", "revision": REV, "file": "open_clip_model.safetensors"}, cache, check=False)
    assert proc.returncode == 2 and "has no file open_clip_model.safetensors" in proc.stderr


def test_a_corrupt_cached_blob_is_caught(tmp_path):
    cache = tmp_path / "cache"
    snap = add_snapshot(cache, "org/sd", REV, FILES)
    (snap / "unet/diffusion_pytorch_model.safetensors").resolve().write_bytes(b"truncated")
    proc = _fetch(tmp_path, {"hub": "org/sd", "revision": REV}, cache, check=False)
    assert proc.returncode == 2 and "the cache is corrupt" in proc.stderr


def test_url_fetch_checks_the_sha256(tmp_path):
    src = tmp_path / "sscd_disc_mixup.torchscript.pt"
    src.write_bytes(b"torchscript" * 50)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    _fetch(tmp_path, {"url": src.as_uri(), "sha256": digest}, tmp_path / "cache", name="sscd")
    assert (tmp_path / "out" / "sscd" / src.name).read_bytes() == src.read_bytes()
    proc = _fetch(tmp_path, {"url": src.as_uri(), "sha256": "1" * 64}, tmp_path / "cache", check=False, name="sscd")
    assert proc.returncode == 2 and f"has sha256 {digest}, the config pins {'1' * 64}" in proc.stderr
    proc = _fetch(tmp_path, {"url": (tmp_path / "missing.pt").as_uri(), "sha256": None}, tmp_path / "cache",
                  check=False, name="sscd")
    assert proc.returncode == 2 and "cannot download" in proc.stderr


def test_fetch_rule_comes_before_the_jobs_that_load_the_model(tmp_path):
    extra = tmp_path / "hub.yaml"
    extra.write_text(json.dumps({"models": {"sd15": {"hub": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                                                     "revision": REV}}}))
    proc = run_snakemake(tmp_path, "-n", "-p", "results/imagenet10/lora/full/s0/lora.safetensors",
                         "--configfile", str(IN10), str(extra))
    out = proc.stdout
    assert "rule fetch_model:" in out and "--name sd15" in out
    assert out.index("rule fetch_model:") < out.index("rule finetune:")
    assert "--base results/models/sd15 " in out


def test_classifier_weights_are_fetched_only_where_classifiers_start_from_them():
    cfg = load_config(REPO / "config" / "paper.yaml")
    plan = Plan(cfg)
    assert plan.classifier_weights("imagenet10") == []  # from scratch
    assert plan.classifier_weights("cub") == ["results/models/resnet50_pretrained.manifest.json"]
