"""``tastypy check``, ``tastypy repair`` and ``tastypy compact``, as functions
and as commands.

check reads everything, reports each problem with its file and line, and
changes nothing. repair salvages every readable record into a consistent
POD, keeps every file it replaces in a ``repair-*`` subdirectory, and says
what was lost. compact folds the journal into a snapshot.
"""

from __future__ import annotations

import os
import select
import zlib

import orjson
import pytest
from conftest import run_python, spawn_python
from crashkit import files_of, read_pod

import tastypy
from tastypy.storage.repair import compact

JOURNAL = "journal-000000.jsonl"
ITEMS = [("a", 1), ("b", {"x": [1, 2]}), (("t", 1), "tuple key"), (7, "int key"), ("e", "é")]


def cli(*args):
    return run_python("import sys\nfrom tastypy.cli import main\nsys.exit(main())", *args)


@pytest.fixture
def pod_dir(tmp_path):
    """Two batches: a, b, tuple, 7 synced together, then e."""
    path = tmp_path / "pod"
    with tastypy.POD(path) as pod:
        for key, value in ITEMS[:4]:
            pod[key] = value
        pod.sync()
        pod["e"] = "é"
    return path


def journal_lines(path, name=JOURNAL):
    return (path / name).read_bytes().split(b"\n")[:-1]


def write_lines(path, lines, name=JOURNAL):
    (path / name).write_bytes(b"".join(line + b"\n" for line in lines))


def aside_of(path):
    (aside,) = [n for n in os.listdir(path) if n.startswith("repair-")]
    return path / aside


# -- check -------------------------------------------------------------------------------


def test_check_a_healthy_pod(pod_dir):
    report = tastypy.check(pod_dir)
    assert report.ok and report.problems == [] and report.keys == 5 and report.records == 5
    proc = cli("check", pod_dir)
    assert proc.returncode == 0, proc.stderr
    assert "5 keys" in proc.stdout and proc.stdout.rstrip().endswith("OK")


def test_check_reports_every_problem_with_file_and_line_and_changes_nothing(pod_dir):
    lines = journal_lines(pod_dir)
    lines[1] = b'["b",{"x":'  # line 2: cut short
    lines[3] = b"[1.5,1]"  # line 4: a float key
    lines += [b'["f",1]', b'{"sync":3}']  # line 9: the count is wrong
    write_lines(pod_dir, lines)
    os.unlink(pod_dir / "tastypy.lock")
    before = files_of(pod_dir)

    report = tastypy.check(pod_dir)
    journal = str(pod_dir / JOURNAL)
    assert [(p.path, p.line) for p in report.problems] == [
        (journal, 2),
        (journal, 4),
        (journal, 9),
    ]
    assert "not valid JSON" in report.problems[0].message
    assert "1.5" in report.problems[1].message
    assert "counts 3 records" in report.problems[2].message
    assert files_of(pod_dir) == before, "check changed the files (or created a lock file)"

    proc = cli("check", pod_dir)
    assert proc.returncode == 1
    assert f"{journal}, line 2" in proc.stdout and f"{journal}, line 9" in proc.stdout
    assert "tastypy repair" in proc.stdout


def test_check_notes_a_torn_tail_without_calling_it_a_problem(pod_dir):
    with open(pod_dir / JOURNAL, "ab") as f:
        f.write(b'["g",1]\n["h",')
    report = tastypy.check(pod_dir)
    assert report.ok
    assert any("unfinished batch (1 records, 13 bytes)" in n for n in report.notes), report.notes


@pytest.mark.parametrize("what", ["missing", "file", "foreign"])
def test_check_something_that_is_not_a_pod(tmp_path, what):
    path = tmp_path / "x"
    if what == "file":
        path.write_text("hello")
    elif what == "foreign":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    report = tastypy.check(path)
    assert not report.ok and str(path) in str(report)
    assert cli("check", path).returncode == 1


