"""The rehearsal's measuring parts: the memory limit and peak of a job, the loader's class mix,
the projection; the whole `make rehearsal` at small counts is the slow test at the end."""

import sys

import pandas as pd
import pytest

from realfake.tools.rehearsal import declared_mem_mb, main, measure, projection, shuffle_rows


def test_measure_sees_a_process_trees_peak_and_enforces_the_limit(tmp_path):
    grow = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.3)"
    peak, wall = measure([sys.executable, "-c", grow], 4000, tmp_path / "ok.log")
    assert peak >= 300 and wall > 0
    with pytest.raises(RuntimeError, match="under 200 MB"):
        measure([sys.executable, "-c", grow], 200, tmp_path / "over.log")  # the kernel refuses the allocation
    assert "MemoryError" in (tmp_path / "over.log").read_text()


def test_streamed_batches_are_as_mixed_as_a_shuffled_loader():
    """With the paper configs' loader, the shuffled shard order gives batches whose largest class
    share is within 2x of a fully shuffled loader's; class-sorted shards (a naive writer) do not."""
    rows = {r["set"]: r for r in shuffle_rows(max_batches=80)}
    for r in rows.values():
        assert r["max_class_share_median"] <= 2 * r["shuffled_reference"], r
    sorted_shards = rows["imagenet10_10x"]  # the class-by-class writer: the measure tells it apart
    assert sorted_shards["class_sorted_shards"] > 2 * sorted_shards["shuffled_reference"], sorted_shards
    assert rows["imagenet1k_10x"]["shards"] == 1000


def test_projection_is_linear_through_the_two_sizes():
    stages = pd.DataFrame({"stage": ["embed", "embed"], "n_images": [1000, 4000], "peak_rss_mb": [100.0, 130.0],
                           "declared_mem_mb": [500, 500], "wall_s": [10.0, 40.0]})
    row = projection(stages).iloc[0]
    assert row.growth_peak == 1.3 and row.mb_per_1k_images == 10.0
    assert row.projected_peak_mb == pytest.approx(130 + 0.01 * (1_281_167 - 4000), abs=1)


def test_declared_memory_is_the_rules_at_in1k_10x():
    assert declared_mem_mb("manifest") < declared_mem_mb("classify")


@pytest.mark.slow
def test_rehearsal_writes_its_tables_within_the_declared_memory(tmp_path):
    main(["--out", str(tmp_path), "--small", "200", "--large", "800", "--rows-small", "20000",
          "--rows-large", "80000", "--shuffle-batches", "40"])
    stages = pd.read_csv(tmp_path / "stages.csv")
    assert list(stages.columns) == ["stage", "n_images", "peak_rss_mb", "declared_mem_mb", "wall_s"]
    assert {"index", "caption", "embed", "finetune", "generate", "manifest", "classify", "quality",
            "nearest"} <= set(stages.stage)
    assert (stages.peak_rss_mb <= stages.declared_mem_mb).all()
    shuffle = pd.read_csv(tmp_path / "shuffle.csv")
    assert {"max_class_share_median", "shuffled_reference"} <= set(shuffle.columns)
    assert len(pd.read_csv(tmp_path / "projection.csv")) == stages.stage.nunique()
    assert not (tmp_path / "work").exists()
