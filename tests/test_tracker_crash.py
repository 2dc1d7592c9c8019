"""What a crash must not undo, checked with real processes killed for real.

* After a SIGKILL while task N runs, every task marked done before task N
  started is still done, and task N's try is counted, without the job ever
  calling ``sync()``.
* A task that kills its process every time is tried at most ``max_tries``
  times over successive runs, then skipped.

Both with the quick path (``lock='posix'``: a try is appended with four
system calls) and with the ordinary sync (``lock='soft'``).
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from conftest import child_env, run_python, spawn_python, without_lease

from tastypy import Tracker

LOCKS = ["posix", "soft"]

#: A job over tasks 0..n-1 in the manual's try_it loop. Task ``kill_at``
#: kills its own process; every task stores a result before it is done.
TRY_IT_JOB = """
import os, signal, sys
from tastypy import Tracker
path, lock = sys.argv[1], sys.argv[4]
n, kill_at, sync_at = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
tracker = Tracker(path, max_tries=3, lock=lock, sync_at=sync_at)
for task in range(n):
    if not tracker.try_it(task):
        continue
    if task == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    tracker[task]["result"] = task * task
    tracker.mark_done(task)
"""

#: The same job written with attempts().
ATTEMPTS_JOB = """
import os, signal, sys
from tastypy import Tracker
path, n, kill_at, lock = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tracker = Tracker(path, max_tries=3, lock=lock)
for task in tracker.attempts(range(n)):
    with task:
        if task.key == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        task["result"] = task.key * task.key
"""


def records(path) -> dict:
    with Tracker(path) as tracker:
        return {key: dict(rec) for key, rec in tracker.items()}


def assert_sigkilled(proc) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])


@pytest.mark.parametrize("lock", LOCKS)
@pytest.mark.parametrize("kill_at", [0, 1, 37])
def test_sigkill_in_task_n_keeps_everything_done_before_and_counts_its_try(tmp_path, lock, kill_at):
    path = tmp_path / "job.tracker"
    proc = run_python(TRY_IT_JOB, path, 60, kill_at, lock, 1000)
    assert_sigkilled(proc)
    got = records(path)
    for task in range(kill_at):
        assert got[task]["_done"] is True, task
        assert got[task]["result"] == task * task
        assert got[task]["_tries"] == 1
    assert got[kill_at]["_tries"] == 1 and got[kill_at]["_done"] is False
    assert list(got) == list(range(kill_at + 1))


@pytest.mark.parametrize("lock", LOCKS)
def test_sigkill_after_several_fsync_rounds(tmp_path, lock):
    # sync_at=7: durable syncs and quick appends interleave.
    path = tmp_path / "job.tracker"
    proc = run_python(TRY_IT_JOB, path, 200, 123, lock, 7)
    assert_sigkilled(proc)
    got = records(path)
    assert all(got[task]["_done"] and got[task]["result"] == task * task for task in range(123))
    assert without_lease(got[123]) == {"_done": False, "_tries": 1, "_aborted": False}


@pytest.mark.parametrize("lock", LOCKS)
def test_sigkill_inside_attempts_keeps_what_was_done_and_the_started_try(tmp_path, lock):
    path = tmp_path / "job.tracker"
    proc = run_python(ATTEMPTS_JOB, path, 30, 12, lock)
    assert_sigkilled(proc)
    got = records(path)
    assert all(got[task]["_done"] and got[task]["result"] == task * task for task in range(12))
    assert got[12]["_tries"] == 1 and not got[12]["_done"]
    assert "_started" in got[12] and "_ended" not in got[12]
    with Tracker(path, max_tries=3) as tracker:
        assert tracker.stats()["in_progress"] == 1  # cut short by the crash
        assert tracker.stats()["todo"] == 17


@pytest.mark.parametrize("lock", LOCKS)
def test_a_task_that_always_kills_its_process_is_tried_max_tries_times(tmp_path, lock):
    path = tmp_path / "job.tracker"
    statuses = []
    for _ in range(5):
        proc = run_python(TRY_IT_JOB, path, 20, 9, lock, 1000)
        statuses.append(proc.returncode)
    # Three runs die in task 9 (its try counted each time); then it is skipped.
    assert statuses == [-signal.SIGKILL] * 3 + [0, 0], statuses
    got = records(path)
    assert without_lease(got[9]) == {"_done": False, "_tries": 3, "_aborted": False}
    assert all(got[task]["_done"] and got[task]["_tries"] == 1 for task in range(20) if task != 9)
    with Tracker(path, max_tries=3) as tracker:
        assert tracker.stats()["failed"] == 1
        assert not tracker.try_it(9)


def test_an_exception_in_a_task_still_syncs_what_was_done(tmp_path):
    path = tmp_path / "job.tracker"
    proc = run_python(
        """
        import sys
        from tastypy import Tracker
        tracker = Tracker(sys.argv[1], max_tries=3)
        for task in range(10):
            if tracker.try_it(task):
                if task == 6:
                    raise RuntimeError("task 6 broke")
                tracker.mark_done(task)
        """,
        path,
    )
    assert proc.returncode == 1 and "task 6 broke" in proc.stderr
    got = records(path)
    assert [k for k, rec in got.items() if rec["_done"]] == list(range(6))
    assert got[6]["_tries"] == 1


def test_sigterm_in_a_task_syncs_and_the_job_carries_on_next_run(tmp_path):
    path = tmp_path / "job.tracker"
    ready = tmp_path / "ready"
    proc = spawn_python(
        """
        import sys, time
        from pathlib import Path
        from tastypy import Tracker
        tracker = Tracker(sys.argv[1], max_tries=3)
        for task in range(100):
            if not tracker.try_it(task):
                continue
            if task == 50:
                Path(sys.argv[2]).touch()
                time.sleep(60)
            tracker.mark_done(task)
        """,
        path,
        ready,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    got = records(path)
    assert sum(rec["_done"] for rec in got.values()) == 50 and got[50]["_tries"] == 1
    proc = run_python(TRY_IT_JOB, path, 100, -1, "posix", 1000)
    assert proc.returncode == 0, proc.stderr
    got = records(path)
    assert all(rec["_done"] for rec in got.values()) and len(got) == 100
    assert got[50]["_tries"] == 2 and got[49]["_tries"] == 1


WORKER = """
import sys
from tastypy import Tracker
path, first, n, lock = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with Tracker(path, max_tries=2, lock=lock) as tracker:
    for task in range(first, first + n):
        if tracker.try_it(task):
            tracker[task]["by"] = first
            tracker.mark_done(task)