def test_check_a_gzipped_pod(tmp_path):
    path = tmp_path / "pod"
    with tastypy.POD(path, gzipped=True) as pod:
        pod["a"] = 1
        pod.sync()
        pod["b"] = 2
    assert tastypy.check(path).ok and tastypy.check(path).keys == 2
    with open(path / "journal-000000.jsonl.gz", "r+b") as f:
        f.seek(25)
        f.write(b"\xff\xff\xff\xff")
    report = tastypy.check(path)
    assert not report.ok and "compressed data damaged" in str(report), str(report)


# -- repair --------------------------------------------------------------------------------


def test_repair_a_healthy_pod_does_nothing(pod_dir):
    before = files_of(pod_dir)
    report = tastypy.repair(pod_dir)
    assert not report.repaired and "nothing to repair" in str(report)
    assert files_of(pod_dir) == before
    assert not [n for n in os.listdir(pod_dir) if n.startswith("repair-")]


def test_repair_salvages_every_readable_record_and_keeps_the_damaged_file(pod_dir):
    lines = journal_lines(pod_dir)
    lines[1] = b"\x00garbage\xff"  # b's record is lost
    write_lines(pod_dir, lines)
    damaged = (pod_dir / JOURNAL).read_bytes()

    proc = cli("repair", pod_dir)
    assert proc.returncode == 0, proc.stderr
    assert f"lost: {pod_dir / JOURNAL}, line 2" in proc.stdout
    assert "4 keys salvaged" in proc.stdout

    assert read_pod(pod_dir) == [item for item in ITEMS if item[0] != "b"]
    assert tastypy.check(pod_dir).ok
    # Nothing deleted: the damaged journal and the old manifest are aside.
    aside = aside_of(pod_dir)
    assert (aside / JOURNAL).read_bytes() == damaged
    assert orjson.loads((aside / "manifest.json").read_bytes())["generation"] == 0
    # And the repaired POD takes writes as usual.
    with tastypy.POD(pod_dir) as pod:
        pod["after"] = "repair"
    assert read_pod(pod_dir)[-1] == ("after", "repair")


def test_repair_keeps_the_records_of_a_batch_whose_commit_line_is_garbled(pod_dir):
    lines = journal_lines(pod_dir)
    lines[-1] = b'{"synk":1}'
    write_lines(pod_dir, lines)
    report = tastypy.repair(pod_dir)
    assert [p.line for p in report.lost] == [7]
    assert read_pod(pod_dir) == ITEMS


def test_repair_a_truncated_snapshot(pod_dir):
    with tastypy.POD(pod_dir) as pod:
        pod.compact()
        pod["later"] = 1
    snapshot = pod_dir / "snapshot-000001.jsonl"
    lines = snapshot.read_bytes().split(b"\n")
    snapshot.write_bytes(b"\n".join(lines[:3]) + b"\n")  # a, b, tuple: no commit line

    report = tastypy.repair(pod_dir)
    assert report.repaired and len(report.lost) == 1 and "cut short" in str(report)
    assert read_pod(pod_dir) == [*ITEMS[:3], ("later", 1)]


def test_repair_a_missing_manifest(pod_dir):
    os.unlink(pod_dir / "manifest.json")
    proc = cli("repair", pod_dir)
    assert proc.returncode == 0, proc.stderr
    assert "manifest.json" in proc.stdout and "is missing" in proc.stdout
    assert read_pod(pod_dir) == ITEMS
    assert tastypy.check(pod_dir).ok


@pytest.mark.parametrize("content", [b"{not json", b"[]", b""], ids=["garbage", "array", "empty"])
def test_repair_a_corrupt_manifest(pod_dir, content):
    (pod_dir / "manifest.json").write_bytes(content)
    report = tastypy.repair(pod_dir)
    assert report.repaired
    assert (aside_of(pod_dir) / "manifest.json").read_bytes() == content
    assert read_pod(pod_dir) == ITEMS


