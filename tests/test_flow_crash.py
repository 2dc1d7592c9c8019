"""Flows and real processes: SIGKILL mid-run and resume (with ``--jobs``,
whose workers stop when the flow's process dies), Ctrl-C, and two runs of
one flow at once, which share the work and run each task once."""

from __future__ import annotations

import collections
import os
import signal
import time

from flowkit import counts, runs, spawn_cli, write_flow

from tastypy import Tracker

#: Tasks of the killed flow, each taking this long.
TASKS = 24
SLEEP = 0.3


def _wait_for(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def slow_flow(folder):
    # $PPID in the command is the process that started its shell: the worker.
    tasks = [
        {
            "id": f"t{i:02d}",
            "artifact": f"out/t{i:02d}",
            "command": f"echo t{i:02d}:$$PPID >> runs.log; sleep {SLEEP}; "
            f"mkdir -p out; touch out/t{i:02d}",
        }
        for i in range(TASKS)
    ]
    tasks.append({"id": "all", "dependencies": [t["id"] for t in tasks]})
    return write_flow(folder, tasks)


def test_a_flow_killed_mid_run_resumes_where_it_stopped(tmp_path):
    flow = slow_flow(tmp_path)
    first = spawn_cli(tmp_path, "ex.all", flow, "--jobs", "2", "--quiet")
    _wait_for(lambda: len(runs(tmp_path)) >= 6)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert first.returncode == -signal.SIGKILL
    workers = {int(line.split(":")[1]) for line in runs(tmp_path)}
    assert first.pid not in workers and len(workers) == 2
    _wait_for(lambda: not any(_alive(pid) for pid in workers), 15)  # they stop with it
    made = {p.name for p in (tmp_path / "out").iterdir()}
    started = {line.split(":")[0] for line in runs(tmp_path)}
    assert 4 <= len(made) < TASKS and made <= started

    again = spawn_cli(tmp_path, "ex.all", flow, "--jobs", "2", "--quiet")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    ran = collections.Counter(line.split(":")[0] for line in runs(tmp_path))
    assert set(ran) == {f"t{i:02d}" for i in range(TASKS)}
    assert all(ran[name] == 1 for name in made)  # done before the kill: not again
    assert sum(ran.values()) <= TASKS + 2  # only those running at the kill ran twice
    with Tracker(tmp_path / ".tastypy-flow" / "flow") as tracker:
        assert tracker.num_done() == TASKS + 1
        assert tracker.stats()["in_progress"] == 0

    third = spawn_cli(tmp_path, "ex.all", flow, "--quiet")
    assert third.communicate(timeout=60)[0].startswith("0 ran, 1 found done, 0 failed")


def test_ctrl_c_stops_the_flow_and_gives_the_try_back(tmp_path):
    flow = write_flow(tmp_path, [{"id": "t", "command": "echo started >> runs.log; sleep 30"}])
    child = spawn_cli(tmp_path, "ex.t", flow, own_group=True)
    _wait_for(lambda: runs(tmp_path) == ["started"])
    os.killpg(child.pid, signal.SIGINT)  # as Ctrl-C at a terminal: the whole group
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130
    assert "interrupted; run the same command again to resume" in err
    with Tracker(tmp_path / ".tastypy-flow" / "flow") as tracker:
        rec = tracker["ex.t"]
        assert rec["_tries"] == 0 and not rec["_done"] and "_lease_until" not in rec
    log = (tmp_path / ".tastypy-flow" / "flow" / rec["log"]).read_text().splitlines()
    assert log[-1].startswith("--- exit interrupted after")


def test_two_runs_of_one_flow_at_once_run_each_task_once(tmp_path):
    tasks = [
        {"id": f"t{i:02d}", "command": f"echo t{i:02d} >> runs.log; sleep 0.1"} for i in range(16)
    ]
    tasks.append({"id": "all", "dependencies": [t["id"] for t in tasks]})
    flow = write_flow(tmp_path, tasks)
    both = [spawn_cli(tmp_path, "ex.all", flow) for _ in range(2)]
    outputs = [child.communicate(timeout=120) for child in both]
    assert [child.returncode for child in both] == [0, 0], outputs
    assert counts(tmp_path) == {f"t{i:02d}": 1 for i in range(16)}
    ran = [int(out.splitlines()[-1].split(" ran, ")[0]) for out, _ in outputs]
    assert sum(ran) == 17  # each task, and the target, run by one or the other
