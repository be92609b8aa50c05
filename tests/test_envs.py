"""Conda env files are valid, every rule names one, and their pins agree with requirements.lock."""

import re

import yaml

from conftest import REPO


def lock_pins() -> dict:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def env_pins(env: dict) -> dict:
    pins = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*==?\s*([^\s]+)", item)
            if m and m.group(1) not in ("python", "pip"):
                pins[m.group(1).lower()] = m.group(2)
    return pins


def test_env_files_parse_and_pin_like_the_lock():
    lock = lock_pins()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert len(envs) >= 3
    for path in envs:
        env = yaml.safe_load(path.read_text())
        assert set(env) == {"channels", "dependencies"}, path
        pins = env_pins(env)
        assert pins, f"{path} pins nothing"
        for name, version in pins.items():
            assert name in lock, f"{path.name}: {name} is not in requirements.lock"
            assert lock[name] == version, f"{path.name}: {name}=={version} but requirements.lock has {lock[name]}"


def test_every_rule_has_log_benchmark_and_conda_env():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        rules = re.split(r"\nrule ", text)[1:]
        for body in rules:
            name = body.split(":")[0]
            for directive in ("input:" if name not in ("prepare_digits", "pretrain_base", "image_encoder_init")
                              else "output:", "output:", "log:", "benchmark:", "conda:"):
                assert f"    {directive}" in body, f"{smk.name}: rule {name} lacks {directive}"
            env = re.search(r'"\.\./envs/([a-z_]+\.yaml)"', body)
            assert env and (REPO / "envs" / env.group(1)).is_file(), f"rule {name}: conda env missing"


def rule_names() -> set:
    return {m.group(1) for f in (REPO / "rules").glob("*.smk")
            for m in re.finditer(r"^rule (\w+):", f.read_text(), re.M)}


def test_profiles_name_only_existing_rules_and_groups():
    """A renamed rule must not silently lose its cluster resources (or its GPU override in tests)."""
    rules = rule_names()
    groups = {m.group(1) for f in (REPO / "rules").glob("*.smk")
              for m in re.finditer(r"^\s+group:\s*\n\s+\"(\w+)\"", f.read_text(), re.M)}
    assert "generate_shard" in rules and groups == {"generate"}
    for path in ("slurm/config.yaml", "tests/slurm/profile/config.yaml"):
        prof = yaml.safe_load((REPO / path).read_text())
        unknown = set(prof.get("set-resources", {})) - rules
        assert not unknown, f"{path} sets resources of unknown rules {unknown}"
        for item in prof.get("group-components", []):
            assert item.split("=")[0] in groups, f"{path}: unknown group in {item}"
    test_prof = yaml.safe_load((REPO / "tests/slurm/profile/config.yaml").read_text())
    gpu_rules = {r for r in rules if re.search(rf"rule {r}:(?:(?!\nrule ).)*\*\*res\(",
                                               "\n".join(f.read_text() for f in (REPO / "rules").glob("*.smk")), re.S)}
    assert gpu_rules and all(test_prof["set-resources"][r]["gpu"] == 0 for r in gpu_rules)
