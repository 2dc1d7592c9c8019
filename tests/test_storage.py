"""The files of a POD: journal framing, torn tails, gzip members, compaction,
reading only what is new."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

import pytest

from tastypy import POD
from tastypy.errors import CorruptFileError
from tastypy.storage import journal, layout
from tastypy.storage.compaction import _COMPACT_MIN_STALE
from tastypy.storage.store import Store


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def journal_file(path: Path) -> Path:
    return path / manifest(path)["journal"]


def lines(path: Path) -> list[str]:
    return journal_file(path).read_text().splitlines()


# -- framing -----------------------------------------------------------------


def test_a_new_pod_is_a_manifest_and_nothing_else(tmp_path):
    with POD(tmp_path / "p"):
        pass
    names = sorted(os.listdir(tmp_path / "p"))
    assert names == ["manifest.json", "tastypy.lock"]
    m = manifest(tmp_path / "p")
    assert m["format"] == "tastypy" and m["version"] == layout.JOURNAL_VERSION
    assert m["kind"] == "pod" and m["generation"] == 0
    assert m["journal"] == "journal-000000.jsonl" and m["snapshot"] is None


def test_each_sync_is_one_batch_of_records_and_a_commit_line(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["a"] = 1
        pod[("t", 2)] = {"x": [1, 2]}
        pod.sync()
        del pod["a"]
        pod["b"] = "two"
    assert lines(p) == [
        '["a",1]',
        '[["t",2],{"x":[1,2]}]',
        '{"sync":2}',
        '["a"]',
        '["b","two"]',
        '{"sync":2}',
    ]


def test_an_empty_sync_writes_nothing(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["a"] = 1
        pod.sync()
        size = journal_file(p).stat().st_size
        pod.sync()
        pod.sync()
        assert journal_file(p).stat().st_size == size


def test_records_are_utf8_text_not_escapes(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["ключ"] = "☃"
    assert journal_file(p).read_bytes().decode("utf-8").splitlines()[0] == '["ключ","☃"]'


# -- torn tails -----------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [b'["c",3', b'["c",3]\n', b'["c",3]\n{"sync":', b'["c",3]\n{"sync":1', b"\x00\x00\x00"],
    ids=["half-record", "no-commit", "half-commit", "commit-without-brace", "zeros"],
)
def test_torn_tail_is_ignored_and_cut_by_the_next_writer(tmp_path, tail):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["a"] = 1
        pod["b"] = 2
    good = journal_file(p).read_bytes()
    with open(journal_file(p), "ab") as f:
        f.write(tail)
    with POD(p) as pod:
        assert dict(pod) == {"a": 1, "b": 2}  # silently recovered, rest kept
        pod["d"] = 4
    data = journal_file(p).read_bytes()
    assert data == good + b'["d",4]\n{"sync":1}\n'  # the tail is gone
    with POD(p) as pod:
        assert dict(pod) == {"a": 1, "b": 2, "d": 4}


def test_a_whole_batch_without_its_final_newline_is_kept_and_the_writer_adds_it(tmp_path):
    # An editor saving the journal drops the final newline: the batch is
    # whole (its commit line counts it), so it is no torn tail.
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["a"] = 1
        pod.sync()
        pod["b"] = 2
    good = journal_file(p).read_bytes()
    journal_file(p).write_bytes(good[:-1])
    with POD(p) as pod:
        assert dict(pod) == {"a": 1, "b": 2}
        pod.refresh()  # one byte short of what was read: nothing new, not a replacement
        pod["d"] = 4
    assert journal_file(p).read_bytes() == good + b'["d",4]\n{"sync":1}\n'


def test_a_reader_never_truncates(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["a"] = 1
    with open(journal_file(p), "ab") as f:
        f.write(b'["c",3]\n')
    size = journal_file(p).stat().st_size
    with POD(p) as pod:
        pod.refresh()
        assert pod["a"] == 1
    assert journal_file(p).stat().st_size == size


# -- commit counts ---------------------------------------------------------------


def test_a_commit_line_with_a_wrong_count_is_corruption(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["a"] = 1
        pod["b"] = 2
        pod.sync()
        pod["c"] = 3
    text = journal_file(p).read_text().replace('{"sync":2}', '{"sync":3}')
    journal_file(p).write_text(text)
    with pytest.raises(CorruptFileError) as info:
        POD(p)
    assert info.value.path == str(journal_file(p))
    assert info.value.line == 3
    assert "line 3" in str(info.value) and "tastypy repair" in str(info.value)


def test_a_lost_line_inside_a_batch_is_detected(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod.update({"a": 1, "b": 2, "c": 3})
        pod.sync()
        pod["d"] = 4
    kept = [line for line in lines(p) if line != '["b",2]']
    journal_file(p).write_text("\n".join(kept) + "\n")
    with pytest.raises(CorruptFileError, match="counts 3 records but the batch before it has 2"):
        POD(p)


# -- gzip --------------------------------------------------------------------------


def test_gzipped_journal_is_one_gzip_member_per_sync(tmp_path):
    p = tmp_path / "p"
    with POD(p, gzipped=True) as pod:
        pod["a"] = 1
        pod.sync()
        pod["b"] = [2]
    assert manifest(p)["gzipped"] is True
    assert manifest(p)["journal"] == "journal-000000.jsonl.gz"
    raw = journal_file(p).read_bytes()
    # gzip (and zcat) read the concatenated members as one text
    assert gzip.decompress(raw).decode().splitlines() == [
        '["a",1]',
        '{"sync":1}',
        '["b",[2]]',
        '{"sync":1}',
    ]
    first = zlib.decompressobj(31)
    assert first.decompress(raw) == b'["a",1]\n{"sync":1}\n'
    assert first.unused_data[:2] == b"\x1f\x8b"  # the second member starts there


def test_gzipped_flag_is_kept_by_the_manifest(tmp_path):
    p = tmp_path / "p"
    with POD(p, gzipped=True) as pod:
        pod["a"] = 1
    with POD(p) as pod:  # gzipped not repeated: the manifest says so
        pod["b"] = 2
    with POD(p, gzipped=False) as pod:
        assert dict(pod) == {"a": 1, "b": 2}
    assert gzip.decompress(journal_file(p).read_bytes()).count(b'{"sync":1}') == 2


@pytest.mark.parametrize("cut", [1, 10, -8, -1])
def test_torn_gzip_member_is_ignored_and_cut(tmp_path, cut):
    p = tmp_path / "p"
    with POD(p, gzipped=True) as pod:
        pod["a"] = 1
    good = journal_file(p).read_bytes()
    member = journal.frame(b'["b",2]\n', 1, True)
    with open(journal_file(p), "ab") as f:
        f.write(member[:cut])
    with POD(p) as pod:
        assert dict(pod) == {"a": 1}
        pod["c"] = 3
    raw = journal_file(p).read_bytes()
    assert raw.startswith(good)
    assert gzip.decompress(raw) == b'["a",1]\n{"sync":1}\n["c",3]\n{"sync":1}\n'


def test_whole_gzip_member_without_commit_line_is_a_torn_tail(tmp_path):
    p = tmp_path / "p"
    with POD(p, gzipped=True) as pod:
        pod["a"] = 1
    with open(journal_file(p), "ab") as f:
        f.write(gzip.compress(b'["b",2]\n'))
    with POD(p) as pod:
        assert dict(pod) == {"a": 1}


# -- compaction -------------------------------------------------------------------


def test_compaction_keeps_order_and_content_and_starts_a_new_generation(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        for i in range(50):
            pod[f"k{i}"] = i
        pod[(1, "t")] = {"nested": [1]}
        for i in range(0, 50, 2):
            pod[f"k{i}"] = -i  # stale records
        for i in range(0, 50, 5):
            del pod[f"k{i}"]
        pod["k0"] = "re-inserted last"
        expected = list(pod.items())
        pod.compact()
        assert list(pod.items()) == expected
        pod["after"] = 1
        expected.append(("after", 1))
    m = manifest(p)
    assert m["generation"] == 1
    assert m["snapshot"] == "snapshot-000001.jsonl"
    assert m["snapshot_records"] == len(expected) - 1
    assert sorted(os.listdir(p)) == [
        "journal-000001.jsonl",
        "manifest.json",
        "snapshot-000001.jsonl",
        "tastypy.lock",
    ]
    snap = (p / "snapshot-000001.jsonl").read_text().splitlines()
    assert snap[0] == '["k1",1]' and snap[-1] == f'{{"sync":{len(expected) - 1}}}'
    with POD(p) as pod:
        assert list(pod.items()) == expected


def test_compaction_runs_by_itself_when_stale_records_dominate(tmp_path):
    p = tmp_path / "p"
    n = _COMPACT_MIN_STALE // 2 + 10
    with POD(p) as pod:
        for round_ in range(4):
            for i in range(n):
                pod[i] = round_
            pod.sync()
    m = manifest(p)
    assert m["generation"] >= 1
    assert m["snapshot_records"] <= n
    with POD(p) as pod:
        assert list(pod) == list(range(n))
        assert set(pod.values()) == {3}


def test_compacted_gzipped_pod_round_trips(tmp_path):
    p = tmp_path / "p"
    with POD(p, gzipped=True) as pod:
        pod.update({str(i): [i] for i in range(100)})
        pod.compact()
        pod["x"] = 1
    assert manifest(p)["snapshot"] == "snapshot-000001.jsonl.gz"
    with POD(p) as pod:
        assert len(pod) == 101 and pod["99"] == [99] and pod["x"] == 1


def test_empty_pod_compacts_to_no_snapshot(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["a"] = 1
        pod.sync()
        del pod["a"]
        pod.compact()
    assert manifest(p)["snapshot"] is None
    with POD(p) as pod:
        assert len(pod) == 0


def test_a_second_handle_follows_a_compaction(tmp_path):
    p = tmp_path / "p"
    with POD(p) as a, POD(p) as b:
        a.update({"x": 1, "y": 2})
        a.sync()
        b.refresh()
        b["z"] = 3  # unsynced in b
        a["x"] = 10
        a.compact()
        b.refresh()
        assert dict(b) == {"x": 10, "y": 2, "z": 3}
        b.sync()
        a.refresh()
        assert dict(a) == {"x": 10, "y": 2, "z": 3}


# -- reading only what is new ------------------------------------------------------


def test_refresh_reads_only_what_was_appended(tmp_path):
    p = tmp_path / "p"
    with POD(p) as writer, POD(p) as reader:
        writer["a"] = "x" * 20
        writer.sync()
        reader.refresh()
        assert reader["a"] == "x" * 20
        # Damage what the reader has already read, keeping the length: a
        # reader that re-read the file would now fail.
        path = journal_file(p)
        data = path.read_bytes()
        path.write_bytes(data.replace(b"x" * 20, b"\x00" * 20))
        writer["b"] = 2
        writer.sync()
        reader.refresh()
        assert reader["b"] == 2 and reader["a"] == "x" * 20
        assert reader._store.journal_pos == path.stat().st_size
    with pytest.raises(CorruptFileError):
        POD(p)


def test_a_journal_cut_behind_a_readers_back_is_read_again(tmp_path):
    p = tmp_path / "p"
    with POD(p) as a, POD(p) as b:
        a["x"] = 1
        a.sync()
        a["y"] = 2
        a.sync()
        b.refresh()
        # Someone restores the journal from before the second sync.
        text = journal_file(p).read_text().splitlines()
        journal_file(p).write_text("\n".join(text[:2]) + "\n")
        b["z"] = 3
        b.sync()
    with POD(p) as pod:
        assert dict(pod) == {"x": 1, "z": 3}
    assert b"\x00" not in journal_file(p).read_bytes()


# -- vanished files ---------------------------------------------------------------------


def test_missing_snapshot_listed_in_the_manifest_is_an_error(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["a"] = 1
        pod.compact()
    (p / "snapshot-000001.jsonl").unlink()
    with pytest.raises(CorruptFileError, match="listed in .*manifest.json but missing"):
        POD(p)


def test_missing_journal_of_the_current_generation_is_empty(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod["a"] = 1
        pod.compact()
    assert not journal_file(p).exists()
    with POD(p) as pod:
        assert dict(pod) == {"a": 1}


def test_store_load_starts_over_when_a_compaction_removed_its_file(tmp_path):
    p = tmp_path / "p"
    with POD(p) as pod:
        pod.update({"a": 1, "b": 2})
        pod.compact()
    store = Store(p)
    old_manifest = store._manifest()
    with POD(p) as other:
        other["c"] = 3
        other.compact()  # generation 2; snapshot-000001 is gone
    # A reader that read the old manifest just before the compaction:
    with pytest.raises(Exception) as info:
        store._load(old_manifest)
    assert "snapshot-000001" in str(info.value.args[0])
    with store.locked():
        assert store.load() == {"a": 1, "b": 2, "c": 3}
    store.close()


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_writer_with_a_stale_size_never_cuts_others_batches(tmp_path, gzipped):
    # On NFS a cached size can make a writer believe the journal ends where
    # it last read it. Appending there would cut other hosts' synced
    # batches; the append must refuse instead and leave the file whole.
    path = tmp_path / "p.pod"
    with POD(path, gzipped=gzipped) as pod:
        pod["a"] = 1
    stale = Store(path)
    with stale.locked():
        stale.load()
    with POD(path) as other:
        other["b"] = 2
    before = journal_file(path).read_bytes() if not gzipped else None
    jpath = str(next(path.glob("journal-*")))
    size_before = os.path.getsize(jpath)
    batch = journal.frame(b'["c",3]\n', 1, gzipped)
    with pytest.raises(OSError, match="stale size"):
        journal.append(jpath, stale.journal_pos, batch, lambda point: None)
    assert os.path.getsize(jpath) == size_before
    if before is not None:
        assert journal_file(path).read_bytes() == before
    with POD(path) as pod:
        assert pod == {"a": 1, "b": 2}
