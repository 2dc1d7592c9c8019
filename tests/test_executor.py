"""``tracker.run(fn, executor=...)``: every task not done runs once, through
a process pool, a thread pool or dask.distributed; outcomes land in the
records; a second call does only what is left.

The functions a pool runs are defined at module level (a process pool
pickles them by name).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from conftest import spawn_python
from test_tracker_processes import run_together

from tastypy import InvalidArgumentError, Tracker


def square_or_fail(key: int) -> dict:
    """The work: fails for multiples of 7, else returns a result and who ran it."""
    if key % 7 == 0:
        raise ValueError(f"{key} is a multiple of 7")
    return {"square": key * key, "pid": os.getpid()}


def not_json(key: int) -> object:
    return {1, 2, 3}


def slow_and_logged(key: int) -> int:
    with open(os.environ["RUN_LOG"], "a") as f:
        f.write(f"{key}\n")
    time.sleep(0.01)
    return key


@pytest.fixture(params=[None, 4], ids=["one-store", "parts"])
def tracker(tmp_path, request):
    # Each run test on a tracker in one store and on one in 4 parts.
    t = Tracker(tmp_path / "jobs.tracker", max_tries=2, shards=request.param)
    yield t
    t.close()


def check_first_run(tracker, summary, n=70):
    failing = [k for k in range(n) if k % 7 == 0]
    assert summary["submitted"] == n
    assert summary["done"] == n - len(failing) and summary["failed"] == len(failing)
    assert summary["skipped"] == 0 and summary["left"] == len(failing)
    assert summary["errors"][14] == "ValueError: 14 is a multiple of 7"
    for key in range(n):
        rec = tracker[key]
        assert "_lease_until" not in rec and rec["_tries"] == 1
        if key % 7:
            assert rec["_done"] and rec["result"]["square"] == key * key
        else:
            assert not rec["_done"] and rec["_error"]["type"] == "ValueError"


def test_run_through_a_process_pool(tracker):
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        summary = tracker.run(square_or_fail, range(70), executor=pool, chunksize=5)
        check_first_run(tracker, summary)
        # The counts say what the workers did (a parted tracker's, from its summaries).
        assert tracker.num_done() == 60 and tracker.stats()["failed"] == 0
        pids = {tracker[k]["result"]["pid"] for k in range(70) if k % 7}
        assert os.getpid() not in pids and 1 <= len(pids) <= 2
        # Again: only the failed ones, once more; then nothing is left to try.
        again = tracker.run(square_or_fail, executor=pool)
        assert (again["submitted"], again["failed"], again["done"]) == (10, 10, 0)
        assert tracker.tries(14) == 2
        last = tracker.run(square_or_fail, executor=pool)
        assert last["submitted"] == 0 and last["left"] == 10


def test_run_through_a_thread_pool(tracker):
    with ThreadPoolExecutor(4) as pool:
        summary = tracker.run(square_or_fail, range(70), executor=pool)
    check_first_run(tracker, summary)
    assert {tracker[k]["result"]["pid"] for k in range(70) if k % 7} == {os.getpid()}


def test_run_in_this_process_without_an_executor(tracker):
    summary = tracker.run(square_or_fail, range(70))
    check_first_run(tracker, summary)


def test_run_through_dask_distributed(tracker):
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        summary = tracker.run(square_or_fail, range(70), executor=client, chunksize=7)
        check_first_run(tracker, summary)
        again = tracker.run(square_or_fail, executor=client)
        assert again["submitted"] == again["failed"] == 10


def test_run_through_dask_worker_processes(tracker):
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        summary = tracker.run(
            square_or_fail, range(70), executor=client.get_executor(), chunksize=10
        )
    check_first_run(tracker, summary)
    assert os.getpid() not in {tracker[k]["result"]["pid"] for k in range(70) if k % 7}


def test_a_result_json_cannot_hold_is_a_failure(tracker):
    summary = tracker.run(not_json, ["a"])
    assert summary["failed"] == 1 and "cannot store the value for key 'a'" in summary["errors"]["a"]
    error = tracker["a"]["_error"]
    assert error["type"] == "tastypy.errors.InvalidValueError" and "result" not in tracker["a"]


def test_run_refuses_bad_arguments(tracker):
    with pytest.raises(InvalidArgumentError, match="executor"):
        tracker.run(square_or_fail, [1], executor=object())
    with pytest.raises(InvalidArgumentError, match="chunksize"):
        tracker.run(square_or_fail, [1], chunksize=0)
    with pytest.raises(InvalidArgumentError, match="result_field"):
        tracker.run(square_or_fail, [1], result_field="_done")
    with pytest.raises(InvalidArgumentError, match="fn"):
        tracker.run("not a function", [1])


def test_run_shows_progress(tracker, capsys):
    tracker.run(square_or_fail, range(20), progress="plain")
    assert "tastypy: 17/20 done" in capsys.readouterr().err


#: A job run by tracker.run through a thread pool, killed midway.
JOB = """
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
import tastypy
sys.path.insert(0, sys.argv[2])
from test_executor import slow_and_logged
tracker = tastypy.Tracker(sys.argv[1])
with ThreadPoolExecutor(2) as pool:
    tracker.run(slow_and_logged, range(300), executor=pool)
