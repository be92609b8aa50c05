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
