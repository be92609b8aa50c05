"""One run per results folder: a second run is refused while the first lives; dry-runs and the
lock's end with the process need no clean-up."""

import subprocess
import sys

import pytest

from realfake.runlock import RunLocked, hold_run_lock

from conftest import REPO, run_snakemake, snakemake_env

HOLDER = """
import sys, time
from realfake.runlock import hold_run_lock
hold_run_lock(sys.argv[1])
print("held", flush=True)
sys.stdin.read()  # hold until the test closes stdin
"""


def holder(results):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(results)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=snakemake_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_until_the_first_process_ends(tmp_path):
    first = holder(tmp_path / "results")
    try:
        with pytest.raises(RunLocked, match=rf"pid {first.pid} on .*wait for it to end"):
            hold_run_lock(tmp_path / "results")
    finally:
        first.stdin.close()
        first.wait()
    fd = hold_run_lock(tmp_path / "results")  # released with the process, no stale lock left
    assert fd >= 0


def test_snakemake_run_is_refused_while_another_run_holds_the_folder(tmp_path):
    first = holder(tmp_path / "results")
    try:
        cfg = str(REPO / "config" / "smoke.yaml")
        dry = run_snakemake(tmp_path, "-n", "results/smoke/real_index.parquet", "--configfile", cfg)
        assert dry.returncode == 0  # a dry run only reads
        proc = run_snakemake(tmp_path, "results/smoke/real_index.parquet", "--configfile", cfg, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and f"another workflow run is using results/ (pid {first.pid}" in out, out[-2000:]
        assert not (tmp_path / "results" / "smoke").exists()  # no job started
    finally:
        first.stdin.close()
        first.wait()
