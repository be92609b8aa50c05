"""Conda env files are valid, every rule names one, their pins agree with requirements.lock, and
every rule's command loads in a Python holding only its env's dependency closure (tests/env_closure.py)."""

import os
import re

import pytest
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
            for directive in ("input:" if name not in ("prepare_digits", "pretrain_base", "image_encoder_init", "fetch_model")
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


@pytest.fixture(scope="module")
def closures(tmp_path_factory):
    import env_closure
    root = tmp_path_factory.mktemp("closures")
    return {env.name: env_closure.build(env, root / env.stem) for env in sorted((REPO / "envs").glob("*.yaml"))}


def _closure_run(bin_dir, *args):
    import subprocess

    import env_closure
    env = env_closure.env_without_site()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return subprocess.run(["python", *args], env=env, capture_output=True, text=True, cwd=REPO)


@pytest.mark.slow
def test_each_env_closure_imports_only_its_own_packages(closures):
    """The closure Python is what the env would install, and nothing else: torch is not importable
    from the reporting env, and every env finds its own pins."""
    import env_closure
    proc = _closure_run(closures["reporting.yaml"], "-c", "import pandas, matplotlib, pyarrow, tqdm; import torch")
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr
    for name, bin_dir in closures.items():
        mods = {"open-clip-torch": "open_clip", "pillow": "PIL", "pyyaml": "yaml", "scikit-learn": "sklearn"}
        pins = [mods.get(r.name.lower(), r.name.replace("-", "_")) for r in env_closure.env_requirements(REPO / "envs" / name)]
        proc = _closure_run(bin_dir, "-c", "import " + ", ".join(pins))
        assert proc.returncode == 0, (name, proc.stderr[-500:])


@pytest.mark.slow
def test_every_rule_command_imports_in_its_envs_closure(closures):
    """Each rule's `python -m realfake.<stage> <action>` loads (all its module-level imports, in the
    Python of the rule's env closure): a stage that imports torch cannot run in an env without it."""
    import env_closure
    failed = []
    for rule, env, module, action in sorted(set(env_closure.rule_commands()), key=lambda r: r[1:]):
        proc = _closure_run(closures[env], "-m", f"realfake.{module}", action, "--help")
        if proc.returncode != 0:
            failed.append(f"rule {rule} ({env}): {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    assert not failed, failed
    assert len(env_closure.rule_commands()) >= 25


@pytest.mark.slow
def test_rules_run_in_their_conda_envs(tmp_path):
    """Snakemake's own conda deployment, driven by the stand-in conda of the Slurm test (each env
    file built as its closure): Snakemake drops PYTHONPATH inside conda envs, and the rules must
    still find realfake, with the env's Python."""
    import subprocess

    fake = REPO / "tests" / "slurm" / "fake_conda" / "bin"
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "REALFAKE_ACTIVATIONS": str(tmp_path / "activations.txt")}
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                           "results/smoke/real_index.parquet", "--configfile", str(REPO / "config" / "smoke.yaml"),
                           "--sdm", "conda", "--cores", "1"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    used = (tmp_path / "activations.txt").read_text().split()
    assert len(used) == 2 and len(set(used)) == 1  # prepare_digits and index_real, both in envs/classify.yaml
    assert (tmp_path / used[0] / "site").is_dir() and not (tmp_path / used[0] / "site" / "diffusers").exists()
