"""Bad input on disk: truncated files, garbage, invalid UTF-8, records of the
wrong shape, duplicates, missing or damaged files, stray files; and hostile
ones: links, FIFOs, devices where files should be, JSON that tastypy could
not write back (nested too deep, integers beyond 64 bits).

A torn last batch is recovered silently, a whole one without its final
newline is kept. Everything else is a clear error naming the file (and
line) and how to fix it. Opening never changes a byte on disk, whether it
succeeds or fails. tests/test_hostile_dirs.py does the same with Hypothesis.
"""

from __future__ import annotations

import os
import shutil
import zlib

import orjson
import pytest
from crashkit import files_of, read_pod

import tastypy
from tastypy.errors import CorruptFileError, FormatVersionError, NotAPODError

JOURNAL = "journal-000000.jsonl"


@pytest.fixture
def pod_dir(tmp_path):
    """A POD of two synced batches: keys a, b, c, then d."""
    path = tmp_path / "pod"
    with tastypy.POD(path) as pod:
        pod["a"] = 1
        pod["b"] = {"x": [1, 2]}
        pod["c"] = "ç"
        pod.sync()
        pod["d"] = 4
    return path


def lines_of(path):
    return (path / JOURNAL).read_bytes().split(b"\n")[:-1]


def write_lines(path, lines, name=JOURNAL):
    (path / name).write_bytes(b"".join(line + b"\n" for line in lines))


def refuse_to_open(path, error=CorruptFileError):
    """Opening fails with ``error``, and leaves every file as it was."""
    before = files_of(path)
    with pytest.raises(error) as info:
        tastypy.POD(path)
    assert files_of(path) == before, "a failed open changed files on disk"
    return str(info.value)


# -- torn and truncated --------------------------------------------------------------


@pytest.mark.parametrize("cut", [2, 5, 12, 13])
def test_a_torn_last_batch_is_recovered_silently(pod_dir, cut):
    # The last batch is ["d",4] and {"sync":1}: cut it anywhere but at its
    # final newline (a whole batch without it is kept: see below).
    raw = (pod_dir / JOURNAL).read_bytes()
    (pod_dir / JOURNAL).write_bytes(raw[:-cut])
    assert read_pod(pod_dir) == [("a", 1), ("b", {"x": [1, 2]}), ("c", "ç")]
    # The next writer cuts the torn bytes off before appending.
    with tastypy.POD(pod_dir) as pod:
        pod["e"] = 5
    assert tastypy.check(pod_dir).ok
    assert lines_of(pod_dir)[-2:] == [b'["e",5]', b'{"sync":1}']


def test_zero_bytes_after_the_last_batch_are_a_torn_tail(pod_dir):
    # After a power loss some filesystems show the unwritten end as zeros.
    with open(pod_dir / JOURNAL, "ab") as f:
        f.write(b"\0" * 300 + b"\n" + b"\0" * 20)
    assert len(read_pod(pod_dir)) == 4


