"""A real writer killed at every named fault point, during a sync, a
compaction and the creation of a POD; then the POD is reopened and checked.

After the kill the POD must open, hold exactly the state before or after the
interrupted sync (never half of it), keep every earlier sync in order, and
let the next writer carry on (a torn tail is cut before it appends).
"""

from __future__ import annotations

import os

import orjson
import pytest
from conftest import without_times
from crashkit import (
    APPLY_SOURCE,
    apply_op,
    assert_clean,
    assert_killed,
    literal,
    read_pod,
    replay,
    run_child,
)

import tastypy
from tastypy import _faults
from tastypy.storage.repair import compact

#: Earlier syncs, each one batch: these must survive every crash.
SETUP = [
    [
        ("set", "a", 1),
        ("set", "b", {"x": 1}),
        ("set", "l", [1]),
        ("set", ("t", 1), "tuple key"),
        ("set", 5, "int key"),
    ],
    [("del", "a"), ("set", "d", "d"), ("nested", "b", "y", 2), ("set", "a", 2)],
]

#: The sync that is interrupted: sets, deletes, nested mutations, a key
#: moved to the end, and enough records that half a batch is many lines.
BATCH = [
    ("set", "e", {"deep": [1, 2]}),
    ("nested", "b", "z", 3),
    ("append", "l", 2),
    ("del", "d"),
    ("set", "d", "d again"),
    ("set", 5, "five"),
    ("set", ("t", 1), "tuple key again"),
    ("del", "a"),
    *[("set", f"k{i}", {"i": i, "s": "x" * i}) for i in range(40)],
]

#: A second batch, for the writer that finds a torn tail left by the first.
BATCH2 = [("set", "f", "f"), ("del", "b"), ("append", "l", 3)]

BEFORE = replay([op for batch in SETUP for op in batch])
AFTER = replay(BATCH, BEFORE)

WRITER = (
    APPLY_SOURCE
    + """
import ast, sys
import tastypy

path, phase, gzipped, ops = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
pod = tastypy.POD(path, gzipped=gzipped)
for op in ast.literal_eval(ops):
    apply_op(pod, op)
pod.sync()
if phase == "compact":
    pod.compact()
print("finished")
"""
)

#: Where a kill during a sync leaves the POD (process crash: the page cache
#: survives, so a batch written but not yet fsynced is there).
SYNC_POINTS = {
    "before-write": BEFORE,
    "mid-write": BEFORE,
    "after-write": AFTER,
    "after-fsync": AFTER,
}
#: Passed only when a torn tail is cut before appending.
TORN_POINTS = {"before-truncate": BEFORE, "after-truncate": BEFORE}
#: A compaction changes files, not content.
COMPACT_POINTS = [p for p in _faults.POINTS if p.startswith(("compact-", "snapshot-", "manifest-"))]
CREATE_POINTS = [p for p in _faults.POINTS if p.startswith("manifest-")]


def make_pod(path, gzipped=False):
    with tastypy.POD(path, gzipped=gzipped) as pod:
        for batch in SETUP:
            for op in batch:
                apply_op(pod, op)
            pod.sync()


def write(path, phase, ops, fault=None, gzipped=False):
    return run_child(WRITER, path, phase, "1" if gzipped else "0", literal(ops), fault=fault)


def carry_on(path, expected, gzipped=False):
    """The next writer appends cleanly after the crash, and what it wrote
    reads back with everything before it."""
    with tastypy.POD(path, gzipped=gzipped) as pod:
        pod["next"] = {"writer": True}
        pod.sync()
    assert read_pod(path) == [*expected.items(), ("next", {"writer": True})]
    assert_clean(path)


def test_every_fault_point_is_exercised():
    covered = set(SYNC_POINTS) | set(TORN_POINTS) | set(COMPACT_POINTS) | set(CREATE_POINTS)
    assert covered == set(_faults.POINTS)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzipped"])
@pytest.mark.parametrize("point", list(SYNC_POINTS))
def test_kill_during_sync_leaves_before_or_after(tmp_path, point, gzipped):
    path = tmp_path / "pod"
    make_pod(path, gzipped)
    assert_killed(write(path, "sync", BATCH, fault=point, gzipped=gzipped))

    expected = SYNC_POINTS[point]
    assert read_pod(path) == list(expected.items())
    carry_on(path, expected, gzipped)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzipped"])
@pytest.mark.parametrize("point", list(TORN_POINTS))
def test_kill_while_cutting_a_torn_tail(tmp_path, point, gzipped):
    path = tmp_path / "pod"
    make_pod(path, gzipped)
    # The first writer dies halfway through its batch: a torn tail.
    assert_killed(write(path, "sync", BATCH, fault="mid-write", gzipped=gzipped))
    report = tastypy.check(path)
    assert report.ok and any("unfinished batch" in n for n in report.notes), str(report)

    # The second one finds it, and dies while cutting it off.
    assert_killed(write(path, "sync", BATCH2, fault=point, gzipped=gzipped))
    assert read_pod(path) == list(TORN_POINTS[point].items())
    carry_on(path, TORN_POINTS[point], gzipped)