"""


def test_running_again_after_a_crash_does_only_what_is_left(tmp_path, monkeypatch):
    log = tmp_path / "ran.txt"
    monkeypatch.setenv("RUN_LOG", str(log))
    path = tmp_path / "jobs.tracker"
    job = spawn_python(JOB, path, os.path.dirname(__file__), env={**os.environ})
    deadline = time.time() + 60
    while (not log.exists() or len(log.read_text().split()) < 40) and time.time() < deadline:
        time.sleep(0.02)
    job.kill()
    job.communicate(timeout=60)
    first = [int(k) for k in log.read_text().split()]
    assert 40 <= len(first) < 300
    with Tracker(path) as tracker:
        done_before = {k for k in range(300) if tracker.done(k)}
        assert len(first) - 2 <= len(done_before) <= len(first)  # at most 2 were running
        with ThreadPoolExecutor(4) as pool:
            summary = tracker.run(slow_and_logged, range(300), executor=pool)
        assert summary["submitted"] == 300 - len(done_before)
        assert summary["done"] == summary["submitted"] and summary["left"] == 0
    second = [int(k) for k in log.read_text().split()][len(first) :]
    assert not done_before & set(second)
    assert sorted(set(first) | set(second)) == list(range(300))


RUNNER = """
import os, sys
import tastypy
path, log = sys.argv[1], sys.argv[2]
def work(key):
    with open(log, "a") as f:
        f.write(f"{key}\\n")
    if key % 7 == 0:
        raise ValueError("a multiple of 7")
    return key * key
print("ready", flush=True)
sys.stdin.readline()  # all start together
with tastypy.Tracker(path, max_tries=1) as tracker:
    summary = tracker.run(work, range(600))
print(summary["done"], summary["failed"], summary["skipped"], flush=True)
"""


def test_copies_of_one_script_calling_run_on_a_new_tracker_share_the_work(tmp_path):
    # A job array whose script calls tracker.run(fn, keys) without an
    # executor: each copy adds the keys, then runs what it can claim.
    path = tmp_path / "jobs.tracker"
    logs = [tmp_path / f"run{i}.log" for i in range(4)]
    run_together(RUNNER, [(path, log) for log in logs])
    ran = [int(line) for log in logs if log.exists() for line in log.read_text().split()]
    assert sorted(ran) == list(range(600)), "a task ran twice, or never"
    assert sum(1 for log in logs if log.exists()) > 1, "one copy did all the work"
    with Tracker(path) as tracker:
        assert tracker.num_done() == 600 - len(range(0, 600, 7))
        assert all(tracker.tries(k) == 1 for k in range(600))
        assert tracker[14]["_error"]["type"] == "ValueError"
        assert tracker[15]["result"] == 225
