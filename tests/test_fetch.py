"""``tracker.fetch(key, fn, *args, recompute=False, **kwargs)``: ``fn`` runs
only for a task not done, its result, error, times and log recorded; two
processes (or threads) fetching one missing key compute it once; a holder
killed mid-way leaves the task to the next one asking.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import child_env, run_python, spawn_python

from tastypy import InvalidValueError, TaskFailedError, Tracker


def test_fetch_runs_once_and_returns_the_stored_result(tmp_path):
    calls = []

    def area(name, side, unit="cm"):
        calls.append(name)
        print(f"computing {name}")
        return (side * side, unit)

    path = tmp_path / "shapes.tracker"
    with Tracker(path) as tracker:
        # As JSON stores it, the first time too: the tuple comes back a list.
        assert tracker.fetch("sq3", area, "sq3", 3.0, unit="m") == [9.0, "m"]
        assert tracker.fetch("sq3", area, "sq3", 3.0, unit="m") == [9.0, "m"]
        assert calls == ["sq3"]
        rec = tracker["sq3"]
        assert rec["_done"] and rec["_tries"] == 1 and rec["result"] == [9.0, "m"]
        assert rec["_started"] <= rec["_ended"] and "_error" not in rec
        log = tracker.paths("sq3")["log"]
        assert "computing sq3" in log.read_text() and rec["_log"] == str(log.relative_to(path))
    # Another process gets it without running anything.
    out = run_python(
        """
        import sys
        from tastypy import Tracker
        def area(*a, **k):
            raise AssertionError("ran again")
        with Tracker(sys.argv[1]) as t:
            print(t.fetch("sq3", area, "sq3", 3.0))
        """,
        path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[9.0, 'm']"


def test_an_error_is_recorded_and_raised_and_the_next_fetch_runs_again(tmp_path):
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("the server went away")
        return "fine"

    with Tracker(tmp_path / "jobs.tracker") as tracker:
        with pytest.raises(ConnectionError, match="went away"):
            tracker.fetch("job", flaky)
        rec = tracker["job"]
        assert not rec["_done"] and rec["_error"]["type"] == "ConnectionError"
        assert "the server went away" in tracker.paths("job")["log"].read_text()
        assert tracker.fetch("job", flaky) == "fine"
        assert "_error" not in tracker["job"] and tracker.tries("job") == 2
        assert len(tracker.paths("job")["logs"]) == 2


def test_a_result_json_cannot_hold_fails_the_attempt(tmp_path):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        with pytest.raises(InvalidValueError, match="set"):
            tracker.fetch("job", lambda: {1, 2})
        assert not tracker.done("job") and tracker["job"]["_error"]["type"].endswith(
            "InvalidValueError"
        )


def test_out_of_tries_or_aborted_raises_task_failed(tmp_path):
    def boom():
        raise ValueError("always")

    with Tracker(tmp_path / "jobs.tracker", max_tries=2) as tracker:
        for _ in range(2):
            with pytest.raises(ValueError):
                tracker.fetch("job", boom)
        with pytest.raises(TaskFailedError, match="tried 2 times.*ValueError: always") as info:
            tracker.fetch("job", boom)
        assert info.value.key == "job" and info.value.last_error["message"] == "always"
        # recompute=True gives the tries back and runs it.
        assert tracker.fetch("job", lambda: 5, recompute=True) == 5
        tracker.add("stopped")
        tracker.abort("stopped")
        with pytest.raises(TaskFailedError, match="aborted"):
            tracker.fetch("stopped", lambda: 1)


def test_recompute_runs_a_done_task_again(tmp_path):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        assert tracker.fetch("t", time.time_ns) == tracker.fetch("t", time.time_ns)
        first = tracker.fetch("t", time.time_ns)
        second = tracker.fetch("t", time.time_ns, recompute=True)
        assert second > first and tracker.fetch("t", time.time_ns) == second
        assert tracker["t"]["result"] == second


FETCHER = """
    import os, sys, time
    from tastypy import Tracker

    path, marks, go = sys.argv[1], sys.argv[2], sys.argv[3]

    def slow(n):
        with open(marks, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(float(os.environ.get("SLOW", "1")))
        return {"n": n, "by": os.getpid()}

    tracker = Tracker(path, lease=float(os.environ.get("LEASE", "120")))
    while not os.path.exists(go):
        time.sleep(0.001)
    print(tracker.fetch("shared", slow, 7)["by"])
    tracker.close()
"""


def test_processes_fetching_one_missing_key_compute_it_once(tmp_path):
    path, marks, go = tmp_path / "jobs.tracker", tmp_path / "marks", tmp_path / "go"
    Tracker(path).close()
    procs = [spawn_python(FETCHER, path, marks, go) for _ in range(4)]
    time.sleep(0.5)
    go.write_text("")
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    computed_by = marks.read_text().split()
    assert len(computed_by) == 1  # one ran it
    assert {o[0].strip() for o in outs} == set(computed_by)  # all got its result


def test_a_holder_killed_mid_way_leaves_the_task_to_the_next(tmp_path):
    path, marks, go = tmp_path / "jobs.tracker", tmp_path / "marks", tmp_path / "go"
    Tracker(path).close()
    go.write_text("")
    first = spawn_python(FETCHER, path, marks, go, env=child_env(SLOW="60"))
    deadline = time.monotonic() + 60
    while not (marks.exists() and marks.read_text()):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.01)
    second = spawn_python(FETCHER, path, marks, go, env=child_env(SLOW="0"))
    time.sleep(0.5)
    assert second.poll() is None  # waiting for the holder
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert out.strip() == str(second.pid)
    assert marks.read_text().split() == [str(first.pid), str(second.pid)]


def test_fetch_on_a_parted_tracker(tmp_path):
    with Tracker(tmp_path / "big.tracker", shards=4) as tracker:
        results = [tracker.fetch(f"k{i}", pow, i, 2) for i in range(10)]
        assert results == [i * i for i in range(10)]
        assert tracker.fetch("k3", pow, 100, 2) == 9  # stored, not run again
        assert tracker.num_done() == 10


def test_fn_may_take_keyword_arguments_named_key_and_fn(tmp_path):
    def label(key, fn="f"):
        return f"{key}:{fn}"

    with Tracker(tmp_path / "jobs.tracker") as tracker:
        assert tracker.fetch("t", label, key="k", fn="g") == "k:g"
        assert tracker.fetch("t", label, key="other") == "k:g"  # stored


@pytest.mark.parametrize("handles", ["one", "two, clone=True", "two, clone=False"])
def test_threads_fetching_one_missing_key_compute_it_once(tmp_path, handles):
    # Two handles are this process, one lease holder: the lease cannot keep
    # their threads apart, so fetch must, whichever handle each uses.
    calls = []
    gate = threading.Barrier(6)

    def slow():
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return len(calls)

    got = []
    path = tmp_path / "jobs.tracker"
    with Tracker(path) as first:
        second = first if handles == "one" else Tracker(path, clone=handles.endswith("True"))

        def worker(tracker):
            gate.wait()
            got.append(tracker.fetch("once", slow))

        threads = [threading.Thread(target=worker, args=(h,)) for h in (first, second) * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if second is not first:
            second.close()
    assert len(calls) == 1 and got == [1] * 6
