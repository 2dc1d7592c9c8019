"""Automatic compaction writes what the files hold, in their order.

A POD (or tracker) whose store read nothing written by others since it
loaded holds in memory exactly what its files hold; its compaction then
writes that dict out instead of loading the files again. Whether it does so
or loads, a fresh process must read the same items in the same order as if
no compaction had run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import run_python
from crashkit import read_pod
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tastypy
from tastypy.storage import compaction
from tastypy.storage.store import Store

OPS = st.lists(
    st.tuples(
        st.integers(0, 1),  # which handle
        st.sampled_from(["set", "set", "nested", "delete", "sync", "sync", "refresh", "revert"]),
        st.sampled_from("abcd"),
    ),
    min_size=10,
    max_size=80,
)


def _run(directory: Path, ops: list, compact_at: int) -> list:
    """Apply ``ops`` with two handles; return what a fresh open reads after
    every sync."""
    seen = []
    old = compaction._COMPACT_MIN_STALE
    compaction._COMPACT_MIN_STALE = compact_at
    pods = [tastypy.POD(directory, sync_at=10**9), tastypy.POD(directory, sync_at=10**9)]
    try:
        for n, (h, op, key) in enumerate(ops):
            pod = pods[h]
            if op == "set":
                pod[key] = {"n": n}
            elif op == "nested" and key in pod:
                pod[key][f"x{n}"] = n
            elif op == "delete" and key in pod:
                del pod[key]
            elif op == "sync":
                pod.sync()
                seen.append(read_pod(directory))
            elif op == "refresh":
                pod.refresh()
            elif op == "revert":
                pod.revert()
        for pod in pods:
            pod.sync()
        seen.append(read_pod(directory))
        # A handle's own order may differ: one that took in others' records
        # holds them after its own; one that reloaded (after a compaction
        # elsewhere) holds them in the files' order.
        seen.append([dict(pod.items()) for pod in pods])
    finally:
        for pod in pods:
            pod.close()
        compaction._COMPACT_MIN_STALE = old
    return seen


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_compacting_at_every_chance_changes_nothing_a_reader_sees(ops):
    # The same operations, once compacting whenever stale records outnumber
    # live ones (from memory when a handle wrote alone since it loaded, from
    # the files otherwise), once never compacting: every fresh read must
    # agree item for item, in order, and both handles at the end.
    root = Path(tempfile.mkdtemp(prefix="tastypy-compaction-"))
    try:
        often = _run(root / "often", ops, 0)
        never = _run(root / "never", ops, 10**9)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert often == never


@pytest.fixture
def loads(monkeypatch) -> list:
    """The generation each store load of this test started from."""
    seen: list = []
    real_load = Store.load

    def counting_load(self):
        seen.append(self.generation)
        return real_load(self)

    monkeypatch.setattr(Store, "load", counting_load)
    return seen


def test_a_pod_written_alone_compacts_without_reading_its_files_again(tmp_path, loads):
    n = compaction._COMPACT_MIN_STALE // 2 + 10
    path = tmp_path / "p"
    with tastypy.POD(path) as pod:
        assert len(loads) == 1  # the open
        for round_ in range(4):
            for i in range(n):
                pod[i] = {"round": round_, "i": i}
            del pod[round_]
            pod[round_] = "again"  # deleted and set again: it moves last
            pod.sync()
        expected = list(pod.items())
        assert len(loads) == 1
    assert (path / "snapshot-000001.jsonl").exists()
    assert read_pod(path) == expected


def test_a_pod_that_took_in_others_records_loads_them_to_compact(tmp_path, loads):
    n = compaction._COMPACT_MIN_STALE // 2 + 10
    path = tmp_path / "p"
    with tastypy.POD(path) as pod, tastypy.POD(path, clone=False) as other:
        other["from the other"] = 1
        other.sync()
        for round_ in range(4):
            for i in range(n):
                pod[i] = round_
            pod.sync()
        expected = dict(pod.items())
        assert len(loads) == 3  # two opens, and the compaction
    # In the files' order: the other's batch was synced first.
    assert read_pod(path) == [("from the other", 1), *((i, 3) for i in range(n))]
    assert dict(read_pod(path)) == expected


# -- what another process synced before a compaction ------------------------------

_OTHER_WRITES = """
import sys, tastypy
kind, path = sys.argv[1], sys.argv[2]
if kind == "pod":
    pod = tastypy.POD(path)
    pod["theirs"] = {"by": "other"}
    pod.close()
else:
    tracker = tastypy.Tracker(path)
    assert tracker.try_it("t2")
    tracker.mark_done("t2")
    tracker.close()
"""


def _another_process_writes(handle, kind: str) -> None:
    """Another process (a real one) syncs after ``handle`` last looked: a
    compaction must fold that in and leave ``handle`` holding it. (The
    compaction once synced, released the lock, then compacted, and lost
    what came in that gap; it is now one transaction, so what another
    process syncs before it is what it must take in.)"""
    result = run_python(_OTHER_WRITES, kind, handle.path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("storage", ["local", "shared"])
def test_a_pod_compacting_keeps_what_another_process_synced_meanwhile(tmp_path, storage):
    pod = tastypy.POD(tmp_path / "p", storage=storage)
    pod["mine"] = 1
    _another_process_writes(pod, "pod")
    pod.compact()
    assert pod.get("theirs") == {"by": "other"}
    pod.refresh()
    assert pod.get("theirs") == {"by": "other"}
    pod["mine"] = 2
    pod.close()
    assert read_pod(tmp_path / "p") == [("mine", 2), ("theirs", {"by": "other"})]


@pytest.mark.parametrize("storage", ["local", "shared"])
def test_a_tracker_compacting_never_runs_again_a_task_another_process_finished(tmp_path, storage):
    path = tmp_path / "t"
    tracker = tastypy.Tracker(path, storage=storage)
    tracker.add_many(["t1", "t2", "t3"])
    tracker.sync()
    _another_process_writes(tracker, "tracker")
    tracker.compact()
    assert tracker.done("t2")
    assert not tracker.try_it("t2")
    assert tracker.try_it("t1")
    tracker.mark_done("t1")
    tracker.close()
    again = tastypy.Tracker(path)
    assert again.done("t1") and again.done("t2") and not again.done("t3")
    again.close()


def test_a_tracker_compacts_at_every_eighth_periodic_point(tmp_path, monkeypatch):
    # A tracker's periodic durable points (every sync_at transactions) run on
    # the files kept open; one in eight opens them afresh and compacts when
    # due. Here compaction is always due: it happens at transactions 80 and
    # 160 (a try and a release are a transaction each), and only there.
    monkeypatch.setattr(compaction, "_COMPACT_MIN_STALE", 0)
    changed_at = []
    with tastypy.Tracker(tmp_path / "t", sync_at=10, max_tries=10**6) as tracker:
        generation = tracker._store.generation
        for n in range(1, 101):
            assert tracker.try_it("a")
            tracker.release("a")
            if tracker._store.generation != generation:
                generation = tracker._store.generation
                changed_at.append(2 * n)
    assert changed_at == [80, 160]
    assert tastypy.check(tmp_path / "t").ok
    with tastypy.Tracker(tmp_path / "t") as tracker:
        assert list(tracker) == ["a"] and tracker.try_it("a")
