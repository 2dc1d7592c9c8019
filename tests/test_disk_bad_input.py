"""Bad input on disk: truncated files, garbage, invalid UTF-8, records of the
wrong shape, duplicates, missing or damaged files, stray files.

A torn last batch is recovered silently. Everything else is a clear error
naming the file (and line) and how to fix it. Opening never changes a byte
on disk, whether it succeeds or fails.
"""

from __future__ import annotations

import os
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


def test_a_symlinked_journal_is_read_but_never_written_through(pod_dir, outside):
    os.replace(pod_dir / JOURNAL, outside)
    os.symlink(outside, pod_dir / JOURNAL)
    # Reading through it is harmless; writing is refused, clearly.
    assert len(read_pod(pod_dir)) == 4
    content = outside.read_bytes()
    with tastypy.POD(pod_dir) as pod:
        pod["e"] = 5
        with pytest.raises(tastypy.StorageError) as info:
            pod.sync()
        assert str(pod_dir / JOURNAL) in str(info.value)
        assert "symbolic link" in str(info.value)
        pod.revert()
    assert outside.read_bytes() == content


def test_symlinks_are_replaced_not_written_through_by_a_compaction(pod_dir, outside):
    from tastypy.storage.repair import compact

    # A planted temporary file of this very process, and a linked manifest.
    os.symlink(outside, pod_dir / f"snapshot-000001.jsonl.{os.getpid()}.tmp")
    manifest = (pod_dir / "manifest.json").read_bytes()
    linked = outside.with_name("manifest-outside.json")
    linked.write_bytes(manifest)
    os.unlink(pod_dir / "manifest.json")
    os.symlink(linked, pod_dir / "manifest.json")

    compact(pod_dir)
    assert outside.read_bytes() == b"precious\n"
    assert linked.read_bytes() == manifest
    assert not os.path.islink(pod_dir / "manifest.json")
    assert len(read_pod(pod_dir)) == 4


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