def test_torn_tail_is_cut_before_the_next_batch(tmp_path):
    path = tmp_path / "pod"
    make_pod(path)
    journal = path / "journal-000000.jsonl"
    committed = journal.stat().st_size
    assert_killed(write(path, "sync", BATCH, fault="mid-write"))
    assert journal.stat().st_size > committed

    proc = write(path, "sync", BATCH2)
    assert proc.returncode == 0, proc.stderr
    text = journal.read_bytes()
    # The new batch starts right where the last complete one ended.
    assert text[committed:].startswith(b'["f","f"]\n')
    assert read_pod(path) == list(replay(BATCH2, BEFORE).items())


@pytest.mark.parametrize("point", COMPACT_POINTS)
def test_kill_during_compaction_keeps_everything(tmp_path, point):
    path = tmp_path / "pod"
    make_pod(path)
    assert_killed(write(path, "compact", BATCH, fault=point))

    assert read_pod(path) == list(AFTER.items())
    carry_on(path, AFTER)
    # A later compaction finishes the job and leaves only the live files.
    compact(path)
    rest = set(os.listdir(path)) - {"manifest.json", "tastypy.lock"}
    assert len(rest) == 1 and rest.pop().startswith("snapshot-")
    assert read_pod(path) == [*AFTER.items(), ("next", {"writer": True})]


@pytest.mark.parametrize("point", CREATE_POINTS)
def test_kill_while_creating_a_pod(tmp_path, point):
    path = tmp_path / "pod"
    assert_killed(write(path, "sync", [], fault=point))

    # Before the manifest is in place, opening finishes creating the POD.
    created = os.path.exists(path / "manifest.json")
    assert read_pod(path, unchanged=created) == []
    carry_on(path, {})


def test_unarmed_writer_finishes(tmp_path):
    # The control: the same writer without a fault point runs to the end.
    path = tmp_path / "pod"
    make_pod(path)
    proc = write(path, "compact", BATCH)
    assert proc.returncode == 0 and "finished" in proc.stdout, proc.stderr
    assert read_pod(path) == list(AFTER.items())


# -- a tracker: every try is written before the task runs ---------------------------------

TRACKER_WORKER = """
import os, sys, time
import tastypy

def work(tracker, on_try):
    # Three passes over 60 tasks; a deterministic third of the tries succeed.
    for rnd in range(3):
        for i in range(60):
            key = f"t{i}"
            if tracker.try_it(key):
                on_try()
                if (i * 7 + rnd) % 3 == 0:
                    tracker.mark_done(key)

if __name__ == "__main__":
    path, side = sys.argv[1], sys.argv[2]
    tracker = tastypy.Tracker(path, max_tries=3, sync_at=25)
    log = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    tries = [0]

    def on_try():
        tries[0] += 1
        os.write(log, b"%d\\n" % tries[0])

    work(tracker, on_try)
    # A worker goes on with other work: the background fsync of its last
    # durable points runs meanwhile (the loop alone ends within the
    # interpreter's 5 ms thread switch interval, before that thread runs).
    time.sleep(0.5)
    os._exit(0)
"""


def tracker_states(tmp_path):
    """What the disk may hold after each try, from the same work run in this
    process: ``states[n]`` lists the tracker's items right after the n-th
    granted try (when every change made so far has been written), and as
    they were at each later call of ``try_it`` before the next granted one
    (a try refused still writes the done marks made since)."""
    namespace: dict = {}
    exec(TRACKER_WORKER.replace('__name__ == "__main__"', "False"), namespace)
    states: list = [[[]]]

    def items(tracker):
        found = orjson.loads(orjson.dumps(list(tracker.to_dict().items())))
        return [(key, without_times(rec)) for key, rec in found]

    with tastypy.Tracker(tmp_path / "reference", max_tries=3, sync_at=25) as tracker:
        try_it = tracker.try_it

        def watched(key):
            states[-1].append(items(tracker))
            return try_it(key)

        tracker.try_it = watched
        namespace["work"](tracker, lambda: states.append([items(tracker)]))
    return states


@pytest.mark.parametrize(
    "fault",
    # A try is written without fsync; every 25th is a durable point, whose
    # fsync runs in the background (the only one to pass after-fsync: the
    # kill lands while the worker goes on).
    [
        *(f"{p}:{hit}" for p in ("before-write", "mid-write", "after-write") for hit in (1, 9, 70)),
        "after-fsync:1",
        "after-fsync:3",
    ],
)
def test_kill_a_tracker_between_its_tries(tmp_path, fault):
    states = tracker_states(tmp_path)
    path = tmp_path / "tracker"
    side = tmp_path / "tries.txt"
    assert_killed(run_child(TRACKER_WORKER, path, side, fault=fault))
    logged = side.read_bytes().split() if side.exists() else []
    tried = int(logged[-1]) if logged else 0
    with tastypy.Tracker(path, max_tries=3) as tracker:
        items = [(k, without_times(v)) for k, v in tracker.to_dict().items()]
    # Every try the worker saw counted is on disk, with everything before it.
    assert items in states[tried] + states[min(tried + 1, len(states) - 1)][:1]
    assert tastypy.check(path).ok
