"""docs/results.md is written from a run's result files: every number as the CSV spells it, the
commit from the sidecars, the time per stage summed from the benchmark files."""

from pathlib import Path

import pandas as pd
import pytest

from realfake.tools.resultsdoc import markdown_table, render, stage_of, stage_times
from realfake.tables import write_table

from conftest import run_cli


def fake_run(root: Path) -> Path:
    """A results folder in the workflow's layout: two tables through the stages' writer, benchmarks."""
    r = root / "results"
    cfg = {"seeds": [0, 1]}
    t1 = pd.DataFrame({"dataset": ["mini", "mini"], "row": ["real only", "synthetic only: ours"],
                       "top1_mean": [94.4512, 78.671], "top1_std": [0.2011, 1.77], "paper_top1": [None, None]})
    write_table(t1, str(r / "tables" / "table1.csv"), cfg, ["m0.json"])
    claims = pd.DataFrame({"claim": ["ours beats base | table 1"], "p_value": [0.03125], "holds": [True]})
    write_table(claims, str(r / "tables" / "claims.csv"), cfg, ["table1.csv"], float_format="%.4f")
    for rel, s, rss in (("mini/classify/real_s0.tsv", 60.0, 1000.0), ("mini/classify/real_s1.tsv", 120.0, 1500.0),
                        ("mini/caption.tsv", 30.0, 500.0), ("report/table1.tsv", 6.0, 300.0),
                        ("pretrain_base.tsv", 600.0, 1400.0)):
        f = r / "benchmarks" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:00\t{rss}\n")
    (r / "figures").mkdir()
    (r / "figures" / "samples.png").write_bytes(b"png")
    return r


def test_every_number_comes_from_the_files(tmp_path):
    r = fake_run(tmp_path)
    text = render(r, produced_by="make demo-all")
    csv = (r / "tables" / "table1.csv").read_text()
    assert "94.45,0.20" in csv  # the writer rounds to 2 places; the document copies that spelling
    assert "| mini | real only | 94.45 ± 0.20 |" in text
    assert "78.67 ± 1.77" in text and "94.4512" not in text
    assert "paper_top1" not in text  # an empty column is left out
    assert "ours beats base \\| table 1" in text and "0.0312" in text
    commit = pd.read_json(str(r / "tables" / "table1.csv.json"), typ="series")["git_commit"]
    assert commit in text and "make demo-all" in text
    assert "Not made by this run" in text and "`table2.csv`" in text
    assert f"`{r / 'figures' / 'samples.png'}`" in text


def test_stage_times_sum_the_benchmark_files(tmp_path):
    t = stage_times(fake_run(tmp_path) / "benchmarks").set_index("stage")
    assert t.loc["classify", "jobs"] == 2 and t.loc["classify", "minutes"] == 3.0
    assert t.loc["classify", "peak_memory_gb"] == pytest.approx(1500 / 1024, abs=0.01)
    assert t.loc["pretrain_base", "minutes"] == 10.0 and t.loc["report", "jobs"] == 1
    assert t.loc["all jobs", "jobs"] == 5 and t.loc["all jobs", "minutes"] == pytest.approx(13.6)
    assert list(t.index)[:2] == ["pretrain_base", "classify"]  # largest first, total last


@pytest.mark.parametrize("rel, stage", [("pretrain_base.tsv", "pretrain_base"), ("report/claims.tsv", "report"),
                                        ("mini/embed.tsv", "embed"), ("mini/generate/ours_s0_1x_00001.tsv", "generate"),
                                        ("models/sd15.tsv", "models")])
def test_stage_of_benchmark_paths(rel, stage):
    assert stage_of(Path(rel)) == stage


def test_mean_and_std_columns_merge():
    df = pd.DataFrame({"a_mean": ["1.00", "2.00"], "a_std": ["0.10", ""], "b": ["x", "y"]})
    lines = markdown_table(df).splitlines()
    assert lines[0] == "| a (mean ± std) | b |"
    assert lines[2:] == ["| 1.00 ± 0.10 | x |", "| 2.00 | y |"]


def test_cli_writes_the_document(tmp_path):
    r = fake_run(tmp_path)
    out = tmp_path / "docs" / "results.md"
    run_cli("tools.resultsdoc", "--results", str(r), "--out", str(out))
    assert out.read_text().startswith("# Results")
    assert not list(out.parent.glob("*.tmp"))


def test_bad_results_folders_are_named(tmp_path):
    out = tmp_path / "results.md"
    proc = run_cli("tools.resultsdoc", "--results", str(tmp_path / "nope"), "--out", str(out), check=False)
    assert proc.returncode == 2 and "nope" in proc.stderr and not out.exists()
    (tmp_path / "empty" / "tables").mkdir(parents=True)
    proc = run_cli("tools.resultsdoc", "--results", str(tmp_path / "empty"), "--out", str(out), check=False)
    assert proc.returncode == 2 and "no result tables" in proc.stderr and not out.exists()
    r = fake_run(tmp_path / "bad")
    (r / "tables" / "table1.csv.json").write_text("{not json")
    proc = run_cli("tools.resultsdoc", "--results", str(r), "--out", str(out), check=False)
    assert proc.returncode == 2 and "table1.csv.json" in proc.stderr and not out.exists()
    (r / "tables" / "table1.csv.json").unlink()
    (r / "benchmarks" / "mini" / "caption.tsv").write_text("")
    proc = run_cli("tools.resultsdoc", "--results", str(r), "--out", str(out), check=False)
    assert proc.returncode == 2 and "caption.tsv" in proc.stderr and not out.exists()


def test_the_smoke_run_documents_every_table(smoke_run):
    """Every table the workflow writes has its own section (none under 'Other tables')."""
    r = smoke_run / "results"
    text = render(r)
    assert "## Other tables" not in text
    for f in sorted((r / "tables").glob("*.csv")):
        assert f"`{f}`" in text
    assert "## Time and memory per stage" in text and "| finetune |" in text
