"""The shared store: one new file per commit, for filesystems whose clients cache.

These run on the local disk with ``storage="shared"``, which a POD gets by
itself on a network or FUSE filesystem; tests/test_shared_fs.py runs the
same store on GlusterFS and bindfs mounts whose caches are on.
"""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from conftest import child_env, run_python, spawn_python

import tastypy
from tastypy.errors import CorruptFileError, InvalidArgumentError

SHARED = {"storage": "shared"}


def manifest(path) -> dict:
    with open(os.path.join(path, "manifest.json"), "rb") as f:
        return orjson.loads(f.read())


def commit_files(path, generation: int = 0) -> list[str]:
    log = os.path.join(path, f"commits-{generation:06d}")
    return sorted(n for n in os.listdir(log) if not n.startswith("."))


def test_each_sync_is_a_new_commit_file_never_changed_afterwards(tmp_path):
    path = tmp_path / "p"
    with tastypy.POD(path, **SHARED) as pod:
        pod["a"] = 1
        pod.sync()
        first = os.path.join(path, "commits-000000", "0000000000.jsonl")
        with open(first, "rb") as f:
            before = f.read()
        inode = os.stat(first).st_ino
        pod["b"] = [1, 2]
        pod.sync()
        pod["a"] = 2
    m = manifest(path)
    assert m["version"] == 2 and m["log"] == "commits" and m["journal"] == "commits-000000"
    assert commit_files(path) == ["0000000000.jsonl", "0000000001.jsonl", "0000000002.jsonl"]
    with open(first, "rb") as f:
        assert f.read() == before == b'["a",1]\n{"sync":1}\n'
    assert os.stat(first).st_ino == inode
    assert dict(tastypy.POD(path)) == {"a": 2, "b": [1, 2]}


_WRITER = """
import sys, tastypy
path, me, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pod = tastypy.POD(path, sync_at=7)
for i in range(n):
    pod[f"{me}-{i}"] = {"i": i, "by": me}
pod["shared"] = me
pod.close()
"""


