"""Tar shards: the writer's resume logic and the streaming reader, without any model."""

import io
import random
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from realfake.shards import (ShardDataset, ShardWriter, iter_shard, read_images, scan, split_unit, stream_order,
                             worker_units)


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


BATCHES = [["a0", "a1"], ["b0", "b1"], ["c0"]]


def write(path, batches=BATCHES, finger="f", stop_after=None):
    w = ShardWriter(path, batches, finger)
    for keys in w.pending:
        if stop_after is not None and w.done_batches >= stop_after:
            return w
        w.write_batch((k, png(sum(map(ord, k))), i) for i, k in enumerate(keys))
    w.close()
    return w


def test_standard_tar_readable_by_tarfile(tmp_path):
    write(tmp_path / "s.tar")
    with tarfile.open(tmp_path / "s.tar") as tf:
        names = tf.getnames()
        assert names[:4] == ["a0.png", "a0.cls", "a1.png", "a1.cls"]
        assert tf.extractfile("b1.cls").read() == b"1"
        assert all(m.mtime == 0 and m.uid == 0 for m in tf.getmembers())
    assert [k for k, _, _ in iter_shard(tmp_path / "s.tar")] == ["a0", "a1", "b0", "b1", "c0"]


def test_resume_keeps_whole_batches_only(tmp_path):
    full = tmp_path / "full.tar"
    write(full)
    part = tmp_path / "p.tar"
    write(part, stop_after=2)._f.close()
    partial = tmp_path / "p.tar.partial"
    # cut into the middle of batch b's second image: only batch a survives
    cut = scan(partial)[5][1] + 10
    with open(partial, "r+b") as f:
        f.truncate(cut)
    w = ShardWriter(part, BATCHES, "f")
    assert w.done_batches == 1 and [k for k in w.pending] == BATCHES[1:]
    w._f.close()
    write(part)
    assert part.read_bytes() == full.read_bytes()
    assert not partial.exists()


def test_out_of_plan_batch_is_refused(tmp_path):
    w = ShardWriter(tmp_path / "s.tar", BATCHES, "f")
    with pytest.raises(RuntimeError, match="out of plan"):
        w.write_batch([("b0", png(0), 0)])
    with pytest.raises(RuntimeError, match="0 of 3 batches written"):
        w.close()
    assert not (tmp_path / "s.tar").exists()


