"""``tastypy stats|failed|leases|release|retry|watch`` and ``import-legacy``,
on a tracker built by real processes: a worker of this host that ran most
tasks (some failed), a worker of another host (``TASTYPY_HOST``) killed
with SIGKILL while holding leases, and one killed whose leases ran out.
Each command is run as a user runs it, in a child process, and checked
against what the records say."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import child_env, run_python, spawn_python

from tastypy import Tracker

#: A worker of the scenario, told what to do by a JSON spec (argv[2]).
WORKER = """
import json, sys
import tastypy
path, spec = sys.argv[1], json.loads(sys.argv[2])
tracker = tastypy.Tracker(path, **spec.get("open", {}))
tracker.add_many_if_absent(spec.get("add", []))
for _ in range(spec.get("passes", 0)):
    for task in tracker.attempts(spec["keys"]):
        with task:
            if task.key in spec["fail"] or (
                task.key in spec["fail_once"] and tracker.tries(task.key) == 1
            ):
                raise ValueError(f"cannot process {task.key}")
            task["result"] = task.key.upper()
if "claim" in spec:
    print(json.dumps(tracker.claim(spec["claim"], **spec.get("claim_kw", {}))), flush=True)
    sys.stdin.readline()  # SIGKILLed meanwhile
tracker.close()
"""

KEYS = [f"t{i:02d}" for i in range(40)]
FAILED = ["t07", "t17"]


def worker(path, spec: dict, host: str | None = None) -> subprocess.CompletedProcess:
    env = child_env(TASTYPY_HOST=host) if host else child_env()
    done = run_python(WORKER, path, json.dumps(spec), env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done


def killed_holder(path, spec: dict, host: str) -> tuple[list, int]:
    """A worker of ``host`` that claims, then is SIGKILLed: (keys, pid)."""
    proc = spawn_python(
        WORKER, path, json.dumps(spec), env=child_env(TASTYPY_HOST=host), stdin=subprocess.PIPE
    )
    got = json.loads(proc.stdout.readline() or "null")
    proc.kill()
    _, err = proc.communicate(timeout=60)
    assert got is not None, err
    return got, proc.pid


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The job, as the module's tests find it (each works on a copy)."""
    path = tmp_path_factory.mktemp("job") / "jobs.tracker"
    worker(
        path,
        {
            "open": {"max_tries": 2},
            "add": KEYS,
            "keys": KEYS[:30],
            "passes": 2,
            "fail": FAILED,
            "fail_once": ["t27"],
        },
    )
    b_keys, b_pid = killed_holder(path, {"claim": 4, "claim_kw": {"lease": 600}}, "node-b")
    c_keys, c_pid = killed_holder(path, {"open": {"lease": 0.5}, "claim": 3}, "node-c")
    # A later worker stores the job's lease again (node-c's was for this test).
    worker(path, {"open": {"lease": 120}})
    time.sleep(0.6)  # node-c's leases run out
    return {"path": path, "b": (b_keys, b_pid), "c": (c_keys, c_pid)}


@pytest.fixture
def job(built, tmp_path):
    path = tmp_path / "jobs.tracker"
    shutil.copytree(built["path"], path)
    return dict(built, path=path)


def tastypy_cmd(*args, module: bool = False) -> subprocess.CompletedProcess:
    """``tastypy ARGS`` (or ``python -m tastypy ARGS``) in a child process."""
    if module:
        command = [sys.executable, "-m", "tastypy", *map(str, args)]
    else:
        command = [sys.executable, "-c", "import sys\nfrom tastypy.cli import main\n"
                   "sys.exit(main())", *map(str, args)]  # fmt: skip
    return subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=120)


