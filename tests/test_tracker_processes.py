"""Many processes over one tracker, with real processes and real locks.

Each worker runs the manual's ``try_it`` loop over every key (each starting
at its own offset) and "runs" a task by appending its key to a file of its
own, then marks it done. Whatever the interleaving, the union of those files
must hold every key exactly once, and the tracker every key done.

A worker killed (SIGKILL) while it holds claims keeps them until its lease
ends; it is made to look like another host (``TASTYPY_HOST``), since on its
own host a dead holder is recognised at once (``tests/test_claims.py``).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import pytest
from conftest import child_env, spawn_python

from tastypy import Tracker

#: A worker: ``path out start lease n_keys until_done pause [fresh]``. Runs
#: every key it can claim (a task takes ``pause`` seconds), appending ``key
#: time`` to ``out``; with ``until_done`` it passes over the keys again until
#: every one is done (or 120 s passed). With ``fresh`` it opens the tracker
#: only once all start, and adds the keys first (``add_many_if_absent``), as
#: a job array started on a tracker nobody made yet does.
WORKER = """
import sys, time
import tastypy
path, out, start, lease, n, until_done, pause = sys.argv[1:8]
fresh = sys.argv[8:] == ["1"]
pause = float(pause)
keys = [f"k{i:05d}" for i in range(int(n))]
start = int(start)
keys = keys[start:] + keys[:start]
open_it = lambda: tastypy.Tracker(path, max_tries=3, lease=float(lease))
tracker = None if fresh else open_it()
print("ready", flush=True)
sys.stdin.readline()  # all start together
if fresh:
    tracker = open_it()
    tracker.add_many_if_absent(keys)
deadline = time.time() + 120
with open(out, "a") as f:
    while True:
        for key in keys:
            if tracker.try_it(key):
                if pause:
                    time.sleep(pause)
                f.write(f"{key} {time.time():.3f}\\n")
                f.flush()
                tracker.mark_done(key)
        if until_done == "0":
            break
        # sync, not refresh: this worker's last done mark is written at its
        # next granted try or sync, and the others wait for it.
        tracker.sync()
        if tracker.num_done() == len(keys) or time.time() > deadline:
            break
        time.sleep(0.05)
tracker.close()
"""

#: A worker that claims ``n`` tasks, "runs" them (writes them to ``out``
#: with their lease's end), says so, then hangs until it is killed.
CLAIMER = """
import sys, time
import tastypy
path, out, n, lease = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
tracker = tastypy.Tracker(path, max_tries=3, lease=lease)
keys = tracker.claim(n)
with open(out, "w") as f:
    for key in keys:
        f.write(f"{key} {tracker[key]['_lease_until']}\\n")