def test_repair_keeps_the_kind_of_a_tracker_without_its_manifest(tmp_path):
    path = tmp_path / "tracker"
    path.mkdir()
    write_lines(
        path,
        [b'["job1",{"_done":true,"_tries":1,"_aborted":false}]', b'{"sync":1}'],
    )
    tastypy.repair(path)
    assert orjson.loads((path / "manifest.json").read_bytes())["kind"] == "tracker"
    path2 = tmp_path / "forced"
    path2.mkdir()
    write_lines(path2, [b'["job1",1]', b'{"sync":1}'])
    proc = cli("repair", path2, "--kind", "tracker")
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads((path2 / "manifest.json").read_bytes())["kind"] == "tracker"


def compacted_then_manifest_lost(path, written_after):
    """An interrupted compaction (snapshot 1 written, manifest not switched)
    or a finished one (its old files not yet deleted), then the manifest lost."""
    snapshot = b'["a",1]\n["b",{"x":[1,2]}]\n[["t",1],"tuple key"]\n[7,"int key"]\n{"sync":4}\n'
    (path / "snapshot-000001.jsonl").write_bytes(snapshot)
    os.utime(path / "snapshot-000001.jsonl", (1000, 1000))
    os.utime(path / JOURNAL, (2000 if written_after else 500,) * 2)
    os.unlink(path / "manifest.json")


def test_repair_without_manifest_prefers_a_journal_written_after_the_snapshot(pod_dir):
    # The compaction never switched the manifest; the journal kept growing.
    compacted_then_manifest_lost(pod_dir, written_after=True)
    report = tastypy.repair(pod_dir)
    assert read_pod(pod_dir) == ITEMS
    assert any("snapshot-000001.jsonl" in p.path and "not merged" in p.message for p in report.lost)


def test_repair_without_manifest_takes_a_finished_compaction(pod_dir):
    # A finished compaction, its old journal left behind: the snapshot is live.
    compacted_then_manifest_lost(pod_dir, written_after=False)
    tastypy.repair(pod_dir)
    assert read_pod(pod_dir) == ITEMS[:4]


def member_offsets(raw):
    """Where each gzip member (one per sync) starts."""
    offsets, pos = [], 0
    while pos < len(raw):
        offsets.append(pos)
        d = zlib.decompressobj(31)
        d.decompress(raw[pos:])
        pos = len(raw) - len(d.unused_data)
    return offsets


def test_repair_a_damaged_gzipped_journal(tmp_path):
    path = tmp_path / "pod"
    with tastypy.POD(path, gzipped=True) as pod:
        for key in "abc":
            pod[key] = key * 3
            pod.sync()
    journal = path / "journal-000000.jsonl.gz"
    raw = journal.read_bytes()
    second = member_offsets(raw)[1]
    # The compressed body of the second sync (b) is overwritten.
    damaged = raw[: second + 12] + b"\xff" * 8 + raw[second + 20 :]
    journal.write_bytes(damaged)

    report = tastypy.check(path)
    assert [p.message for p in report.problems] == [
        f"compressed data damaged: bytes {second} to {member_offsets(raw)[2]} (of {len(raw)}) "
        "are unreadable"
    ]
    report = tastypy.repair(path)
    assert report.repaired and len(report.lost) == 1
    # The members before and after the damage are salvaged.
    assert read_pod(path) == [("a", "aaa"), ("c", "ccc")]
    assert tastypy.check(path).ok
    assert (aside_of(path) / "journal-000000.jsonl.gz").read_bytes() == damaged


def test_repair_refuses_what_it_cannot_understand(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "0.json").write_text('"a"\t1\n')
    with pytest.raises(tastypy.LegacyFormatError):
        tastypy.repair(legacy)
    proc = cli("repair", legacy)
    assert proc.returncode == 1 and "import-legacy" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(tastypy.NotAPODError):
        tastypy.repair(empty)
    assert cli("repair", tmp_path / "nowhere").returncode == 1


# -- compact -----------------------------------------------------------------------------


