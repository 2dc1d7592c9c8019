"""Captured logs: ``attempts(capture=True)``, ``attempt(capture=True)`` and
``run(capture=True)`` write what a task prints (stdout, stderr) and logs
to one file per attempt, shown live with ``echo=True``; tasks running at
once in threads each get their own; no logging handler or stream is left
behind (hadrosaur's leak).

The functions a pool runs are at module level (a process pool pickles them).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from conftest import run_python

from tastypy import Tracker

SCRIPT = """
    import json, logging, sys
    from tastypy import Tracker

    path, echo, userlog, report = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
    logging.basicConfig(filename=userlog, level=logging.INFO, format="%(message)s")
    before = list(logging.getLogger().handlers)
    out, err = sys.stdout, sys.stderr
    tracker = Tracker(path)
    keys = [f"k{i}" for i in range(30)]
    for task in tracker.attempts(keys, capture=True, echo=echo):
        with task:
            print(f"out {task.key}")
            sys.stderr.write(f"err {task.key}\\n")
            logging.getLogger("work").info("info %s", task.key)
            logging.getLogger("work").warning("warning %s", task.key)
            if task.key.endswith("7"):
                raise ValueError(f"bad {task.key}")
    tracker.close()
    after = logging.getLogger().handlers
    json.dump({"handlers_kept": after == before, "streams_kept": sys.stdout is out
               and sys.stderr is err}, open(report, "w"))