def test_a_truncated_snapshot_is_an_error_not_a_smaller_pod(pod_dir):
    from tastypy.storage.repair import compact

    compact(pod_dir)
    snapshot = pod_dir / "snapshot-000001.jsonl"
    raw = snapshot.read_bytes()
    snapshot.write_bytes(raw[: len(raw) // 2])
    message = refuse_to_open(pod_dir)
    assert str(snapshot) in message and "manifest says 4" in message
    assert "tastypy repair" in message


def test_a_missing_snapshot_is_an_error(pod_dir):
    from tastypy.storage.repair import compact

    compact(pod_dir)
    os.unlink(pod_dir / "snapshot-000001.jsonl")
    message = refuse_to_open(pod_dir)
    assert "snapshot-000001.jsonl" in message and "missing" in message
    assert "tastypy repair" in message


# -- damaged lines ------------------------------------------------------------------------

BAD_LINES = {
    "garbage": b"\x00\x13garbage\xfe",
    "invalid UTF-8 in a value": b'["e","caf\xe9"]',
    "invalid UTF-8 in a key": b'["\xff\xfe",1]',
    "truncated line": b'["e",{"x":',
    "three elements": b'["e",1,2]',
    "empty record": b"[]",
    "an object": b'{"e":1}',
    "a bare string": b'"e"',
    "a float key": b"[1.5,1]",
    "a null key": b"[null,1]",
    "a bool key": b"[true,1]",
    "a dict key": b'[{"e":1},1]',
    "a tuple key holding a float": b'[["e",1.5],1]',
    "NaN": b'["e",NaN]',
}


@pytest.mark.parametrize("bad", list(BAD_LINES.values()), ids=list(BAD_LINES))
def test_a_damaged_line_in_a_synced_batch_is_an_error_naming_it(pod_dir, bad):
    lines = lines_of(pod_dir)
    # Line 2, inside the first batch (its commit line counts the bad line).
    lines.insert(1, bad)
    lines[4] = b'{"sync":4}'
    write_lines(pod_dir, lines)
    message = refuse_to_open(pod_dir)
    assert f"{pod_dir / JOURNAL}, line 2" in message
    assert "tastypy repair" in message


def test_a_damaged_line_after_the_last_commit_is_not_taken_for_a_torn_tail(pod_dir):
    # A garbled commit line must not make a synced batch vanish silently
    # (and be cut off by the next writer).
    lines = lines_of(pod_dir)
    lines[-1] = b'{"synk":1}'
    write_lines(pod_dir, lines)
    message = refuse_to_open(pod_dir)
    assert f"{pod_dir / JOURNAL}, line 6" in message


def test_a_commit_line_with_the_wrong_count_is_an_error(pod_dir):
    lines = lines_of(pod_dir)
    del lines[1]  # a record lost from the first batch
    write_lines(pod_dir, lines)
    message = refuse_to_open(pod_dir)
    assert f"{pod_dir / JOURNAL}, line 3" in message and "lines were lost" in message


def test_duplicate_records_last_one_wins(pod_dir):
    # The same key twice is legal, in one batch and across batches: the
    # last record wins, and the key keeps the place of its first insertion.
    lines = lines_of(pod_dir)
    lines[-1:-1] = [b'["a",10]', b'["a",11]']
    lines[-1] = b'{"sync":3}'
    lines += [b'["b","again"]', b'{"sync":1}']
    write_lines(pod_dir, lines)
    assert read_pod(pod_dir) == [("a", 11), ("b", "again"), ("c", "ç"), ("d", 4)]
    assert tastypy.check(pod_dir).ok


def gzipped_pod(path):
    with tastypy.POD(path, gzipped=True) as pod:
        for key in "abc":
            pod[key] = key * 3
            pod.sync()
    journal = path / "journal-000000.jsonl.gz"
    raw = journal.read_bytes()
    d = zlib.decompressobj(31)
    d.decompress(raw)
    return journal, raw, len(raw) - len(d.unused_data)


def test_a_damaged_gzip_member_before_others_is_an_error(tmp_path):
    # Taken for a torn tail, it would be cut off with every batch after it.
    path = tmp_path / "pod"
    journal, raw, second = gzipped_pod(path)
    journal.write_bytes(raw[: second + 12] + b"\xff" * 8 + raw[second + 20 :])
    message = refuse_to_open(path)
    assert f"{journal}: the compressed data is damaged at byte {second}" in message
    assert "tastypy repair" in message


@pytest.mark.parametrize("tail", [b"", b"\0" * 4096], ids=["cut", "zero-filled"])
def test_a_torn_last_gzip_member_is_recovered_silently(tmp_path, tail):
    path = tmp_path / "pod"
    journal, raw, _ = gzipped_pod(path)
    journal.write_bytes(raw[:-7] + tail)
    assert read_pod(path) == [("a", "aaa"), ("b", "bbb")]
    assert tastypy.check(path).ok


# -- a last batch without its final newline --------------------------------------------


def test_a_whole_last_batch_without_its_final_newline_is_kept(pod_dir):
    # An editor that saves without a final newline: the last batch is whole.
    raw = (pod_dir / JOURNAL).read_bytes()
    (pod_dir / JOURNAL).write_bytes(raw[:-1])
    expected = [("a", 1), ("b", {"x": [1, 2]}), ("c", "ç"), ("d", 4)]
    assert read_pod(pod_dir) == expected
    report = tastypy.check(pod_dir)
    assert report.ok and report.records == 4, str(report)
    assert any("without a newline" in note for note in report.notes), str(report)
    # The next sync writes the newline before its own batch: nothing is cut.
    with tastypy.POD(pod_dir) as pod:
        pod["e"] = 5
    assert (pod_dir / JOURNAL).read_bytes() == raw + b'["e",5]\n{"sync":1}\n'
    assert read_pod(pod_dir) == [*expected, ("e", 5)]


def test_a_gzipped_batch_without_its_final_newline_is_kept(tmp_path):
    path = tmp_path / "pod"
    journal, raw, _ = gzipped_pod(path)
    text = b"".join(_members(raw))
    journal.write_bytes(gzip_member(text[:-1]))  # recompressed by hand, newline lost
    assert read_pod(path) == [("a", "aaa"), ("b", "bbb"), ("c", "ccc")]
    assert tastypy.check(path).ok
    with tastypy.POD(path) as pod:
        pod["d"] = "ddd"
    assert read_pod(path) == [("a", "aaa"), ("b", "bbb"), ("c", "ccc"), ("d", "ddd")]


def _members(raw):
    while raw:
        d = zlib.decompressobj(31)
        yield d.decompress(raw)
        raw = d.unused_data


def gzip_member(text):
    from tastypy.storage.journal import gzip_member as member

    return member(text)


def test_a_tracker_appends_after_a_batch_without_its_final_newline(tmp_path):
    # A tracker's tries take a quicker path (storage/tail.py); it must not
    # write its batch onto the end of the commit line either.
    path = tmp_path / "t"
    with tastypy.Tracker(path) as tracker:
        tracker.add_many(["t1", "t2", "t3"])
        tracker.mark_done("t1")
    journal = path / JOURNAL
    journal.write_bytes(journal.read_bytes()[:-1])
    with tastypy.Tracker(path) as tracker:
        assert tracker.done("t1")
        for key in tracker.try_keys():
            tracker.mark_done(key)
    report = tastypy.check(path)
    assert report.ok and not report.notes, str(report)
    with tastypy.Tracker(path) as tracker:
        assert all(tracker.done(key) for key in ("t1", "t2", "t3"))


def test_a_compaction_that_dies_after_sealing_such_a_journal_loses_nothing(pod_dir):
    from crashkit import assert_killed, run_child

    raw = (pod_dir / JOURNAL).read_bytes()
    (pod_dir / JOURNAL).write_bytes(raw[:-1])
    code = "import sys, tastypy; tastypy.POD(sys.argv[1]).compact()"
    assert_killed(run_child(code, pod_dir, fault="compact-before-manifest"))
    # The seal came after a newline of its own: the last batch is still whole.
    assert len(read_pod(pod_dir)) == 4
    assert tastypy.check(pod_dir).ok


@pytest.mark.parametrize("tail", [b'["e",5', b'["e",5]\n{"sync":1'], ids=["record", "commit"])
def test_a_compaction_that_dies_after_sealing_a_torn_journal_leaves_it_torn(pod_dir, tail):
    # The seal goes on the torn line, not after a newline of its own: that
    # would turn the torn line into a damaged one.
    from crashkit import assert_killed, run_child

    with open(pod_dir / JOURNAL, "ab") as f:
        f.write(tail)
    code = "import sys, tastypy; tastypy.POD(sys.argv[1]).compact()"
    assert_killed(run_child(code, pod_dir, fault="compact-before-manifest"))
    assert len(read_pod(pod_dir)) == 4


def test_a_commit_file_without_its_final_newline_is_whole(tmp_path):
    path = tmp_path / "pod"
    with tastypy.POD(path, storage="shared") as pod:
        pod["a"] = 1
        pod.sync()
        pod["b"] = 2
    commit = path / "commits-000000" / "0000000001.jsonl"
    commit.write_bytes(commit.read_bytes()[:-1])
    assert read_pod(path) == [("a", 1), ("b", 2)]
    assert tastypy.check(path).ok


# -- what could not be written back: deep nesting, integers beyond 64 bits ---------------


def nested(levels, kind="list"):
    """A JSON value nested ``levels`` deep (lists, or objects), as bytes."""
    if kind == "list":
        return b"[" * levels + b"1" + b"]" * levels
    return b'{"k":' * levels + b"1" + b"}" * levels


def insert_record(path, line):
    """Put ``line`` into the first batch, as line 2, and fix its commit line."""
    lines = lines_of(path)
    lines.insert(1, line)
    lines[4] = b'{"sync":4}'
    write_lines(path, lines)


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_a_value_nested_deeper_than_can_be_written_is_refused_at_load(pod_dir, kind):
    from tastypy.storage.repair import compact

    # A record [key, value] may be 254 levels deep: the value 253.
    insert_record(pod_dir, b'["deep",' + nested(254, kind) + b"]")
    message = refuse_to_open(pod_dir)
    assert f"{pod_dir / JOURNAL}, line 2" in message
    assert "'deep'" in message and "255 levels deep" in message
    assert "JSON string" in message and f"tastypy repair {pod_dir}" in message
    report = tastypy.check(pod_dir)
    assert [(p.line, "levels deep" in p.message) for p in report.problems] == [(2, True)]
    with pytest.raises(CorruptFileError, match="line 2"):
        compact(pod_dir)  # not a TypeError from the encoder
    report = tastypy.repair(pod_dir)
    assert [p.line for p in report.lost] == [2]
    assert [k for k, _ in read_pod(pod_dir)] == ["a", "b", "c", "d"]


def test_a_value_nested_deeper_than_orjson_reads_is_refused_naming_it(pod_dir):
    insert_record(pod_dir, b'["deeper",' + nested(1100) + b"]")
    message = refuse_to_open(pod_dir)
    assert f"{pod_dir / JOURNAL}, line 2" in message and "1024 levels" in message


def test_a_value_as_deep_as_can_be_written_loads_and_round_trips(pod_dir):
    insert_record(pod_dir, b'["deep",' + nested(253) + b"]")
    with tastypy.POD(pod_dir) as pod:
        value = pod["deep"]  # a read marks the key dirty: the sync writes it back
        pod["e"] = 5
        pod.sync()
        pod.compact()
    with tastypy.POD(pod_dir) as pod:
        assert pod["deep"] == value
    assert tastypy.check(pod_dir).ok


BIG = {
    "2**64": 2**64,
    "-2**63-1": -(2**63) - 1,
    "10**30": 10**30,
    "as a float-looking exponentless int": 123456789012345678901234567890,
}


@pytest.mark.parametrize("number", list(BIG.values()), ids=list(BIG))
def test_an_integer_beyond_64_bits_is_refused_at_load_not_rounded(pod_dir, number):
    from tastypy.storage.repair import compact

    insert_record(pod_dir, b'["big",{"n":%d}]' % number)
    message = refuse_to_open(pod_dir)
    assert f"{pod_dir / JOURNAL}, line 2" in message
    assert f"integer {number} in the value of key 'big'" in message
    assert f'("{number}")' in message and f"tastypy repair {pod_dir}" in message
    report = tastypy.check(pod_dir)
    assert [p.line for p in report.problems] == [2] and str(number) in str(report)
    with pytest.raises(CorruptFileError, match="line 2"):
        compact(pod_dir)
    report = tastypy.repair(pod_dir)
    assert [p.line for p in report.lost] == [2]
    assert str(number) in (pod_dir / report.aside / JOURNAL).read_text()  # kept aside
    assert "big" not in dict(read_pod(pod_dir))


def test_an_integer_key_beyond_64_bits_is_named_as_the_integer_it_is(pod_dir):
    insert_record(pod_dir, b"[18446744073709551616,1]")
    message = refuse_to_open(pod_dir)
    assert "integer 18446744073709551616 as its key" in message
    assert "1.8446744073709552e+19 and" in message  # what it would have become
    assert "key 1.8" not in message and "float key" not in message


@pytest.mark.parametrize("number", [2**64 - 1, -(2**63), 2**63, 10**19])
def test_integers_within_64_bits_load_exactly_and_survive_compaction(pod_dir, number):
    insert_record(pod_dir, b'["n",[%d]]' % number)
    with tastypy.POD(pod_dir) as pod:
        assert pod["n"] == [number] and type(pod["n"][0]) is int
        pod.compact()
    assert dict(read_pod(pod_dir))["n"] == [number]


def test_digits_in_strings_and_floats_are_no_integers(pod_dir):
    # Long digit runs that are not JSON integers load as they are.
    line = b'["s",["12345678901234567890123","a 98765432109876543210",1234567890123456789.5]]'
    insert_record(pod_dir, line)
    assert dict(read_pod(pod_dir))["s"] == orjson.loads(line)[1]
    assert tastypy.check(pod_dir).ok


def test_a_batch_appended_by_another_tool_is_checked_too(pod_dir):
    with tastypy.POD(pod_dir) as pod:
        with open(pod_dir / JOURNAL, "ab") as f:
            f.write(b'["e",18446744073709551616]\n{"sync":1}\n')
        with pytest.raises(CorruptFileError) as info:
            pod.refresh()
        assert f"{pod_dir / JOURNAL}, line 7" in str(info.value)
        assert "18446744073709551616" in str(info.value)
        with open(pod_dir / JOURNAL, "r+b") as f:  # taken back, for the close
            f.truncate(len(f.read()) - len(b'["e",18446744073709551616]\n{"sync":1}\n'))


@pytest.mark.parametrize(
    "line, named",
    [
        (b'["t3",{"_done":false,"_tries":18446744073709551616}]', "18446744073709551616"),
        (b'["t3",{"_done":fals,"_tries":1}]', "not valid JSON"),
    ],
    ids=["rounded integer", "damaged line"],
)
def test_a_tracker_takes_in_no_rounded_integer_from_another_tool(tmp_path, line, named):
    path = tmp_path / "t"
    with tastypy.Tracker(path) as tracker:
        tracker.add_many(["t1", "t2"])
        tracker.sync()
        good = (path / JOURNAL).read_bytes()
        with open(path / JOURNAL, "ab") as f:
            f.write(line + b'\n{"sync":1}\n')
        # Another process's lines are filed unparsed as a try reads them;
        # the one that cannot be written back is refused when it would be
        # taken in: by its key's try, and by every read of everything.
        assert tracker.try_it("t1")
        for read in (lambda: tracker.try_it("t3"), lambda: len(tracker), tracker.num_done):
            with pytest.raises(CorruptFileError) as info:
                read()
            assert f"{path / JOURNAL}, line 4" in str(info.value)
            assert named in str(info.value)
        (path / JOURNAL).write_bytes(good)  # taken back, for the close
    with tastypy.Tracker(path) as tracker:
        assert sorted(tracker) == ["t1", "t2"]


def test_the_shared_store_refuses_them_in_a_commit_file(tmp_path):
    path = tmp_path / "pod"
    with tastypy.POD(path, storage="shared") as pod:
        pod["a"] = 1
    commit = path / "commits-000000" / "0000000000.jsonl"
    commit.write_bytes(b'["a",18446744073709551616]\n{"sync":1}\n')
    message = refuse_to_open(path)
    assert f"{commit}, line 1" in message and f"tastypy repair {path}" in message


# -- the manifest ----------------------------------------------------------------------


def test_a_missing_manifest_with_data_files_points_to_repair(pod_dir):
    os.unlink(pod_dir / "manifest.json")
    message = refuse_to_open(pod_dir)
    assert "manifest.json is missing" in message and JOURNAL in message
    assert f"tastypy repair {pod_dir}" in message


MANIFESTS = {
    "not JSON": b'{"format": "tastypy", "vers',
    "not an object": b"[1, 2]",
    "not tastypy's": orjson.dumps({"format": "other", "version": 1}),
    "without a journal": orjson.dumps(
        {"format": "tastypy", "version": 1, "generation": 0, "kind": "pod"}
    ),
    "naming a file outside": orjson.dumps(
        {"format": "tastypy", "version": 1, "generation": 0, "kind": "pod", "journal": "../x.jsonl"}
    ),
    "naming an absolute path": orjson.dumps(
        {
            "format": "tastypy",
            "version": 1,
            "generation": 0,
            "kind": "pod",
            "journal": "/etc/passwd",
        }
    ),
    "with a bad generation": orjson.dumps(
        {"format": "tastypy", "version": 1, "generation": "0", "kind": "pod", "journal": JOURNAL}
    ),
    "empty": b"",
}


@pytest.mark.parametrize("content", list(MANIFESTS.values()), ids=list(MANIFESTS))
def test_a_corrupt_manifest_is_an_error_pointing_to_repair(pod_dir, content):
    (pod_dir / "manifest.json").write_bytes(content)
    message = refuse_to_open(pod_dir)
    assert str(pod_dir / "manifest.json") in message and "tastypy repair" in message


def test_a_manifest_from_a_newer_version_asks_for_an_upgrade(pod_dir):
    manifest = orjson.loads((pod_dir / "manifest.json").read_bytes())
    manifest["version"] = 99
    (pod_dir / "manifest.json").write_bytes(orjson.dumps(manifest))
    message = refuse_to_open(pod_dir, FormatVersionError)
    assert "version 99" in message and "Upgrade tastypy" in message
    # Repair refuses too: it must never rewrite a format it does not know.
    with pytest.raises(FormatVersionError):
        tastypy.repair(pod_dir)
    assert not tastypy.check(pod_dir).ok


def test_a_directory_of_unrelated_files_is_not_a_pod(tmp_path):
    path = tmp_path / "other"
    path.mkdir()
    (path / "notes.txt").write_text("hello")
    message = refuse_to_open(path, NotAPODError)
    assert "notes.txt" in message


# -- stray files ----------------------------------------------------------------------------

STRAYS = {
    "7.json.tmp": b"{}",
    "journal-000000.jsonl~": b"editor backup\n",
    ".journal-000000.jsonl.swp": b"\x00vim swap",
    "snapshot-000000.jsonl.bak": b"backup",
    "manifest.json.1234.tmp": b'{"format": "tas',
    "snapshot-000007.jsonl.99.tmp": b'["half",',
    "notes.txt": "my notes ✓".encode(),
}


def test_stray_files_are_ignored_and_never_deleted(pod_dir):
    for name, content in STRAYS.items():
        (pod_dir / name).write_bytes(content)
    expected = [("a", 1), ("b", {"x": [1, 2]}), ("c", "ç"), ("d", 4)]
    assert read_pod(pod_dir) == expected
    report = tastypy.check(pod_dir)
    assert report.ok, str(report)
    assert all(any(name in note for note in report.notes) for name in STRAYS)

    with tastypy.POD(pod_dir) as pod:
        pod["e"] = 5
        pod.compact()
    names = set(os.listdir(pod_dir))
    # Our own temporary files are cleaned by the compaction; a user's files
    # (backups, swap files, notes) are never touched.
    mine = {"manifest.json.1234.tmp", "snapshot-000007.jsonl.99.tmp"}
    for name, content in STRAYS.items():
        if name not in mine:
            assert (pod_dir / name).read_bytes() == content
    assert not names & mine
    assert read_pod(pod_dir) == [*expected, ("e", 5)]


def test_a_temporary_manifest_left_by_a_crash_at_creation_is_ignored(tmp_path):
    path = tmp_path / "pod"
    path.mkdir()
    (path / "tastypy.lock").write_bytes(b"")
    (path / "manifest.json.4242.tmp").write_bytes(b'{"format": "tas')
    with tastypy.POD(path) as pod:
        pod["a"] = 1
    assert read_pod(path) == [("a", 1)]


# -- hostile directories ---------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path):
    """A file outside the POD, which links inside it must never let us write."""
    target = tmp_path / "outside.txt"
    target.write_bytes(b"precious\n")
    return target


#: What a planted link points to: another user's file, shaped like a journal
#: so that a reader following the link would load it.
SECRET = b'["secret","of another user"]\n{"sync":1}\n'


def assert_secret_not_copied(path):
    """No file under ``path`` (links aside, never followed) holds SECRET."""
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as f:
                    assert b"secret" not in f.read(), f"{full} holds a copy of a file outside"


def test_a_symlinked_journal_is_never_read_through(pod_dir, outside):
    outside.write_bytes(SECRET)
    os.unlink(pod_dir / JOURNAL)
    os.symlink(outside, pod_dir / JOURNAL)
    message = refuse_to_open(pod_dir, tastypy.StorageError)
    assert f"{pod_dir / JOURNAL}: it is a symbolic link" in message
    assert "secret" not in message  # nothing of the target is quoted
    report = tastypy.check(pod_dir)
    assert not report.ok and "symbolic link" in str(report) and "secret" not in str(report)
    # repair (which the error may lead to) sets the link aside, unread.
    report = tastypy.repair(pod_dir)
    assert "secret" not in str(report)
    assert os.path.islink(pod_dir / report.aside / JOURNAL)
    assert_secret_not_copied(pod_dir)
    assert outside.read_bytes() == SECRET
    assert read_pod(pod_dir) == []  # the records were the journal the link replaced
    assert tastypy.check(pod_dir).ok


def test_a_symlinked_manifest_is_refused_and_repair_sets_the_link_aside(pod_dir, outside):
    from tastypy.storage.repair import compact

    manifest = (pod_dir / "manifest.json").read_bytes()
    linked = outside.with_name("manifest-outside.json")
    linked.write_bytes(manifest)
    os.unlink(pod_dir / "manifest.json")
    os.symlink(linked, pod_dir / "manifest.json")
    message = refuse_to_open(pod_dir, tastypy.StorageError)
    assert f"{pod_dir / 'manifest.json'}: it is a symbolic link" in message
    with pytest.raises(tastypy.StorageError, match="symbolic link"):
        compact(pod_dir)
    report = tastypy.repair(pod_dir)
    assert os.path.islink(os.path.join(report.aside, "manifest.json"))
    assert not os.path.islink(pod_dir / "manifest.json")
    assert linked.read_bytes() == manifest
    assert len(read_pod(pod_dir)) == 4  # rebuilt from the journal


def test_a_planted_link_as_a_temporary_file_is_not_written_through(pod_dir, outside):
    from tastypy.storage.repair import compact

    os.symlink(outside, pod_dir / f"snapshot-000001.jsonl.{os.getpid()}.tmp")
    compact(pod_dir)
    assert outside.read_bytes() == b"precious\n"
    assert len(read_pod(pod_dir)) == 4


def test_a_journal_that_is_a_symlink_is_never_written_through(pod_dir, outside):
    # Planted after the POD was opened: the next sync refuses it, clearly.
    with tastypy.POD(pod_dir) as pod:
        os.replace(pod_dir / JOURNAL, outside)
        os.symlink(outside, pod_dir / JOURNAL)
        content = outside.read_bytes()
        pod["e"] = 5
        with pytest.raises(tastypy.StorageError) as info:
            pod.sync()
        assert str(pod_dir / JOURNAL) in str(info.value)
        assert "symbolic link" in str(info.value)
        assert outside.read_bytes() == content
        os.unlink(pod_dir / JOURNAL)  # put the journal back, for the close
        os.replace(outside, pod_dir / JOURNAL)
        pod.revert()
    assert len(read_pod(pod_dir)) == 4


PARTED = """
import sys
import tastypy

with tastypy.Tracker(sys.argv[1]) as tracker:
    calls = (("total", lambda: tracker.stats()["total"]), ("keys", lambda: len(list(tracker))))
    for what, call in calls:
        try:
            print(what, call())
        except tastypy.TastypyError as exc:
            print(what, "refused:", exc)
"""


def test_a_parted_tracker_never_follows_a_part_or_a_summary_planted_as_a_link(tmp_path):
    import shutil

    from conftest import run_python

    path, other = tmp_path / "t", tmp_path / "other"
    for where, prefix in ((path, "k"), (other, "x")):
        with tastypy.Tracker(where, shards=4) as tracker:
            tracker.add_many([f"{prefix}{i}" for i in range(40)])
    # Part 1 made a link to another tracker's part; a summary made a FIFO,
    # another a link to that tracker's summary.
    shutil.rmtree(path / "part-00001")
    os.symlink(other / "part-00001", path / "part-00001")
    os.unlink(path / "summaries" / "part-00002.json")
    os.mkfifo(path / "summaries" / "part-00002.json")
    os.unlink(path / "summaries" / "part-00003.json")
    os.symlink(other / "summaries" / "part-00003.json", path / "summaries" / "part-00003.json")
    before = {p: p.read_bytes() for p in other.rglob("*") if p.is_file()}
    result = run_python(PARTED, path, timeout=60)
    assert result.returncode == 0, result.stderr
    total, keys = result.stdout.splitlines()
    # The counts come from this tracker's own summaries (one stale, one
    # taken afresh where the FIFO and the link stand); the part is refused.
    assert total == "total 40"
    assert keys.startswith(f"keys refused: cannot open the part {path / 'part-00001'}: it is a ")
    assert "symbolic link" in keys
    assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file()} == before


ODD_OPEN = """
import resource, sys
import tastypy

# Were a file read without end (a link to /dev/zero), fail fast, not the machine.
resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))
path = sys.argv[1]
for what in ("open", "check", "repair"):
    try:
        if what == "open":
            tastypy.POD(path).close()
            print("open: opened")
        elif what == "check":
            report = tastypy.check(path)
            print("check:", "ok" if report.ok else "problems", repr(str(report)))
        else:
            print("repair:", repr(str(tastypy.repair(path))))
    except tastypy.TastypyError as exc:
        print(what + ": refused", repr(str(exc)))
"""


def plant(path, kind, outside):
    """Put an odd kind of file at ``path`` (which does not exist)."""
    import socket
    import stat

    if kind == "FIFO":
        os.mkfifo(path)
    elif kind == "link to /dev/zero":
        os.symlink("/dev/zero", path)
    elif kind == "character device":
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    elif kind == "directory":
        os.mkdir(path)
        (path / "inside").write_bytes(b"x")
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "dangling link":
        os.symlink(outside.with_name("nothing-there"), path)
    else:
        raise ValueError(kind)


ODD_KINDS = ["FIFO", "link to /dev/zero", "directory", "socket", "dangling link"]
if os.geteuid() == 0:  # only root may make a device
    ODD_KINDS.append("character device")
ODD_NAMES = ["journal-000001.jsonl", "snapshot-000001.jsonl", "manifest.json"]
#: How each kind is named in the error.
KIND_WORDS = {
    "FIFO": "a FIFO",
    "link to /dev/zero": "a symbolic link",
    "character device": "a character device",
    "directory": "a directory",
    "socket": "a socket",
    "dangling link": "a symbolic link",
}


@pytest.fixture
def compacted_dir(tmp_path):
    """A POD with a snapshot (a, b) and a journal (c) of generation 1."""
    path = tmp_path / "pod"
    with tastypy.POD(path) as pod:
        pod["a"] = 1
        pod["b"] = 2
        pod.compact()
        pod["c"] = 3
    return path


@pytest.mark.parametrize("name", ODD_NAMES)
@pytest.mark.parametrize("kind", ODD_KINDS)
def test_an_odd_file_in_place_of_a_pod_file_is_refused_without_hanging(
    compacted_dir, outside, kind, name
):
    os.unlink(compacted_dir / name)
    plant(compacted_dir / name, kind, outside)
    from conftest import run_python

    # A FIFO opened for reading waits for a writer for ever; /dev/zero never
    # ends: the time limit turns a hang into a failure.
    result = run_python(ODD_OPEN, compacted_dir, timeout=60)
    assert result.returncode == 0, result.stderr
    opened, checked, repaired = result.stdout.splitlines()
    words = KIND_WORDS[kind]
    assert opened.startswith("open: refused") and f"{compacted_dir / name}: it is {words}" in opened
    assert checked.startswith("check: problems") and words in checked
    assert repaired.startswith("repair:") and "repaired" in repaired
    # The name is set aside as it is, and the POD holds what the rest holds.
    (aside,) = [n for n in os.listdir(compacted_dir) if n.startswith("repair-")]
    assert os.path.lexists(compacted_dir / aside / name)
    kept = {"a": 1, "b": 2, "c": 3}
    if name == "journal-000001.jsonl":
        del kept["c"]
    elif name == "snapshot-000001.jsonl":
        del kept["a"], kept["b"]
    assert dict(read_pod(compacted_dir)) == kept
    assert tastypy.check(compacted_dir).ok


def test_a_dangling_symlink_as_lock_file_creates_nothing_outside(pod_dir, tmp_path):
    os.unlink(pod_dir / "tastypy.lock")
    nowhere = tmp_path / "created-by-us"
    os.symlink(nowhere, pod_dir / "tastypy.lock")
    with pytest.raises(tastypy.StorageError) as info:
        tastypy.POD(pod_dir)
    assert "tastypy.lock" in str(info.value)
    assert not nowhere.exists()


UMASK = """
import os, stat, sys
import tastypy

os.umask(int(sys.argv[2], 8))
base = sys.argv[1]
for lock in ("posix", "soft"):
    path = os.path.join(base, lock)
    with tastypy.POD(path, lock=lock) as pod:
        pod["a"] = 1
        pod.sync()
        pod.compact()
        pod["b"] = 2
    with open(os.path.join(path, "journal-000001.jsonl"), "ab") as f:
        f.write(b"garbage\\n")
    tastypy.repair(path)
modes = {}
for root, dirs, files in os.walk(base):
    for name in dirs + files:
        full = os.path.join(root, name)
        modes[os.path.relpath(full, base)] = stat.S_IMODE(os.lstat(full).st_mode)
print(modes)
"""


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_follow_the_umask_and_are_never_world_writable(tmp_path, umask):
    import ast

    from conftest import run_python

    proc = run_python(UMASK, tmp_path, oct(umask))
    assert proc.returncode == 0, proc.stderr
    modes = ast.literal_eval(proc.stdout)
    assert any(name.endswith("snapshot-000002.jsonl") for name in modes)
    assert any("repair-" in name for name in modes)
    for name, mode in modes.items():
        assert mode & umask == 0, f"{name} has mode {oct(mode)} despite umask {oct(umask)}"
        assert mode & 0o002 == 0, f"{name} is world-writable"


def test_nothing_read_from_disk_is_executed(pod_dir, tmp_path):
    # Values that would run code if they were ever evaluated or unpickled.
    flag = tmp_path / "ran"
    payloads = [
        f"__import__('os').system('touch {flag}')",
        "cos\nsystem\n(S'touch ran'\ntR.",
        {"__reduce__": ["os.system", [f"touch {flag}"]], "py/object": "os.system"},
    ]
    lines = (pod_dir / JOURNAL).read_bytes()
    for i, payload in enumerate(payloads):
        lines += orjson.dumps([f"p{i}", payload]) + b"\n"
    (pod_dir / JOURNAL).write_bytes(lines + b'{"sync":3}\n')
    items = dict(read_pod(pod_dir))
    assert [items[f"p{i}"] for i in range(3)] == payloads
    assert tastypy.check(pod_dir).ok
    assert not flag.exists()


def test_the_library_has_no_way_to_run_code_from_data():
    import tastypy as package

    root = os.path.dirname(package.__file__)
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    source = f.read()
                for word in ("import pickle", "import marshal", "import shelve", "eval(", "exec("):
                    assert word not in source, f"{name} uses {word}"


@pytest.mark.parametrize("lock", ["soft", "posix"])
def test_a_lock_work_directory_planted_as_a_link_gets_no_file_made_through_it(tmp_path, lock):
    path = tmp_path / "pod"
    with tastypy.POD(path, lock=lock) as pod:
        pod["a"] = 1
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(path / "tastypy.lock.d", ignore_errors=True)
    os.symlink(elsewhere, path / "tastypy.lock.d")
    try:
        with tastypy.POD(path, lock="soft") as pod:
            pod["b"] = 2
    except tastypy.StorageError as exc:
        assert "tastypy.lock.d: it is a symbolic link" in str(exc)
    else:
        raise AssertionError("a soft lock worked through a linked work directory")
    assert os.listdir(elsewhere) == []