def test_compact_folds_the_journal_into_a_snapshot(pod_dir):
    with tastypy.POD(pod_dir) as pod:
        for i in range(50):
            pod["a"] = i
            pod.sync()
    other = tastypy.POD(pod_dir)
    try:
        proc = cli("compact", pod_dir)
        assert proc.returncode == 0, proc.stderr
        assert "compacted 5 keys" in proc.stdout
        assert sorted(os.listdir(pod_dir)) == [
            "manifest.json",
            "snapshot-000001.jsonl",
            "tastypy.lock",
        ]
        # A POD open meanwhile follows the new generation.
        other["z"] = 26
        other.sync()
    finally:
        other.close()
    assert read_pod(pod_dir) == [("a", 49), *ITEMS[1:], ("z", 26)]
    report = compact(pod_dir)
    assert report.keys == 6 and report.bytes_after <= report.bytes_before


def test_compact_something_that_is_not_a_pod(tmp_path):
    proc = cli("compact", tmp_path / "nowhere")
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    (tmp_path / "pod").mkdir()
    (tmp_path / "pod" / JOURNAL).write_bytes(b'["a",1]\n{"sync":1}\n')
    proc = cli("compact", tmp_path / "pod")
    assert proc.returncode == 1 and "tastypy repair" in proc.stderr


def test_repair_and_compact_with_soft_locks(tmp_path):
    path = tmp_path / "pod"
    with tastypy.POD(path, lock="soft") as pod:
        pod["a"] = 1
    assert cli("compact", path, "--lock", "soft").returncode == 0
    (path / "journal-000001.jsonl").write_bytes(
        b'["b",2]\n{"sync":1}\ngarbage\n["c",3]\n{"sync":1}\n'
    )
    proc = cli("repair", path, "--lock", "soft")
    assert proc.returncode == 0, proc.stderr
    assert "line 3" in proc.stdout
    with tastypy.POD(path, lock="soft") as pod:
        assert pod == {"a": 1, "b": 2, "c": 3}


def test_repair_a_tracker_and_open_it_as_one(tmp_path):
    path = tmp_path / "tracker"
    with tastypy.Tracker(path) as tracker:
        for i in range(10):
            tracker.try_it(f"t{i}")
            if i % 2:
                tracker.mark_done(f"t{i}")
        tracker.sync()
    lines = journal_lines(path)
    bad = next(i for i, line in enumerate(lines) if line.startswith(b'["t3"'))
    lines[bad] = b"####"
    write_lines(path, lines)
    with pytest.raises(tastypy.CorruptFileError):
        tastypy.Tracker(path)
    os.unlink(path / "manifest.json")  # and the kind must be guessed
    report = tastypy.repair(path)
    assert report.repaired
    with tastypy.Tracker(path) as tracker:
        assert len(tracker) == 10
        assert tracker.num_done() >= 4
        assert tracker.done("t9") and not tracker.done("t0")


# -- check under the writers' lock ----------------------------------------------------

_SOFT_WRITER = """
import sys, time, tastypy
pod = tastypy.POD(sys.argv[1], lock="soft")
with pod._store.locked():
    print("held", flush=True)
    time.sleep(1.5)
    print("released", flush=True)
pod.close()
"""


def test_check_waits_for_a_writer_holding_the_soft_lock(tmp_path):
    # The soft lock is what writers use on NFS and the like; check used to
    # take flock whatever the writers used, so it read while they wrote.
    path = tmp_path / "pod"
    with tastypy.POD(path, lock="soft") as pod:
        pod["a"] = 1
    writer = spawn_python(_SOFT_WRITER, path)
    try:
        assert writer.stdout.readline().strip() == "held"
        report = tastypy_check(path)
        # check returned only once the writer had let go of the lock: the
        # writer said so (just before letting go) already.
        assert select.select([writer.stdout], [], [], 0)[0], "check read under a held lock"
        assert writer.stdout.readline().strip() == "released"
        assert report.ok and report.keys == 1
    finally:
        writer.communicate(timeout=60)
    assert writer.returncode == 0


def tastypy_check(path):
    from tastypy.storage.repair import check

    return check(path)