"""


@pytest.mark.parametrize("echo", [False, True], ids=["quiet", "echo"])
def test_attempts_capture_each_tasks_output_in_a_real_process(tmp_path, echo):
    path, userlog, report = tmp_path / "jobs.tracker", tmp_path / "user.log", tmp_path / "r.json"
    out = run_python(SCRIPT, path, int(echo), userlog, report)
    assert out.returncode == 0, out.stderr
    assert json.loads(report.read_text()) == {"handlers_kept": True, "streams_kept": True}
    # Shown live only when asked.
    assert ("out k3" in out.stdout) is echo and ("err k3" in out.stderr) is echo
    with Tracker(path) as tracker:
        for i in range(30):
            key = f"k{i}"
            log = tracker.paths(key)["log"]
            text = log.read_text()
            lines = text.splitlines()
            assert lines[0].startswith(f"--- tastypy: attempt at {key!r} by ")
            assert f"out {key}" in lines and f"err {key}" in lines
            assert any(line.endswith(f"INFO work: info {key}") for line in lines)
            assert any(line.endswith(f"WARNING work: warning {key}") for line in lines)
            # Nothing of another task.
            others = [line for line in lines if " k" in line and not line.endswith(key)]
            assert not [o for o in others if not o.startswith(("--- tastypy", "Traceback"))]
            assert tracker[key]["_log"] == str(log.relative_to(path))
            if i % 10 == 7:
                assert "--- tastypy: failed at" in text
                assert text.rstrip().endswith(f"ValueError: bad {key}")
                assert tracker[key]["_error"]["type"] == "ValueError"
            else:
                assert lines[-1].startswith("--- tastypy: done at")
    # The user's own handler still got every record.
    user = userlog.read_text().splitlines()
    assert "info k0" in user and "warning k29" in user


def chatty(key: int) -> int:
    """Prints and logs a few lines, slowly, so that threads interleave."""
    for line in range(20):
        print(f"task {key} line {line}")
        if line % 5 == 0:
            logging.getLogger("chatty").warning("task %s warns %s", key, line)
        sys.stderr.write(f"task {key} err {line}\n")
        time.sleep(0.001)
    if key == 3:
        raise RuntimeError("three fails")
    return key


def _check_chatty_logs(tracker: Tracker, keys: range) -> None:
    for key in keys:
        text = tracker.paths(key)["log"].read_text()
        body = [line for line in text.splitlines() if line.startswith("task ") or " task " in line]
        assert len(body) == 44, (key, text)  # 20 printed, 20 on stderr, 4 warnings
        assert all(f"task {key} " in line for line in body), (key, text)
        if key == 3:
            assert "RuntimeError: three fails" in text


def test_run_through_threads_keeps_each_tasks_log_apart(tmp_path):
    root = logging.getLogger()
    handlers, out, err = list(root.handlers), sys.stdout, sys.stderr
    with Tracker(tmp_path / "jobs.tracker") as tracker, ThreadPoolExecutor(8) as pool:
        summary = tracker.run(chatty, range(24), executor=pool, capture=True)
        assert summary["done"] == 23 and summary["failed"] == 1
        _check_chatty_logs(tracker, range(24))
    assert root.handlers == handlers and sys.stdout is out and sys.stderr is err


def test_run_through_processes_writes_the_logs_in_the_workers(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        with ProcessPoolExecutor(2, mp_context=spawn) as pool:
            summary = tracker.run(chatty, range(8), executor=pool, capture=True, chunksize=2)
        assert summary["done"] == 7 and summary["failed"] == 1
        _check_chatty_logs(tracker, range(8))


def test_run_through_a_parted_tracker_and_threads(tmp_path):
    with Tracker(tmp_path / "big.tracker", shards=3) as tracker, ThreadPoolExecutor(4) as pool:
        tracker.run(chatty, range(12), executor=pool, capture=True)
        _check_chatty_logs(tracker, range(12))


def test_no_handler_or_stream_is_left_after_many_tasks(tmp_path, capsys):
    root = logging.getLogger()
    handlers, out = list(root.handlers), sys.stdout
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        for task in tracker.attempts(range(50), capture=True):
            with task:
                logging.getLogger("n").error("task %s", task.key)
                print("printed", task.key)
            # After each task: as before.
            assert root.handlers == handlers and sys.stdout is out
        # Task 1's log holds nothing of task 0's, nor 49's of any other.
        for key in (1, 49):
            text = tracker.paths(key)["log"].read_text()
            assert f"printed {key}\n" in text and f"ERROR n: task {key}\n" in text
            assert text.count("printed") == 1 and text.count("ERROR") == 1
    # Nothing leaked to the terminal without echo.
    assert "printed" not in capsys.readouterr().out


def test_ctrl_c_in_a_task_closes_its_log_and_unroutes(tmp_path):
    root = logging.getLogger()
    handlers, out = list(root.handlers), sys.stdout
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        with pytest.raises(KeyboardInterrupt):
            with tracker.attempt("job", capture=True) as task:
                print("before the interrupt")
                raise KeyboardInterrupt
        assert root.handlers == handlers and sys.stdout is out
        text = task.log_path.read_text()
        assert "before the interrupt" in text and "--- tastypy: interrupted at" in text
        assert tracker.tries("job") == 0  # the try given back


def test_echo_shows_the_output_and_logs_it(tmp_path, capsys):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        with tracker.attempt("job", capture=True, echo=True) as task:
            print("seen and kept")
        assert "seen and kept" in capsys.readouterr().out
        assert "seen and kept" in task.log_path.read_text()


def test_without_capture_nothing_is_routed_or_written(tmp_path, capsys):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        with tracker.attempt("job") as task:
            print("plain")
        assert task.log_path is None and "_log" not in tracker["job"]
        assert not os.path.exists(tmp_path / "jobs.tracker" / "tasks")
    assert "plain" in capsys.readouterr().out


def test_a_log_that_cannot_be_made_fails_the_attempt_recorded(tmp_path):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        base = tracker.storage("job").parent
        os.rmdir(base / "logs")
        (base / "logs").write_text("planted: a file where the logs directory goes")
        ran, out = [], sys.stdout
        with pytest.raises(OSError, match="not a directory"):
            with tracker.attempt("job", capture=True):
                ran.append(1)
        assert ran == []  # the block did not run uncaptured
        rec = tracker["job"]
        assert not rec["_done"] and rec["_tries"] == 1 and "_lease_until" not in rec
        assert "not a directory" in rec["_error"]["message"]
        assert sys.stdout is out  # nothing left routed


def test_an_attempt_ended_from_another_thread_stops_capturing(tmp_path, capsys):
    root = logging.getLogger()
    handlers, out = list(root.handlers), sys.stdout
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        task = tracker.attempt("job", capture=True)
        task.__enter__()
        print("inside")
        ender = threading.Thread(target=task.end)
        ender.start()
        ender.join()
        assert task.outcome == "done" and tracker.done("job")
        print("after the end")  # not into the closed log, no error
        logging.getLogger("n").error("logged after the end")
        assert root.handlers == handlers and sys.stdout is out
        text = task.log_path.read_text()
        assert "inside" in text and "after the end" not in text and "logged after" not in text
    assert "after the end" in capsys.readouterr().out