def as_json(*args) -> object:
    proc = tastypy_cmd(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def holder(host: str, pid: int) -> str:
    from tastypy import _identity

    return f"{host}:{pid}/{_identity.me().kernel}"


def test_stats_counts_what_the_workers_left(job):
    stats = as_json("stats", job["path"])
    b_keys, b_pid = job["b"]
    assert b_keys == KEYS[30:34] and job["c"][0] == KEYS[34:37]
    assert {k: stats[k] for k in ("total", "done", "failed", "aborted", "in_progress")} == {
        "total": 40,
        "done": 28,
        "failed": 2,
        "aborted": 0,
        "in_progress": 0,
    }
    assert stats["todo"] == 10 and stats["leased"] == 4 and stats["expired"] == 3
    assert stats["leased_by"] == {holder("node-b", b_pid): 4}
    assert stats["max_tries"] == 2 and stats["lease"] == 120
    # The rate is of the tasks whose attempts recorded their end: all 28 done here.
    assert stats["recent_done"] == 28 and stats["rate"] > 0 and stats["eta"] > 0
    table = tastypy_cmd("stats", job["path"], module=True)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "max_tries 2" in lines[0]
    assert any(line.split()[:2] == ["failed", "2"] for line in lines)
    assert any(line.split()[:2] == ["leased", "4"] and "1 holder" in line for line in lines)
    assert any(line.split() == [holder("node-b", b_pid), "4"] for line in lines)


def test_stats_without_max_tries_uses_the_stored_one(job):
    # An inspection script opens the tracker without max_tries.
    inspect = run_python(
        "import sys, tastypy; t = tastypy.Tracker(sys.argv[1]); "
        "print(t.max_tries, t.stats()['failed'], sorted(t.failed_keys()))",
        job["path"],
    )
    assert inspect.stdout.split() == ["2", "2", "['t07',", "'t17']"], inspect.stderr


def test_failed_lists_failed_tasks_and_those_whose_last_attempt_raised(job, tmp_path):
    # t37 raised once, in a pass of its own: not failed yet, but its last attempt raised.
    worker(job["path"], {"keys": ["t37"], "passes": 1, "fail": ["t37"], "fail_once": []})
    rows = as_json("failed", job["path"])
    assert [(r["key"], r["failed"], r["tries"]) for r in rows] == [
        ("t07", True, 2),
        ("t17", True, 2),
        ("t37", False, 1),
    ]
    assert all(r["error"] == f"ValueError: cannot process {r['key']}" for r in rows)
    table = tastypy_cmd("failed", job["path"]).stdout.splitlines()
    assert table[0].split() == ["key", "tries", "failed", "last", "error"]
    assert table[1].split()[:3] == ["t07", "2", "yes"]
    assert table[3].split()[:3] == ["t37", "1", "no"]
    with Tracker(job["path"]) as tracker:  # the same from Python
        assert list(tracker.failed_keys()) == FAILED
        assert list(tracker.errors()) == ["t07", "t17", "t37"]


def test_leases_show_holder_and_time_left_negative_once_expired(job):
    rows = as_json("leases", job["path"])
    by_key = {r["key"]: r for r in rows}
    (b_keys, b_pid), (c_keys, c_pid) = job["b"], job["c"]
    assert sorted(by_key) == sorted(b_keys + c_keys)
    for key in b_keys:
        assert by_key[key]["holder"] == holder("node-b", b_pid)
        assert 500 < by_key[key]["expires_in"] <= 600
    for key in c_keys:
        assert by_key[key]["holder"] == holder("node-c", c_pid)
        assert by_key[key]["expires_in"] < 0
    assert [r["expires_in"] for r in rows] == sorted(r["expires_in"] for r in rows)
    assert not any(r["holder_gone"] for r in rows)  # of other hosts: nobody here can tell
    table = tastypy_cmd("leases", job["path"]).stdout.splitlines()
    assert table[0].split() == ["key", "holder", "expires_in"] and len(table) == 8


def test_leases_mark_a_holder_of_this_host_that_is_gone(tmp_path):
    path = tmp_path / "t"
    worker(path, {"add": ["a", "b"]})
    got, pid = killed_holder(path, {"claim": 1}, socket.gethostname())
    [row] = as_json("leases", path)
    assert (row["key"], row["holder"], row["holder_gone"]) == (
        "a",
        holder(socket.gethostname(), pid),
        True,
    )
    assert "(gone)" in tastypy_cmd("leases", path).stdout


def test_release_holder_hands_a_dead_hosts_tasks_back_at_once(job):
    b_keys, b_pid = job["b"]
    # Before: a rerun gets none of node-b's tasks (their lease has ten minutes to go).
    rerun = worker(job["path"], {"claim": 40}, host="node-a")
    assert not set(b_keys) & set(json.loads(rerun.stdout))
    out = as_json("release", job["path"], "--holder", "node-b")
    assert out == {"released": b_keys}
    with Tracker(job["path"]) as tracker:
        for key in b_keys:
            assert "_holder" not in tracker[key] and tracker.tries(key) == 1  # tries kept
        assert tracker.stats()["leased"] == 0
        assert set(b_keys) <= set(tracker.claim(40))
    # HOST:PID narrows it to one process; another pid of the host is left alone.
    again = tastypy_cmd("release", job["path"], "--holder", f"node-b:{b_pid + 1}")
    assert again.returncode == 0 and again.stdout.startswith("ended 0 lease(s) of node-b:")


def test_release_expired_and_all(job):
    (b_keys, _), (c_keys, _) = job["b"], job["c"]
    assert as_json("release", job["path"], "--expired") == {"released": c_keys}
    with Tracker(job["path"]) as tracker:
        assert sorted(tracker.lease_info()) == b_keys
    out = tastypy_cmd("release", job["path"], "--all")
    assert out.returncode == 0 and out.stdout.startswith("ended 4 lease(s) (all)")
    assert as_json("leases", job["path"]) == []


def test_retry_gives_failed_tasks_their_tries_back(job):
    out = as_json("retry", job["path"], "--failed")
    assert out == {"retried": FAILED, "left_alone": []}
    assert as_json("stats", job["path"])["failed"] == 0
    # They run again, and this time they work.
    worker(job["path"], {"keys": FAILED, "passes": 1, "fail": [], "fail_once": []})
    assert as_json("stats", job["path"])["done"] == 30
    assert as_json("failed", job["path"]) == []


def test_retry_named_keys_leaves_done_and_held_tasks_alone(job):
    b_keys, _ = job["b"]
    out = tastypy_cmd("retry", job["path"], "t07", "t00", b_keys[0])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "gave their tries back to 1 task(s): they run again"
    assert "left alone 2 task(s)" in out.stdout and "t00" in out.stdout
    with Tracker(job["path"]) as tracker:
        assert tracker.tries("t07") == 0 and tracker.tries("t00") == 1
        assert tracker.tries(b_keys[0]) == 1  # node-b's lease still runs


def test_commands_refuse_what_is_not_a_tracker(tmp_path):
    missing = tastypy_cmd("stats", tmp_path / "nowhere")
    assert missing.returncode == 1 and "is not a tastypy tracker" in missing.stderr
    assert not (tmp_path / "nowhere").exists()  # nothing made on the spot
    unknown = tastypy_cmd("retry", tmp_path / "nowhere")
    assert unknown.returncode == 2 and "--failed or the keys" in unknown.stderr
    with Tracker(tmp_path / "t") as tracker:
        tracker.add("a")
    typo = tastypy_cmd("retry", tmp_path / "t", "b")
    assert typo.returncode == 1 and "b is not a task of" in typo.stderr


def test_retry_takes_int_and_tuple_keys_as_json(tmp_path):
    path = tmp_path / "t"
    with Tracker(path, max_tries=1) as tracker:
        for key in (3, ("a", 1)):
            with tracker.attempt(key, reraise=False):
                raise ValueError("no")
    assert as_json("retry", path, "3", '["a", 1]')["retried"] == [3, ["a", 1]]
    with Tracker(path) as tracker:
        assert tracker.tries(3) == 0 and tracker.tries(("a", 1)) == 0


def test_import_legacy_copies_a_0_0_3_tracker(tmp_path):
    old = tmp_path / "old.tracker"
    old.mkdir()
    (old / "0.json").write_text(
        '"a"\t{"_done": true, "_tries": 1, "_aborted": false}\n'
        '"b"\t{"_done": false, "_tries": 3, "_aborted": false}\n'
    )
    out = tastypy_cmd("import-legacy", old, tmp_path / "new.tracker")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f"imported 2 items from {old} into the new tracker {tmp_path / 'new.tracker'}"
    )
    with Tracker(tmp_path / "new.tracker", max_tries=3) as tracker:
        assert tracker.done("a") and list(tracker.failed_keys()) == ["b"]
    again = tastypy_cmd("import-legacy", old, tmp_path / "new.tracker")
    assert again.returncode == 1 and "is not empty" in again.stderr


