"""Every ProgressTracker example of the original tastypy manual (seeds/002), as a test.

Each run of a job is its own Python process, in a scratch working directory,
with the manual's relative path ``path/to/my.tracker``. The manual's own
slips are fixed, each where it occurs:

* both examples call ``do_work(task)`` inside ``do_work(work_queue)``, which
  would recurse; the work on one task is called ``work(task)`` here;
* the first example checks ``tracker.tries(...) > MAX_TRIES`` but never
  counts a try, so the check could never fire; it counts one
  (``increment_tries``) before the work, and compares with ``>=`` so a task
  is tried at most ``MAX_TRIES`` times;
* the second example stores ``result`` without assigning it; it is what
  ``work(task)`` returns;
* a result object is not JSON; the examples store its ``value``.
"""

from __future__ import annotations

import textwrap

from conftest import run_python

from tastypy import Tracker

#: The work queue both examples walk through: task ``t3`` fails the first
#: time it is tried, ``t5`` fails every time. Failing means returning an
#: unsuccessful result, or raising when ``MODE == "raise"``.
PRELUDE = """
import os
import sys
import tastypy

MAX_TRIES = 3

class Task:
    def __init__(self, name):
        self.name = name

class Result:
    def __init__(self, success, value):
        self.success = success
        self.value = value

def work(task):
    first_time = not os.path.exists(f"{task.name}.tried")
    open(f"{task.name}.tried", "a").close()
    if task.name == "t5" or (task.name == "t3" and first_time):
        if MODE == "raise":
            raise RuntimeError(f"{task.name} failed")
        return Result(False, None)
    return Result(True, task.name.upper())

work_queue = [Task(f"t{i}") for i in range(8)]
"""

#: The manual's first example: the steps written out.
FIRST_EXAMPLE = """
MODE = "result"

def do_work(work_queue):

    tracker = tastypy.Tracker('path/to/my.tracker')

    for task in work_queue:

        # If the task has be done, skip it
        if tracker.check(task.name):
            continue

        # Add the task if it is not already in the tracker
        if task.name not in tracker:
            tracker.add(task.name)

        # Skip this task if we've tried it too many times
        if tracker.tries(task.name) >= MAX_TRIES:
            continue
        tracker.increment_tries(task.name)

        # Now attempt the task
        result = work(task)

        # If it succeeded, mark the task done, and record results
        if result.success:
            tracker.mark_done(task.name)
            tracker[task.name]['result'] = result.value

do_work(work_queue)
"""

#: The manual's second example: try_it.
SECOND_EXAMPLE = """
MODE = sys.argv[1]

def do_work(work_queue):

    tracker = tastypy.Tracker('path/to/my.tracker', max_tries=3)

    for task in work_queue:

        # Skip tasks that are done or tried too many times
        if not tracker.try_it(task.name):
            continue

        # Do the work
        result = work(task)
        if not result.success:
            continue

        # Mark the task done and record results
        tracker.mark_done(task.name)
        tracker[task.name]['result'] = result.value

do_work(work_queue)
"""


def run_job(cwd, example: str, *args: str):
    return run_python(PRELUDE + textwrap.dedent(example), *args, cwd=cwd)


def final_state(cwd) -> dict:
    with Tracker(cwd / "path" / "to" / "my.tracker") as tracker:
        return {key: dict(rec) for key, rec in tracker.items()}


def test_the_first_example_writes_the_steps_out(tmp_path):
    for _run in range(4):
        result = run_job(tmp_path, FIRST_EXAMPLE)
        assert result.returncode == 0, result.stderr
    state = final_state(tmp_path)
    assert list(state) == [f"t{i}" for i in range(8)]
    for name, rec in state.items():
        if name == "t5":
            assert rec == {"_done": False, "_tries": 3, "_aborted": False}
        else:
            assert rec["_done"] and rec["result"] == name.upper()
    assert state["t3"]["_tries"] == 2 and state["t0"]["_tries"] == 1


def test_the_second_example_with_try_it(tmp_path):
    for _run in range(4):
        result = run_job(tmp_path, SECOND_EXAMPLE, "result")
        assert result.returncode == 0, result.stderr
    state = final_state(tmp_path)
    assert state["t5"] == {"_done": False, "_tries": 3, "_aborted": False}
    assert state["t3"]["_tries"] == 2 and state["t3"]["result"] == "T3"
    assert all(rec["_done"] for name, rec in state.items() if name != "t5")


def test_the_second_example_picks_up_where_a_crashed_run_left_off(tmp_path):
    # Work that raises ends the run; the next run carries on where it stopped.
    statuses = []
    for _run in range(5):
        statuses.append(run_job(tmp_path, SECOND_EXAMPLE, "raise").returncode)
    # Runs 1-2 stop at t3 then at t5; t5 ends them until it is out of tries.
    assert statuses == [1, 1, 1, 1, 0], statuses
    state = final_state(tmp_path)
    assert state["t5"]["_tries"] == 3 and not state["t5"]["_done"]
    assert all(state[f"t{i}"]["_tries"] == 1 for i in (0, 1, 2, 4, 6, 7))
    assert state["t3"]["_tries"] == 2
    assert all(rec["_done"] for name, rec in state.items() if name != "t5")


def test_each_value_holds_the_special_keys_and_anything_else(tmp_path):
    result = run_job(tmp_path, SECOND_EXAMPLE, "result")
    assert result.returncode == 0, result.stderr
    for rec in final_state(tmp_path).values():
        assert {"_tries", "_done", "_aborted"} <= set(rec)
        # _done_at: when it was done (tastypy 0.0.3 recorded no time).
        assert set(rec) - {"_tries", "_done", "_aborted", "_done_at"} <= {"result"}