print("ready", flush=True)
time.sleep(600)
"""


def make_tracker(path, n: int) -> list[str]:
    keys = [f"k{i:05d}" for i in range(n)]
    with Tracker(path) as tracker:
        tracker.add_many(keys)
    return keys


def run_workers(
    path, out_dir, procs: int, n: int, *, lease=3600, until_done=False, fresh=False, env=None
):
    run_together(
        WORKER,
        [
            (path, out_dir / f"worker{i}.txt", i * n // procs, lease, n, int(until_done), 0)
            + (1,) * fresh
            for i in range(procs)
        ],
        env=env,
    )
    return [out_dir / f"worker{i}.txt" for i in range(procs)]


def run_together(code: str, args: list, env=None) -> None:
    """Start ``code`` once per argument tuple; once all are ready, let them
    go at once, and wait for each to exit cleanly."""
    workers = []
    try:
        for one in args:
            workers.append(spawn_python(code, *one, env=env, stdin=subprocess.PIPE))
        for proc in workers:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in workers:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in workers:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=60)


def runs_in(files) -> list[tuple[str, float]]:
    runs = []
    for file in files:
        if file.exists():
            for line in file.read_text().splitlines():
                key, when = line.split()
                runs.append((key, float(when)))
    return runs


@pytest.mark.parametrize("procs,n", [(4, 3000), (16, 2000)])
def test_every_task_runs_exactly_once(tmp_path, procs, n):
    path = tmp_path / "jobs.tracker"
    keys = make_tracker(path, n)
    files = run_workers(path, tmp_path, procs, n)
    counts = Counter(key for key, _ in runs_in(files))
    assert sorted(counts) == keys, "some task never ran"
    assert [k for k, c in counts.items() if c > 1] == [], "some task ran twice"
    # Work was shared, not done by one process while the others waited.
    assert sum(1 for f in files if f.exists() and f.stat().st_size) > 1
    with Tracker(path) as tracker:
        assert tracker.num_done() == n
        assert all(tracker.tries(k) == 1 for k in keys)
        stats = tracker.stats()
        assert stats["leased"] == stats["expired"] == 0
        assert tracker.lease_info() == {}


def test_workers_started_together_on_a_new_tracker_make_it_and_run_every_task_once(tmp_path):
    # A job array's first run: no tracker yet; every worker opens it at
    # once, adds every key if absent, then runs the manual's loop.
    path = tmp_path / "jobs.tracker"
    n = 2000
    files = run_workers(path, tmp_path, 8, n, fresh=True)
    counts = Counter(key for key, _ in runs_in(files))
    assert sorted(counts) == [f"k{i:05d}" for i in range(n)], "some task never ran"
    assert [k for k, c in counts.items() if c > 1] == [], "some task ran twice"
    with Tracker(path) as tracker:
        assert len(tracker) == tracker.num_done() == n
        assert all(tracker.tries(k) == 1 for k in tracker)


def test_a_killed_worker_tasks_come_back_only_after_its_lease(tmp_path):
    path = tmp_path / "jobs.tracker"
    n = 300
    keys = make_tracker(path, n)
    env = child_env(TASTYPY_HOST="some-other-node")
    claimer = spawn_python(CLAIMER, path, tmp_path / "claimer.txt", 5, 2.0, env=env)
    try:
        assert claimer.stdout.readline().strip() == "ready", claimer.stderr.read()
    finally:
        claimer.kill()
        claimer.communicate(timeout=60)
    claimed = dict(line.split() for line in (tmp_path / "claimer.txt").read_text().splitlines())
    assert len(claimed) == 5
    files = run_workers(path, tmp_path, 3, n, until_done=True)
    runs = runs_in(files)
    counts = Counter(key for key, _ in runs)
    assert sorted(counts) == keys and set(counts.values()) == {1}
    for key, when in runs:
        if key in claimed:
            # Nobody ran it before the dead worker's lease ended.
            assert when >= float(claimed[key]) - 0.01, (key, when, claimed[key])
    with Tracker(path) as tracker:
        assert tracker.num_done() == n
        for key in claimed:
            assert tracker.tries(key) == 2  # the dead worker's try counts
        assert all(tracker.tries(k) == 1 for k in keys if k not in claimed)


def test_a_worker_that_dies_mid_loop_leaves_no_task_behind(tmp_path):
    # Killed at a random point of its loop on this host: its leases are void
    # at once, and the survivors finish everything it left.
    path = tmp_path / "jobs.tracker"
    n = 2000
    keys = make_tracker(path, n)
    victim = spawn_python(
        WORKER, path, tmp_path / "victim.txt", 0, 3600, n, 0, 0.001, stdin=subprocess.PIPE
    )
    assert victim.stdout.readline().strip() == "ready"
    victim.stdin.write("go\n")
    victim.stdin.flush()
    time.sleep(0.3)  # some 200 of its 2000 tasks (1 ms each)
    victim.kill()
    victim.communicate(timeout=60)
    files = run_workers(path, tmp_path, 3, n, until_done=True)
    ran = Counter(key for key, _ in runs_in(files))
    ran_by_victim = Counter(key for key, _ in runs_in([tmp_path / "victim.txt"]))
    assert 0 < len(ran_by_victim) < n  # killed in the middle of its loop
    assert set(ran) | set(ran_by_victim) == set(keys)
    assert all(c == 1 for c in ran.values())
    # At most the task it was running when killed runs twice.
    assert len(set(ran) & set(ran_by_victim)) <= 1
    with Tracker(path) as tracker:
        assert tracker.num_done() == n


def test_workers_that_exit_normally_end_every_lease(tmp_path):
    path = tmp_path / "jobs.tracker"
    make_tracker(path, 500)
    run_workers(path, tmp_path, 4, 500)
    with Tracker(path) as tracker:
        assert all("_holder" not in rec and "_lease_until" not in rec for rec in tracker.values())
        assert tracker.num_done() == 500


#: A worker adding its own new tasks through ``try_it`` (disjoint slices:
#: ``path first step n``), then noting something in each (a third record of
#: each task, so that stale records come to outnumber live ones), with
#: compaction made eager: whenever they do.
ADDER = """
import sys
import tastypy
import tastypy.storage.compaction
tastypy.storage.compaction._COMPACT_MIN_STALE = 0
path, first, step, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tracker = tastypy.Tracker(path, max_tries=3, sync_at=50)
print("ready", flush=True)
sys.stdin.readline()
mine = [f"new{i:06d}" for i in range(first, n, step)]
for key in mine:
    assert tracker.try_it(key), key
    tracker.mark_done(key)
