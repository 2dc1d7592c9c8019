"""``with pod.locked():``: a read-modify-write that no other process interleaves.

Real processes on one POD or tracker, each adding 1 to one value many times
inside ``locked()``: the total is exact. Without the block, increments are
lost (each process reads the same old value), which the last test shows, so
the first ones could fail.
"""

from __future__ import annotations

import threading

import pytest
from conftest import spawn_python

import tastypy
from tastypy import POD, PersistentOrderedDictException, Tracker

PROCS, ROUNDS = 4, 100

# argv: path, kind (pod / tracker), lock, block (locked / transact / lock / none),
# rounds, go-file
ADDER = """
import os, sys, time
import tastypy

path, kind, lock, block, rounds, go = sys.argv[1:7]
while not os.path.exists(go):
    time.sleep(0.002)
if kind == "pod":
    obj = tastypy.POD(path, lock=lock, lock_timeout=120)
    def add():
        obj["n"] += 1
else:
    obj = tastypy.Tracker(path, lock=lock, lock_timeout=120)
    def add():
        obj.increment_tries("k")
for i in range(int(rounds)):
    if block == "locked":
        with obj.locked():
            add()
    elif block == "transact":
        with obj.transact():
            add()
    elif block == "lock":
        obj.lock()
        try:
            add()
        finally:
            obj.unlock()
    else:
        obj.refresh()
        add()
        obj.sync()
obj.close()
print("ok", flush=True)
"""


def run_adders(tmp_path, kind: str, lock: str, block: str) -> int:
    """Run PROCS adders of ROUNDS rounds at once; return the final count."""
    path = tmp_path / kind
    if kind == "pod":
        with POD(path, lock=lock) as pod:
            pod["n"] = 0
    else:
        with Tracker(path, lock=lock) as tracker:
            tracker.add("k")
    go = tmp_path / "go"
    procs = [spawn_python(ADDER, path, kind, lock, block, ROUNDS, go) for _ in range(PROCS)]
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err
    if kind == "pod":
        with POD(path, lock=lock) as pod:
            return pod["n"]
    with Tracker(path, lock=lock) as tracker:
        return tracker.tries("k")


@pytest.mark.parametrize(
    "kind, lock, block",
    [
        ("tracker", "auto", "locked"),
        ("pod", "auto", "transact"),
        ("pod", "soft", "locked"),
        ("tracker", "soft", "lock"),
    ],
)
def test_processes_adding_inside_the_lock_lose_no_increment(tmp_path, kind, lock, block):
    assert run_adders(tmp_path, kind, lock, block) == PROCS * ROUNDS


def test_without_the_lock_the_same_adders_lose_increments(tmp_path):
    """The rig can fail: refresh, add, sync without ``locked()`` loses
    increments when processes interleave (retried, as interleaving is luck)."""
    for _ in range(5):
        if run_adders(tmp_path / str(_), "pod", "auto", "none") < PROCS * ROUNDS:
            return
    pytest.fail("4 processes adding without the lock never lost an increment in 5 runs")


def test_the_block_takes_in_what_others_wrote_and_writes_before_release(tmp_path):
    path = tmp_path / "p"
    mine, other = POD(path), POD(path)
    other["x"] = 1
    other.sync()
    with mine.locked() as same:
        assert same is mine
        assert mine["x"] == 1  # taken in on entry, no refresh needed
        mine["x"] += 1
    other.refresh()
    assert other["x"] == 2  # written at the exit
    mine.close()
    other.close()


def test_blocks_nest_and_a_raising_block_still_writes(tmp_path):
    path = tmp_path / "p"
    with POD(path) as pod:
        pod["n"] = 0
        with pytest.raises(KeyError):
            with pod.locked():
                pod["n"] += 1
                with pod.locked():
                    pod["n"] += 1
                    pod.lock()
                    pod["n"] += 1
                    pod.unlock()
                raise KeyError("from the block")
        with POD(path) as reader:
            assert reader["n"] == 3


def test_unlock_without_lock_is_refused(tmp_path):
    with Tracker(tmp_path / "t") as tracker:
        with pytest.raises(PersistentOrderedDictException, match="lock\\(\\) first"):
            tracker.unlock()


def test_another_thread_waits_for_the_block(tmp_path):
    """A thread of the same process writing meanwhile waits until the block ends."""
    with POD(tmp_path / "p") as pod:
        pod["n"] = 0
        entered, seen = threading.Event(), []

        def writer():
            entered.wait()
            with pod.locked():
                seen.append(pod["n"])
                pod["n"] += 10

        thread = threading.Thread(target=writer)
        thread.start()
        with pod.locked():
            entered.set()
            thread.join(0.3)  # the writer cannot get in meanwhile
            assert thread.is_alive()
            pod["n"] += 1
        thread.join(30)
        assert seen == [1] and pod["n"] == 11


def test_closed_pod_refuses_the_block(tmp_path):
    pod = tastypy.POD(tmp_path / "p")
    pod.close()
    with pytest.raises(PersistentOrderedDictException, match="closed"):
        with pod.locked():
            pass


@pytest.mark.parametrize("lock", ["posix", "soft"])
def test_closing_inside_the_block_writes_and_releases_the_lock(tmp_path, lock):
    path = tmp_path / "t"
    tracker = Tracker(path, lock=lock)
    with tracker.locked():
        tracker.add("x")
        tracker.close()
    assert tracker.closed
    # Another handle (its own descriptor of the lock file) takes the lock at once.
    with Tracker(path, lock=lock, lock_timeout=5) as again:
        assert "x" in again
        again.mark_done("x")
        again.sync()
