"""A POD or tracker opened before a fork and used in the children: what the
children change is written when they end, by multiprocessing's finalizers
(Pool and ProcessPoolExecutor workers end with os._exit) or by atexit (a
child of os.fork that ends normally). Real processes, real files."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import child_env, run_python

from tastypy import POD, Tracker


def on_disk(path, cls=POD) -> dict:
    with cls(path, clone=False) as reader:
        return reader.to_dict()


# A module-level POD, as 0.0.3's users wrote it; the workers write into it.
POOL_OF_PODS = """
import os, sys, time, multiprocessing
from concurrent.futures import ProcessPoolExecutor
import tastypy

path, how = sys.argv[1], sys.argv[2]
pod = tastypy.POD(path)
pod["parent"] = "unsynced at the fork"  # written at the fork: the workers start from it

def work(i):
    pod[f"k{i}"] = {"i": i, "pid": os.getpid()}
    time.sleep(0.002)
    return os.getpid()

ctx = multiprocessing.get_context("fork")
if how == "pool":
    pool = ctx.Pool(4)
    pids = pool.map(work, range(100), chunksize=5)
    pool.close()
    pool.join()
elif how == "with-pool":
    with ctx.Pool(4) as pool:  # its __exit__ terminates the workers (SIGTERM)
        pids = pool.map(work, range(100), chunksize=5)
elif how == "executor":
    with ProcessPoolExecutor(4, mp_context=ctx) as ex:
        pids = list(ex.map(work, range(100), chunksize=5))