for key in mine:
    tracker[key]["checked"] = True
tracker.close()
"""


def test_workers_adding_tasks_while_compacting_lose_none(tmp_path):
    # Each worker adds tasks the others never saw, so many keys wait in each
    # one's backlog (filed, not taken in) while it compacts: the count of
    # live keys it compacts on must include them, or every sync would find
    # "stale" records and compact again.
    path = tmp_path / "jobs.tracker"
    Tracker(path).close()
    procs, n = 4, 6000
    run_together(ADDER, [(path, i, procs, n) for i in range(procs)])
    with Tracker(path) as tracker:
        assert len(tracker) == n and tracker.num_done() == n
        assert all(rec["_tries"] == 1 and rec["checked"] for rec in tracker.values())
        generation = tracker._store.generation
    # Compactions happen, but not at every sync (there are over 100).
    assert 1 <= generation <= 12, generation


#: A process whose ``threads`` threads share one tracker (``path out
#: threads n``): each runs the manual's loop over its own share of the keys
#: (one process is one holder, which may take its own task again: threads
#: given the same key would each get it), and notes the keys it was
#: granted; the process writes them all to ``out`` at the end.
THREADED = """
import sys, threading
import tastypy
path, out, threads, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
keys = [f"k{i:05d}" for i in range(n)]
tracker = tastypy.Tracker(path, max_tries=3)
granted = []
print("ready", flush=True)
sys.stdin.readline()

def loop(share):
    for key in share:
        if tracker.try_it(key):
            granted.append(key)
            tracker.mark_done(key)

workers = [threading.Thread(target=loop, args=(keys[i::threads],)) for i in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
tracker.close()
with open(out, "w") as f:
    f.write("\\n".join(granted))
"""


def test_threads_sharing_a_tracker_and_another_process_never_get_one_task_twice(tmp_path):
    # One tracker object shared by four threads, and another process running
    # the same loop over the same keys: each grant must be decided and
    # written in one hold of the locks, or a thread grants a task on what it
    # knew before another thread took in the other process's claim of it.
    path = tmp_path / "jobs.tracker"
    n = 4000
    keys = make_tracker(path, n)
    outs = [tmp_path / "threads.txt", tmp_path / "alone.txt"]
    run_together(THREADED, [(path, outs[0], 4, n), (path, outs[1], 1, n)])
    granted = Counter(key for out in outs for key in out.read_text().split())
    assert [k for k, c in granted.items() if c > 1] == [], "a task was granted twice"
    assert sorted(granted) == keys
    with Tracker(path) as tracker:
        assert tracker.num_done() == n and all(tracker.tries(k) == 1 for k in keys)