#: The job ``watch`` watches: 60 tasks of 20 ms (one fails), started by a
#: line on stdin, then exit.
SLOW_JOB = """
import sys, time, tastypy
tracker = tastypy.Tracker(sys.argv[1], max_tries=1)
tracker.add_many_if_absent(range(60))
tracker.sync()
print("ready", flush=True)
sys.stdin.readline()
for task in tracker.attempts():
    with task:
        time.sleep(0.02)
        if task.key == 5:
            raise ValueError("no")
tracker.close()
"""


@pytest.mark.parametrize("how", ["tqdm", "plain", "without tqdm"])
def test_watch_follows_a_running_job_until_it_is_done(tmp_path, how):
    path = tmp_path / "t"
    job = spawn_python(SLOW_JOB, path, stdin=subprocess.PIPE)
    try:
        assert job.stdout.readline() == "ready\n"
        code = "import sys\n"
        if how == "without tqdm":
            code += "sys.modules['tqdm'] = None\n"
        code += "from tastypy.cli import main\nsys.exit(main())"
        args = ["watch", path, "--interval", "0.1", "--json"] + (["--plain"] * (how == "plain"))
        watch = spawn_python(code, *args)
        first = os.read(watch.stderr.fileno(), 4096).decode()  # it shows 0/60 ...
        job.stdin.write("go\n")  # ... then the job starts
        job.stdin.flush()
        out, err = watch.communicate(timeout=120)
    finally:
        job.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert json.loads(out)["done"] == 59
    shown = [line for line in (first + err).replace("\r", "\n").splitlines() if line.strip()]
    if how == "tqdm":
        assert "0/60" in shown[0]
        assert "59/60" in shown[-1] and "failed=1" in shown[-1]
        assert any(f"{n}/60" in line for line in shown for n in range(1, 59))  # it moved
    else:
        assert shown[0].startswith("tastypy: 0/60 done")
        assert shown[-1].startswith("tastypy: 59/60 done (98.3 %), 1 failed")
        assert len(shown) > 2  # a line per look


def test_watch_stops_at_ctrl_c(tmp_path):
    with Tracker(tmp_path / "t") as tracker:
        tracker.add("never run")
    watch = spawn_python(
        "import sys\nfrom tastypy.cli import main\nsys.exit(main())",
        "watch",
        tmp_path / "t",
        "--plain",
        "--interval",
        "0.1",
    )
    assert watch.stderr.readline().startswith("tastypy: 0/1 done")
    os.kill(watch.pid, signal.SIGINT)
    _, err = watch.communicate(timeout=60)
    assert watch.returncode == 130 and "Traceback" not in err