elif how == "process":
    procs = [ctx.Process(target=lambda j=j: [work(i) for i in range(j, 100, 4)]) for j in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    pids = [p.pid for p in procs]
print(len(set(pids)), os.getpid(), pod["parent"] == "unsynced at the fork")
pod["parent"] = "after"  # never written (os._exit): no child writes it either
os._exit(0)
"""


@pytest.mark.parametrize("how", ["pool", "with-pool", "executor", "process"])
def test_what_forked_workers_write_into_a_module_level_pod_is_kept(tmp_path, how):
    path = tmp_path / "p"
    result = run_python(POOL_OF_PODS, path, how)
    assert result.returncode == 0, result.stderr
    n_workers, parent, kept = result.stdout.split()
    assert int(n_workers) >= 1 and kept == "True"
    data = on_disk(path)
    # What the parent changed before the fork was written at the fork.
    assert data.pop("parent") == "unsynced at the fork"
    assert sorted(data) == sorted(f"k{i}" for i in range(100)), result.stderr
    assert all(data[f"k{i}"]["i"] == i for i in range(100))
    assert {value["pid"] for value in data.values()}.isdisjoint({int(parent)})


TRACKER_WORKERS = """
import os, sys, multiprocessing
import tastypy

path = sys.argv[1]
tracker = tastypy.Tracker(path)
keys = [f"task{i:04d}" for i in range(2000)]

def work(w):
    ran = []
    # Every worker goes over every task, from its own starting point: the
    # tracker alone decides who runs what.
    for key in keys[w * 250:] + keys[:w * 250]:
        if tracker.try_it(key):
            ran.append(key)
            tracker.mark_done(key)
    return ran

def one(key):
    # One task per call, as pool.map(f, tasks) hands them out: the done
    # mark of a worker's last task is still unwritten when the pool ends it.
    if tracker.try_it(key):
        tracker.mark_done(key)
        return [key]
    return []

how = sys.argv[2]
ctx = multiprocessing.get_context("fork")
if how == "with":
    with ctx.Pool(8) as pool:
        runs = pool.map(work, range(8), chunksize=1)
elif how == "per-task":
    pool = ctx.Pool(8)
    runs = pool.map(one, keys, chunksize=50)
    pool.close()
    pool.join()
else:
    pool = ctx.Pool(8)
    runs = pool.map(work, range(8), chunksize=1)
    pool.close()
    pool.join()
flat = [key for ran in runs for key in ran]
print(len(flat), len(set(flat)))
"""


@pytest.mark.parametrize("how", ["with", "close-join", "per-task"])
def test_eight_pool_workers_on_a_module_level_tracker_lose_nothing_and_run_nothing_twice(
    tmp_path, how
):
    path = tmp_path / "t"
    result = run_python(TRACKER_WORKERS, path, how, timeout=300)
    assert result.returncode == 0, result.stderr
    ran, distinct = map(int, result.stdout.split())
    assert ran == distinct == 2000, "a task ran twice, or not at all"
    records = on_disk(path, Tracker)
    assert len(records) == 2000
    assert sum(rec["_done"] for rec in records.values()) == 2000, "a done mark was lost"
    assert all(rec["_tries"] == 1 for rec in records.values())
    assert not any("_holder" in rec for rec in records.values())


LEASES_IN_WORKERS = """
import os, sys, multiprocessing
import tastypy

path = sys.argv[1]
tracker = tastypy.Tracker(path)
assert tracker.try_it("parent's")  # leased to the parent, before the fork

def work(key):
    assert tracker.try_it(key)
    return tracker[key]["_holder"], tracker.holder

ctx = multiprocessing.get_context("fork")
pool = ctx.Pool(2)
holders = pool.map(work, ["w1", "w2"])
pool.close()
pool.join()
print(tracker.holder)
for holder in holders:
    print(*holder)
tracker.close()
"""


def test_a_worker_leases_under_its_own_name_and_ends_only_its_own_leases(tmp_path):
    path = tmp_path / "t"
    # The parent keeps its lease until it closes: checked by another process
    # while the parent is still in the middle (it prints, then closes).
    result = run_python(LEASES_IN_WORKERS, path)
    assert result.returncode == 0, result.stderr
    parent, *rows = result.stdout.splitlines()
    for row in rows:
        leased, worker = row.split()
        assert leased == worker != parent
    records = on_disk(path, Tracker)
    for key in ("w1", "w2"):  # the workers ended their leases at their exit
        assert records[key]["_tries"] == 1 and "_holder" not in records[key]
    assert records["parent's"]["_tries"] == 1 and "_holder" not in records["parent's"]


PARENT_LEASE_KEPT = """
import os, sys, multiprocessing
import tastypy

path = sys.argv[1]
tracker = tastypy.Tracker(path)
assert tracker.try_it("mine")

def work(_):
    assert tracker.try_it("theirs")
    return os.getpid()

ctx = multiprocessing.get_context("fork")
pool = ctx.Pool(1)
pool.map(work, [0])
pool.close()
pool.join()
with tastypy.Tracker(path, clone=False) as reader:
    print(reader["mine"].get("_holder") == tracker.holder)
tracker.mark_done("mine")
tracker.close()
"""


def test_a_worker_ending_does_not_end_the_parents_lease(tmp_path):
    result = run_python(PARENT_LEASE_KEPT, tmp_path / "t")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
    records = on_disk(tmp_path / "t", Tracker)
    assert records["mine"]["_done"] and "_holder" not in records["theirs"]


BARE_FORK = """
import os, sys
import tastypy

path, end = sys.argv[1], sys.argv[2]
pod = tastypy.POD(path)
pod["before"] = 1  # written at the fork
pod.hold()
pod["a"] = "old"  # held, so not written at the fork: the parent's to write
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(write)
    os.read(read, 1)  # the parent wrote a newer a meanwhile
    pod["child"] = os.getpid()
    if end == "sync-then-_exit":
        pod.sync()
        os._exit(0)
    if end == "_exit":
        os._exit(0)
    sys.exit(0)  # a normal end: atexit syncs
os.close(read)
pod["a"] = "new"
pod.sync()
os.write(write, b"x")
_, status = os.waitpid(pid, 0)
print(pid, os.waitstatus_to_exitcode(status))
pod.close()
"""


@pytest.mark.parametrize("end", ["sys.exit", "sync-then-_exit", "_exit"])
def test_a_bare_fork_child(tmp_path, end):
    path = tmp_path / "p"
    result = run_python(BARE_FORK, path, end)
    assert result.returncode == 0, result.stderr
    child, code = map(int, result.stdout.split())
    assert code == 0
    data = on_disk(path)
    # The child never writes the parent's unsynced change again (it would
    # put "old" back over the parent's later "new").
    assert data["a"] == "new" and data["before"] == 1
    if end == "_exit":
        # os._exit runs no exit hook: documented, the child must sync first.
        assert "child" not in data
    else:
        assert data["child"] == child


LOCK_IN_CHILD = """
import os, sys, time
import tastypy

path = sys.argv[1]
pod = tastypy.POD(path, lock="posix", lock_timeout=1)
pod["k"] = 0
pod.sync()  # the lock file and the journal are open now (kept open)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    with pod.locked():
        os.write(write, b"x")
        time.sleep(3)
        pod["k"] = 1
    os._exit(0)
os.read(read, 1)
pod["p"] = 1
try:
    pod.sync()
    print("not excluded")
except tastypy.LockTimeoutError:
    print("excluded")
os.waitpid(pid, 0)
pod.sync()
pod.close()
"""


def test_a_forked_child_takes_the_lock_on_a_descriptor_of_its_own(tmp_path):
    # flock counts the holders of one open file description as one: had the
    # child used the parent's kept-open descriptor, the parent would take
    # the lock the child holds.
    result = run_python(LOCK_IN_CHILD, tmp_path / "p")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["excluded"]
    assert on_disk(tmp_path / "p") == {"k": 1, "p": 1}


SPAWNED = """
import sys, multiprocessing
import tastypy

pod = tastypy.POD(sys.argv[1])

def work(i):
    pod[f"k{i}"] = i

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[2])
    pool = ctx.Pool(2)
    pool.map(work, range(20))
    pool.close()
    pool.join()
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_pool_workers_keep_their_writes_too(tmp_path, method):
    script = tmp_path / "spawned.py"
    script.write_text(SPAWNED)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "p"), method],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(on_disk(tmp_path / "p")) == sorted(f"k{i}" for i in range(20))


FORK_INSIDE_LOCKED = """
import os, subprocess, sys
import tastypy

PROBE = "import sys, tastypy; tastypy.POD(sys.argv[1], lock_timeout=0.5).sync()"
path = sys.argv[1]
pod = tastypy.POD(path, lock="posix")
pod["n"] = 1
pod.sync()
read, write = os.pipe()
with pod.locked():
    pid = os.fork()
    if pid == 0:
        try:
            pod["n"] = 100  # the lock is the parent's: refused, loudly
            code = 3
        except tastypy.CalledClosedTrackerError:
            code = 0
    else:
        os.read(read, 1)  # the child left the block
        # Leaving it gave back nothing: the lock is still the parent's.
        probe = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True, text=True)
        print("excluded" if "LockTimeoutError" in probe.stderr else "not excluded")
        pod["n"] += 1
if pid == 0:
    os.write(write, b"x")
    os._exit(code)
_, status = os.waitpid(pid, 0)
pod.close()
print(os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_inside_locked_writes_nothing_and_leaves_the_parents_lock(tmp_path):
    result = run_python(FORK_INSIDE_LOCKED, tmp_path / "p")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["excluded", "0"]
    assert "forked inside locked()" in result.stderr
    assert on_disk(tmp_path / "p") == {"n": 2}
