"""Atomic writers: no partial file on failure, and the same content gives the same bytes."""

import pytest
import torch

from realfake.atomic import atomic_path, write_json, write_torch


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "table.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half a tab")
            raise RuntimeError("disk full")
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_torch_files_are_byte_identical_for_identical_content(tmp_path):
    obj = {"means": {0: torch.arange(4.0)}, "name": "x"}
    write_torch(obj, tmp_path / "a.pt")
    write_torch(obj, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt")["means"][0], torch.arange(4.0))


def test_json_is_sorted_and_stable(tmp_path):
    write_json({"b": 1, "a": [1, 2]}, tmp_path / "x.json")
    assert (tmp_path / "x.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_disk_full_during_a_real_writer_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC raised by the filesystem in the middle of write_parquet: no file that looks complete."""
    import errno

    import pandas as pd

    from realfake.atomic import write_parquet

    real_to_parquet = pd.DataFrame.to_parquet

    def full(self, path, *a, **k):
        real_to_parquet(self.head(1), path, *a, **k)  # some bytes reach the disk first
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(OSError, match="No space left"):
        write_parquet(pd.DataFrame({"a": range(100)}), tmp_path / "manifest.parquet")
    assert list(tmp_path.iterdir()) == []


def test_read_only_folder_gives_permission_error_and_no_file(tmp_path):
    import os

    if os.geteuid() == 0:  # root ignores file modes: use a folder that cannot be created instead
        target = tmp_path / "file_not_dir" / "x.json"
        (tmp_path / "file_not_dir").write_text("")
        with pytest.raises(OSError):
            write_json({"a": 1}, target)
        assert (tmp_path / "file_not_dir").read_text() == ""
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            write_json({"a": 1}, ro / "x.json")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_stale_temporary_of_a_killed_writer_is_removed_on_the_next_write(tmp_path):
    stale = tmp_path / ".table.csv.abc12345.tmp"
    stale.write_text("half a tab")
    other = tmp_path / ".table.csv.json.abc12345.tmp"  # a different file's temporary stays
    other.write_text("{")
    with atomic_path(tmp_path / "table.csv") as tmp:
        tmp.write_text("a,b\n")
    assert not stale.exists() and other.exists()
    assert (tmp_path / "table.csv").read_text() == "a,b\n"


def test_artifacts_get_the_umask_mode_not_mkstemps(tmp_path):
    import os

    from realfake.atomic import atomic_dir
    old = os.umask(0o027)
    try:
        write_json({"a": 1}, tmp_path / "x.json")
        with atomic_dir(tmp_path / "shards") as d:
            (d / "0.tar").write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o640  # mkstemp alone gives 0600
    assert (tmp_path / "shards").stat().st_mode & 0o777 == 0o750  # mkdtemp alone gives 0700


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_a_crafted_pickle_is_refused_with_the_file_named(tmp_path):
    from realfake.atomic import read_torch
    from realfake.classifier_models import load_classifier
    bad = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "arch": "smallcnn", "num_classes": 2, "x": _Boom()}, bad)
    with pytest.raises(ValueError, match=r"refusing to load classifier .*model\.pt"):
        load_classifier(bad)
    with pytest.raises(FileNotFoundError, match="class means .*missing.pt"):
        read_torch(tmp_path / "missing.pt", "class means")


def test_checkpoints_and_models_load_without_pickled_code(tmp_path):
    """What the stages save (optimiser and warm-up cosine schedule state, generator state, the
    config) loads under weights_only: the schedule's learning rates are plain floats."""
    from realfake.atomic import read_torch
    from realfake.optim import make_optimizer, make_schedule
    from realfake.settings import Classify
    from realfake.config import load_config
    from pathlib import Path
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "imagenet1k.yaml")
    c = Classify.of(cfg, "imagenet1k")
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(model, c)
    sched = make_schedule(opt, c, 10)
    for epoch in range(c.warmup_epochs + 3):
        opt.step()
        sched.after_step()
        sched.after_epoch(epoch)
    write_torch({"opt": opt.state_dict(), "sched": sched.state_dict(), "cfg": cfg,
                 "gen": torch.Generator().get_state()}, tmp_path / "c.pt")
    back = read_torch(tmp_path / "c.pt")
    assert back["sched"]["warmup_t"] == c.warmup_epochs
    assert type(back["opt"]["param_groups"][0]["lr"]) is float


def test_progress_in_a_log_file_is_written_as_lines():
    """A rule's log gets one progress line per update, not carriage-return redraws on one line."""
    import io

    from tqdm import tqdm

    from realfake.cli import LineProgress

    buf = io.StringIO()
    stream = LineProgress(buf)
    for _ in tqdm(range(5), desc="train", file=stream, mininterval=0, miniters=1):
        pass
    stream.write("done\n")
    text = buf.getvalue()
    assert "\r" not in text and "\n\n" not in text
    lines = text.splitlines()
    assert len(lines) >= 6 and lines[-1] == "done" and "5/5" in lines[-2]
