"""The lease heartbeat: a process renews the leases it holds while it lives,
in one write per round; a dead one's tasks come back when its lease ends.

The holders here name another host (``TASTYPY_HOST``), so that nobody can
judge them by their pid: only the lease keeps their tasks from others, as
between the nodes of a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from conftest import child_env, run_python, spawn_python

from tastypy import Tracker
from tastypy.tracker import DEFAULT_LEASE

#: A holder on "node-h": opens the tracker with a lease of argv[2] seconds,
#: runs an attempt at "k" that lasts argv[3] seconds (claiming argv[4] more
#: tasks first, if given), printing "holding" once it holds them.
HOLDER = """
import sys, time
import tastypy
path, lease, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
tracker = tastypy.Tracker(path, lease=lease)
more = tracker.claim(int(sys.argv[4])) if len(sys.argv) > 4 else []
with tracker.attempt("k") as task:
    print("holding", flush=True)
    time.sleep(seconds)
    task["result"] = "finished"
tracker.close()
"""


def start_holder(path, lease: float, seconds: float, more: int | None = None):
    args = [path, lease, seconds] + ([more] if more is not None else [])
    proc = spawn_python(HOLDER, *args, env=child_env(TASTYPY_HOST="node-h"))
    assert proc.stdout.readline() == "holding\n", proc.stderr.read()
    return proc


def test_the_default_lease_is_two_minutes():
    assert DEFAULT_LEASE == 120.0


def test_a_task_three_times_longer_than_its_lease_is_never_handed_out_twice(tmp_path):
    path = tmp_path / "t"
    with Tracker(path) as tracker:
        tracker.add("k")
    holder = start_holder(path, lease=1.0, seconds=3.0)
    with Tracker(path) as other:
        assert other.lease == 1.0  # stored by the holder
        tries = 0
        while holder.poll() is None:
            assert not other.try_it("k"), "k was handed out while its worker lived"
            info = other.lease_info(["k"])["k"]
            assert info.done or info.lease_left > 0
            tries += 1
            time.sleep(0.05)
        assert tries > 20  # it asked all along the task's three seconds
        _, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err
        other.refresh()
        assert other["k"]["result"] == "finished" and other.tries("k") == 1


def test_a_killed_holder_s_task_comes_back_when_its_last_renewal_runs_out(tmp_path):
    path = tmp_path / "t"
    holder = start_holder(path, lease=1.0, seconds=60)
    time.sleep(1.5)  # renewed meanwhile, or it would have run out by now
    with Tracker(path) as other:
        assert not other.try_it("k")
        holder.kill()
        holder.communicate(timeout=60)
        other.refresh()
        until = other["k"]["_lease_until"]
        deadline = time.time() + 30
        while not other.try_it("k"):
            assert time.time() < deadline, "the dead holder's task never came back"
            time.sleep(0.05)
        assert time.time() >= until - 0.01  # not before its last renewal ran out
        assert other.tries("k") == 2


def batches(journal) -> list:
    """The batches of a journal, each the list of its records."""
    out, batch = [], []
    for line in journal.read_bytes().splitlines():
        item = json.loads(line)
        if type(item) is dict:
            out.append(batch)
            batch = []
        else:
            batch.append(item)
    return out


def test_each_round_renews_every_held_lease_in_one_write(tmp_path):
    path = tmp_path / "t"
    with Tracker(path) as tracker:
        tracker.add_many(f"x{i:02d}" for i in range(20))
    holder = start_holder(path, lease=0.6, seconds=2.0, more=20)
    _, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err
    held = sorted([f"x{i:02d}" for i in range(20)] + ["k"])
    written = batches(path / "journal-000000.jsonl")
    claimed = next(i for i, b in enumerate(written) if any(key == "k" for key, _ in b))
    ended = next(i for i, b in enumerate(written) if any(r.get("_done") for _, r in b))
    renewals = written[claimed + 1 : ended]
    # Between the claim of k and its end, a round every ~0.2 s, each one
    # write of every lease held (21), never one per task.
    assert len(renewals) >= 4
    for batch in renewals:
        assert sorted(key for key, _ in batch) == held
        assert all(rec["_holder"].startswith("node-h:") for _, rec in batch)


#: A process that holds a lease, forks, and reports what each side sees.
FORK = """
import os, sys, time
import tastypy
from tastypy.tracker import heartbeat
tracker = tastypy.Tracker(sys.argv[1], lease=0.5)
tracker.add_many(["a", "b"])
assert tracker.claim(1) == ["a"] and heartbeat.running()
pid = os.fork()
if pid == 0:
    # The child's heartbeat watches the tracker it inherited, which forgot
    # the parent's leases: it renews only what the child takes.
    forgot = not tracker._granted
    watched = any(t is tracker for t in heartbeat._watched())
    mine = tastypy.Tracker(sys.argv[1])  # a handle on the inherited state
    assert mine.claim(1) == ["b"]
    started = heartbeat.running() and any(t is mine for t in heartbeat._watched())
    mine.close()
    os._exit(0 if started and forgot and watched else 1)
_, status = os.waitpid(pid, 0)
time.sleep(1.5)  # three leases long: only the parent's heartbeat keeps "a"
info = tracker.lease_info(["a"])["a"]
print(os.waitstatus_to_exitcode(status), info.holder == tracker.holder, info.lease_left > 0)
tracker.close()
"""


def test_a_forked_child_has_a_heartbeat_of_its_own_only(tmp_path):
    out = run_python(FORK, tmp_path / "t")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "True", "True"]


def test_the_heartbeat_ends_with_the_last_tracker(tmp_path):
    code = """
    import sys, time
    import tastypy
    from tastypy.tracker import heartbeat
    tracker = tastypy.Tracker(sys.argv[1])
    print(heartbeat.running())
    tracker.close()
    deadline = time.time() + 10
    while heartbeat.running() and time.time() < deadline:
        time.sleep(0.05)
    print(heartbeat.running())
    """
    out = run_python(code, tmp_path / "t", stdin=subprocess.DEVNULL)
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_a_process_exits_at_once_while_its_heartbeat_runs(tmp_path):
    # The heartbeat is a daemon stopped at exit: it neither holds the exit
    # up nor writes after the exit's last sync released the leases.
    code = """
    import sys
    import tastypy
    tracker = tastypy.Tracker(sys.argv[1], lease=0.3)
    tracker.claim(5)
    """
    path = tmp_path / "t"
    with Tracker(path) as tracker:
        tracker.add_many(range(5))
    out = run_python(code, path, env=child_env())
    assert out.returncode == 0 and out.stderr == ""
    with Tracker(path) as tracker:
        assert tracker.lease_info() == {} and tracker.stats()["tries"] == {1: 5}
    assert os.path.getsize(path / "journal-000000.jsonl") > 0