"""


@pytest.mark.parametrize("lock", LOCKS)
def test_processes_sharing_a_tracker_lose_nothing(tmp_path, lock):
    path = tmp_path / "job.tracker"
    Tracker(path).close()
    n = 600 if lock == "posix" else 150
    procs = [spawn_python(WORKER, path, w * n, n, lock) for w in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    got = records(path)
    assert len(got) == 3 * n
    assert all(rec["_done"] and rec["_tries"] == 1 for rec in got.values())
    assert all(rec["by"] == key // n * n for key, rec in got.items())
    with Tracker(path) as tracker:
        assert tracker.num_done() == 3 * n and tracker.num_tried() == 3 * n


def test_tries_written_while_a_compaction_died_halfway_are_not_lost(tmp_path):
    # A compaction killed after switching the manifest and before deleting
    # the old journal leaves that journal in place, sealed: the quick path
    # sees it grew and takes the ordinary path, which loads the new
    # generation. (Were a quick write to land in the old journal anyway,
    # the next sync would write those records again into the live one.)
    path = tmp_path / "job.tracker"
    tracker = Tracker(path, max_tries=3, lock="posix")
    try:
        for task in range(5):
            assert tracker.try_it(task)
            tracker.mark_done(task)
        compactor = run_python(
            """
            import sys
            from tastypy import Tracker
            Tracker(sys.argv[1]).compact()
            """,
            path,
            env=child_env(TASTYPY_FAULT="compact-after-manifest:1:kill"),
        )
        assert_sigkilled(compactor)
        for task in range(5, 10):
            assert tracker.try_it(task)
            tracker.mark_done(task)
        assert tracker.try_it(10)
    finally:
        tracker.close()
    got = records(path)
    assert [k for k, rec in got.items() if rec["_done"]] == list(range(10))
    assert got[10]["_tries"] == 1


@pytest.mark.parametrize("lock", LOCKS)
def test_a_full_disk_stops_the_loop_before_the_task_runs(tmp_path, lock):
    path = tmp_path / "job.tracker"
    proc = run_python(
        """
        import json, os, resource, signal, sys
        import tastypy
        # Past RLIMIT_FSIZE a write fails with EFBIG, as a full disk fails
        # with ENOSPC.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        tracker = tastypy.Tracker(sys.argv[1], max_tries=3, lock=sys.argv[2])
        tracker.try_it(0)
        tracker.mark_done(0)
        journal = os.path.join(sys.argv[1], "journal-000000.jsonl")
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(journal) + 2000, hard))
        ran, error = [], None
        try:
            for task in range(1, 1000):
                if tracker.try_it(task):
                    ran.append(task)
                    tracker.mark_done(task)
        except tastypy.StorageError as exc:
            error = str(exc)
        with tastypy.Tracker(sys.argv[1], clone=False) as other:  # as another process
            on_disk = sorted(k for k, rec in other.items() if rec["_done"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        # Space is back: the loop carries on where it stopped.
        for task in range(1, 1000):
            if tracker.try_it(task):
                ran.append(task)
                tracker.mark_done(task)
        tracker.close()
        print(json.dumps({"ran": ran, "error": error, "on_disk": on_disk}))
        """,
        path,
        lock,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "journal-000000.jsonl" in out["error"]
    # The failing try raised before its task ran; every task ran exactly once.
    assert out["ran"] == list(range(1, 1000))
    assert out["on_disk"] == list(range(len(out["on_disk"])))
    got = records(path)
    assert all(rec["_done"] for rec in got.values()) and len(got) == 1000