def test_missing_or_truncated_shard_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.tar"):
        list(iter_shard(tmp_path / "gone.tar"))
    write(tmp_path / "s.tar")
    with pytest.raises(ValueError, match="lacks 1 image"):
        read_images(tmp_path / "s.tar", ["a0", "zz"])


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_stream_covers_every_image_once_in_the_same_order_for_any_worker_count(tmp_path):
    """Five shards, three streams, files beside them: 0 to 4 loader processes give the same
    images in the same order with the same pixels (the streams decide, not the workers), every
    image once; another epoch gives another order."""
    shards = []
    for s in range(5):
        p = tmp_path / f"{s}.tar"
        write(p, [[f"{s}_{i}" for i in range(7)]])
        shards.append(str(p))
    files = []
    for k in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(tmp_path / f"f{k}.png")
        files.append((str(tmp_path / f"f{k}.png"), 10 + k))

    def run(workers, epoch=0):
        ds = ShardDataset(shards, size=8, seed=1, shuffle_buffer=4, files=files, shard_images=35, streams=3, chunk=2)
        ds.set_epoch(epoch)
        xs, ys = zip(*ds.samples(workers))
        return torch.stack(xs), list(ys)

    x, y = run(0)
    assert x.shape == (39, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert sorted(y) == sorted(list(range(7)) * 5 + [10, 11, 12, 13])
    for workers in (1, 2, 3, 4):
        xw, yw = run(workers)
        assert yw == y and torch.equal(xw, x), workers
    assert run(0, epoch=1)[1] != y


def test_rounds_merge_back_into_one_order_and_a_shuffled_loader_is_refused():
    """chunk_rounds of all streams is the order; the rounds of any split of the streams, taken in
    turn as torch's DataLoader hands them over, merge back into it; an item from an earlier round
    after a later one (a loader not keeping order) is an error, not a silent reordering."""
    from realfake.shards import chunk_rounds, in_stream_order

    def streams():
        return {v: iter([(v, i) for i in range(n)]) for v, n in enumerate([5, 2, 7, 0, 3])}

    whole = [item for chunks in chunk_rounds(streams(), 2) for _, items in chunks for item in items]
    assert sorted(whole) == sorted(item for it in streams().values() for item in it)
    assert whole[:6] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    for nw in (1, 2, 3, 5):
        per_worker = [list(enumerate(chunk_rounds({v: it for v, it in streams().items() if v % nw == w}, 2)))
                      for w in range(nw)]
        handed = []  # worker 0's first item, worker 1's first, ...; a finished worker is skipped
        for i in range(max(len(p) for p in per_worker)):
            handed += [p[i] for p in per_worker if i < len(p)]
        merged = [item for items in in_stream_order(
            (r, [(v, items, None) for v, items in chunks]) for r, chunks in handed) for item in items[0]]
        assert merged == whole, nw
    with pytest.raises(RuntimeError, match="round 0 after round 1"):
        list(in_stream_order([(0, [(0, "a", None)]), (1, [(0, "b", None)]), (0, [(1, "c", None)])]))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_more_streams_than_shards_share_them_and_read_each_image_once(tmp_path):
    """Two shards, five streams: every stream reads images (parts of a shard), and the images read
    are the set's, each once, with five loader processes too; the parts of a filtered shard split
    its kept members."""
    keys = [[f"{s}_{i}" for i in range(7)] for s in range(2)]
    shards = []
    for s, ks in enumerate(keys):
        p = tmp_path / f"{s}.tar"
        write(p, [ks])
        shards.append(str(p))
    units = [worker_units(shards, w, 5) for w in range(5)]
    assert all(len(u) == 1 for u in units)  # one part each
    ds = ShardDataset(shards, 4, seed=0, shuffle_buffer=3, shard_images=14, streams=5)
    read = [[lab for _, lab in ds.stream(v)] for v in range(5)]
    assert all(read) and sorted(sum(read, [])) == sorted(list(range(7)) * 2)
    assert sorted(len(r) for r in read) == [2, 2, 3, 3, 4]  # shard 0 cut in 3 parts (7 = 3+2+2), shard 1 in 2
    assert sorted(lab for _, lab in ds.samples(5)) == sorted(list(range(7)) * 2)
    keep = {shards[0]: {"0_1", "0_2", "0_5"}}
    parts = [[lab for _, lab in ShardDataset([u], 4, seed=0, keep=keep).samples()] for u in split_unit(shards[0], 2)]
    assert sorted(sum(parts, [])) == [1, 2, 5] and [len(p) for p in parts] == [2, 1]


def test_worker_units_with_enough_shards_are_whole_shards():
    assert worker_units(["a", "b", "c"], 1, 2) == ["b"]
    assert worker_units(["a"], 2, 3) == [("a", 2, 3)]
    assert split_unit(("a", 1, 2), 2) == [("a", 1, 4), ("a", 3, 4)]


def test_stream_keeps_only_the_listed_keys_of_each_shard(tmp_path):
    p = tmp_path / "0.tar"
    write(p)
    keep = {str(p): {"a1", "c0"}}
    labels = sorted(lab for _, lab in ShardDataset([str(p)], 8, seed=0, shard_images=2, keep=keep).samples())
    assert labels == [0, 1]  # a1 is label 1 of its batch, c0 label 0


def test_one_worker_interleaves_its_shards():
    """Four single-class shards read by one worker without a shuffle buffer: the stream still
    mixes them (it used to read shard after shard: 12 items of one class, then the next)."""
    shards = [[c] * 12 for c in range(4)]
    out = list(stream_order([], shards, 48, random.Random(0), 0, lambda s: s, open_at_once=4))
    assert sorted(out) == sorted(sum(shards, []))
    assert max(Counter(out[:12]).values()) <= 6  # the first 12 items come from several shards
    again = list(stream_order([], shards, 48, random.Random(0), 0, lambda s: s, open_at_once=4))
    assert out == again


def test_stream_data_keeps_keys_only_for_filtered_shards(tmp_path):
    import pandas as pd

    from realfake.classifier_data import StreamData
    for name in ("0", "1"):
        write(tmp_path / f"{name}.tar")
        pd.DataFrame({"image_id": list("abcde")}).to_parquet(tmp_path / f"{name}.parquet")  # its 5 rows
    whole = [(str(tmp_path / "0.tar"), f"{k}.png", 0) for k in ("a0", "a1", "b0", "b1", "c0")]
    part = [(str(tmp_path / "1.tar"), "a0.png", 0), (str(tmp_path / "1.tar"), "c0.png", 0)]
    cols = ["shard", "member", "label"]
    pd.DataFrame(whole, columns=cols).to_parquet(tmp_path / "whole.parquet")
    pd.DataFrame(part, columns=cols).to_parquet(tmp_path / "part.parquet")
    settings = type("Settings", (), {"shuffle_buffer": 0, "streams": 2})()  # the two fields it reads
    data = StreamData(None, [str(tmp_path / "whole.parquet"), str(tmp_path / "part.parquet")], 8, 0, settings)
    assert data.dataset.keep == {str(tmp_path / "1.tar"): {"a0", "c0"}}  # shard 0 is streamed whole
    assert data.dataset.shards == [str(tmp_path / "0.tar"), str(tmp_path / "1.tar")]
    assert len(data) == 7 and len(list(data.dataset.samples())) == 7
    real = pd.DataFrame({"path": ["x.png"], "label": [1]})
    assert len(StreamData(real, [str(tmp_path / "part.parquet")], 8, 0, settings)) == 3


def test_manifest_shard_counts_reads_batches_in_first_appearance_order(tmp_path, monkeypatch):
    import pandas as pd
    import pytest

    from realfake import classifier_data as classifier
    shards = ["s2", "s0", "s2", "s1", "s0", "s0", "s3"]
    pd.DataFrame({"shard": shards, "member": [f"{i}.png" for i in range(7)]}).to_parquet(tmp_path / "m.parquet")
    monkeypatch.setattr(classifier, "MANIFEST_BATCH", 3)  # several record batches, dictionaries per batch
    assert list(classifier.manifest_shard_counts(str(tmp_path / "m.parquet")).items()) == [
        ("s2", 2), ("s0", 3), ("s1", 1), ("s3", 1)]
    assert classifier.manifest_members([str(tmp_path / "m.parquet")], {"s0", "s3"}) == {
        "s0": {"1", "4", "5"}, "s3": {"6"}}
    pd.DataFrame({"member": ["a.png"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet has no column\(s\) \['shard'\]"):
        classifier.manifest_shard_counts(str(tmp_path / "bad.parquet"))


def test_file_list_streams_like_a_list_of_pairs():
    """Real files held as Arrow strings stream in the same seeded order as a plain list of pairs."""
    from realfake.shards import FileList
    pairs = [(f"img{k}.png", k % 3) for k in range(50)]
    arrow = FileList([p for p, _ in pairs], [lab for _, lab in pairs])
    assert len(arrow) == 50 and arrow[7] == ("img7.png", 1) and list(arrow[1::4]) == pairs[1::4]
    shards = [[("s", c)] * 5 for c in range(3)]
    a = list(stream_order(pairs[2::3], shards, 15, random.Random(4), 8, lambda s: s))
    b = list(stream_order(arrow[2::3], shards, 15, random.Random(4), 8, lambda s: s))
    assert a == b and len(a) == len(pairs[2::3]) + 15


def _finished_shard(tmp_path, n=6):
    from realfake.shards import ShardWriter

    keys = [f"k{i}" for i in range(n)]
    w = ShardWriter(tmp_path / "s.tar", [keys[:3], keys[3:]], {"x": 1})
    for batch in ([keys[:3], keys[3:]]):
        w.write_batch((k, f"img{k}".encode(), i) for i, k in enumerate(batch))
    w.close()
    return tmp_path / "s.tar"


@pytest.mark.parametrize("damage", ["cut_short", "cut_at_member", "bad_header"])
def test_a_damaged_finished_shard_is_an_error_naming_it(tmp_path, damage):
    """A shard cut short, cut at a member boundary or with a damaged header is never read as a
    smaller set: the reader stops naming the file."""
    from realfake.shards import iter_shard, scan

    path = _finished_shard(tmp_path)
    members = scan(path, finished=True)
    assert len(list(iter_shard(path))) == 6 and len(members) == 12
    data = bytearray(path.read_bytes())
    if damage == "cut_short":
        data = data[: members[7][1] + 3]
    elif damage == "cut_at_member":
        data = data[: members[7][3]]
    else:
        start = members[4][1] - 512
        data[start + 148 : start + 156] = b"garbage!"  # the header checksum
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"damaged synthetic shard .*s.tar: .*after \d+ complete members"):
        list(iter_shard(path))


def test_a_member_that_does_not_decode_is_an_error_naming_shard_and_member(tmp_path):
    """A shard whose tar structure is sound but one image's bytes are not an image: every reader
    (the stream loader, in worker processes too, and read_images) stops naming the shard and the
    member, as a ValueError (one clear line from the CLI, not a traceback)."""
    path = tmp_path / "s.tar"
    w = ShardWriter(path, [["a0", "a1"]], "f")
    w.write_batch([("a0", png(10), 0), ("a1", b"\x89PNG\r\n\x1a\n not really", 1)])
    w.close()
    with pytest.raises(ValueError, match=r"corrupt or unreadable image: member a1 of shard .*s.tar"):
        read_images(path)
    with pytest.raises(ValueError, match=r"member a1 of shard .*s.tar"):
        list(ShardDataset([str(path)], size=8, seed=0, shuffle_buffer=2).samples(workers=1))