def test_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "p"
    tastypy.POD(path, **SHARED).close()
    procs = [spawn_python(_WRITER, path, f"w{w}", 150) for w in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    pod = tastypy.POD(path)
    for w in range(4):
        for i in range(150):
            assert pod[f"w{w}-{i}"] == {"i": i, "by": f"w{w}"}
    assert pod["shared"] in {"w0", "w1", "w2", "w3"}
    assert len(pod) == 4 * 150 + 1
    pod.close()
    assert tastypy.check(path).ok


def test_a_handle_opened_before_two_compactions_follows_them(tmp_path):
    path = tmp_path / "p"
    early = tastypy.POD(path, **SHARED)
    early["early"] = 0
    early.sync()
    other = tastypy.POD(path)
    for round_ in range(2):
        other[f"round{round_}"] = round_
        other.compact()
    early.refresh()
    assert dict(early) == {"early": 0, "round0": 0, "round1": 1}
    early["early"] = 1
    early.close()
    other.close()
    assert dict(tastypy.POD(path)) == {"early": 1, "round0": 0, "round1": 1}
    # The generation before the live one is deleted; the live one's
    # predecessor stays for readers holding an old copy of the manifest.
    names = sorted(n for n in os.listdir(path) if n.startswith(("commits-", "snapshot-")))
    assert names == ["commits-000001", "commits-000002", "snapshot-000001.jsonl",
                     "snapshot-000002.jsonl"]  # fmt: skip


def test_an_old_copy_of_the_manifest_is_followed_to_the_live_generation(tmp_path):
    """A client whose cache still shows the manifest from before a compaction
    (a FUSE or GlusterFS client does for a second) reads the old generation,
    meets its seal, and goes on to the new one."""
    path = tmp_path / "p"
    pod = tastypy.POD(path, **SHARED)
    pod["a"] = 1
    pod.sync()
    with open(os.path.join(path, "manifest.json"), "rb") as f:
        old = f.read()
    pod["b"] = 2
    pod.compact()
    pod["c"] = 3
    pod.close()
    with open(os.path.join(path, "manifest.json"), "wb") as f:
        f.write(old)  # what the stale client sees
    reader = tastypy.POD(path)
    assert dict(reader) == {"a": 1, "b": 2, "c": 3}
    reader["d"] = 4
    reader.close()
    assert commit_files(path, 1) == ["0000000000.jsonl", "0000000001.jsonl"]
    assert dict(tastypy.POD(path)) == {"a": 1, "b": 2, "c": 3, "d": 4}


_TRY_LOOP = """
import sys, tastypy
path, me, log = sys.argv[1], sys.argv[2], sys.argv[3]
keys = [f"k{i}" for i in range(200)]
tracker = tastypy.Tracker(path, lease=60)
tracker.add_many_if_absent(keys)
with open(log, "a") as out:
    for key in keys:
        if tracker.try_it(key):
            out.write(key + "\\n")
            out.flush()
            tracker.mark_done(key)
tracker.close()
"""


def test_trackers_in_several_processes_run_every_task_once(tmp_path):
    path = tmp_path / "t"
    tastypy.Tracker(path, **SHARED).close()
    logs = [tmp_path / f"log{w}" for w in range(4)]
    procs = [spawn_python(_TRY_LOOP, path, f"w{w}", logs[w]) for w in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    ran = [line for log in logs for line in log.read_text().split()]
    assert sorted(ran) == sorted(f"k{i}" for i in range(200))
    tracker = tastypy.Tracker(path)
    assert tracker.num_done() == 200
    tracker.close()


def test_a_writer_killed_mid_commit_leaves_no_commit(tmp_path):
    path = tmp_path / "p"
    with tastypy.POD(path, **SHARED) as pod:
        pod["before"] = 1
    code = """
import sys, tastypy
pod = tastypy.POD(sys.argv[1])
pod["lost"] = 1
pod.sync()
"""
    result = run_python(code, path, env=child_env(TASTYPY_FAULT="after-write:1:kill"))
    assert result.returncode == -9
    assert commit_files(path) == ["0000000000.jsonl"]  # the temporary file is not a commit
    pod = tastypy.POD(path)
    assert dict(pod) == {"before": 1}
    pod["after"] = 2
    pod.close()
    assert dict(tastypy.POD(path)) == {"before": 1, "after": 2}
    assert tastypy.check(path).ok


def test_a_damaged_commit_file_is_named_and_repaired(tmp_path):
    path = tmp_path / "p"
    with tastypy.POD(path, **SHARED) as pod:
        pod["a"] = 1
        pod.sync()
        pod["b"] = 2
    damaged = os.path.join(path, "commits-000000", "0000000001.jsonl")
    with open(damaged, "wb") as f:
        f.write(b'["b",2]\n')  # its commit line lost
    with pytest.raises(CorruptFileError, match="0000000001.jsonl"):
        tastypy.POD(path)
    report = tastypy.check(path)
    assert not report.ok and any("0000000001.jsonl" in str(p) for p in report.problems)
    result = subprocess.run(
        [sys.executable, "-m", "tastypy", "repair", str(path)],
        env=child_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    pod = tastypy.POD(path)
    assert pod["a"] == 1
    pod["c"] = 3
    pod.close()
    assert manifest(path)["log"] == "commits"
    assert tastypy.POD(path)["c"] == 3


def test_a_gzipped_shared_pod_reads_back(tmp_path):
    path = tmp_path / "p"
    with tastypy.POD(path, gzipped=True, **SHARED) as pod:
        pod[("t", 1)] = {"x": "é"}
        pod.sync()
        pod.compact()
        pod["y"] = None
    assert dict(tastypy.POD(path)) == {("t", 1): {"x": "é"}, "y": None}
    assert tastypy.check(path).ok


def test_a_wrong_storage_argument_is_refused_naming_the_choices(tmp_path, monkeypatch):
    with pytest.raises(InvalidArgumentError, match="'auto', 'local', 'shared'"):
        tastypy.POD(tmp_path / "p", storage="fast")
    assert not (tmp_path / "p").exists()
    tastypy.POD(tmp_path / "p", **SHARED).close()
    with pytest.raises(InvalidArgumentError, match="shared store, chosen when it was created"):
        tastypy.POD(tmp_path / "p", storage="local")
    monkeypatch.setenv("TASTYPY_STORAGE", "nfs")
    with pytest.raises(InvalidArgumentError, match="TASTYPY_STORAGE"):
        tastypy.Tracker(tmp_path / "t")
    monkeypatch.setenv("TASTYPY_STORAGE", "shared")
    tastypy.Tracker(tmp_path / "t").close()
    assert manifest(tmp_path / "t")["log"] == "commits"


def test_commit_files_are_folded_into_a_snapshot_once_there_are_many(tmp_path, monkeypatch):
    from tastypy.storage import compaction

    monkeypatch.setattr(compaction, "_COMPACT_MIN_COMMITS", 20)
    path = tmp_path / "p"
    with tastypy.POD(path, **SHARED) as pod:
        for i in range(30):
            pod[i] = i
            pod.sync()
    m = manifest(path)
    assert m["generation"] == 1 and m["snapshot_records"] == 20
    assert len(commit_files(path, 1)) == 10
    assert dict(tastypy.POD(path)) == {i: i for i in range(30)}


def test_the_number_of_commits_is_found_by_probing_names(tmp_path):
    from tastypy.storage import commits

    log = tmp_path / "commits-000000"
    assert commits.count(str(log), False) == 0
    for n in range(37):
        assert commits.write(str(log), n, b'["k",1]\n{"sync":1}\n', False, False, lambda p: None)
        assert commits.count(str(log), False) == n + 1
    assert not commits.write(str(log), 5, b"[]\n", False, False, lambda p: None)


def test_a_commit_the_server_says_exists_is_waited_for_then_named(tmp_path):
    """What a sync does after its link to a number failed while this client
    did not show that commit (NFS's cache of missing names): it looks again
    until the commit shows, here written by another process a moment later,
    and otherwise says which mount option lets it through."""
    from tastypy.errors import StorageError
    from tastypy.storage import commits

    log = tmp_path / "commits-000000"
    log.mkdir()
    writer = spawn_python(
        """
import sys, time
from tastypy.storage import commits
time.sleep(0.3)
commits.write(sys.argv[1], 0, b'["k",1]\\n{"sync":1}\\n', False, True, lambda point: None)
""",
        log,
    )
    text, path = commits.read_existing(str(log), 0, False, 30.0)
    _, err = writer.communicate(timeout=30)
    assert writer.returncode == 0, err
    assert text == b'["k",1]\n{"sync":1}\n' and path.endswith("0000000000.jsonl")
    with pytest.raises(StorageError, match="lookupcache=positive"):
        commits.read_existing(str(log), 1, False, 0.2)
