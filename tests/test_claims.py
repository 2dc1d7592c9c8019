"""Claims and leases of a tracker (docs/leases.md).

``try_it`` and ``claim`` lease a task to the calling process; other
processes skip it while the lease runs; ``mark_done`` or an attempt's end
give it back; a process that exits releases what it still holds; a killed
one keeps its tasks until its lease expires (at once if it ran on this host
and is known dead). The other processes here are real ones; a worker made to
look like another host (``TASTYPY_HOST``) cannot be checked for life, so its
leases run their course.
"""

from __future__ import annotations

import fcntl
import gc
import os
import select
import signal
import socket
import subprocess
import time

import pytest
from conftest import child_env, run_python, spawn_python, without_lease

from tastypy import InvalidArgumentError, StorageError, Tracker, _faults, _identity
from tastypy.tracker import DEFAULT_LEASE, LeaseInfo

#: A worker: opens the tracker with ``lease``, takes ``keys`` with try_it
#: (and ``claim`` more with ``claim:N``), prints what it got, then waits for
#: a line on stdin saying what to do: ``exit``, ``raise``, ``done KEY...``
#: (mark done, then exit) or nothing (it is killed meanwhile).
WORKER = """
import sys, time
import tastypy
path, lease, spec = sys.argv[1], float(sys.argv[2]), sys.argv[3]
tracker = tastypy.Tracker(path, max_tries=5, lease=lease)
got = []
for item in spec.split(","):
    if item.startswith("claim:"):
        got += tracker.claim(int(item[6:]))
    elif item and tracker.try_it(item):
        got.append(item)
print(",".join(got), flush=True)
line = sys.stdin.readline().split()
if line and line[0] == "raise":
    raise RuntimeError("the work failed")
if line and line[0] == "done":
    for key in line[1:]:
        tracker.mark_done(key)
if line and line[0] == "wait":
    time.sleep(60)
"""


_started: list = []


def start_worker(path, spec: str, lease: float = DEFAULT_LEASE, host: str | None = None):
    """A worker that has taken ``spec``; returns (process, keys it got)."""
    env = child_env(TASTYPY_HOST=host) if host else child_env()
    proc = spawn_python(WORKER, path, lease, spec, env=env, stdin=subprocess.PIPE)
    _started.append(proc)
    line = proc.stdout.readline().strip()
    assert proc.poll() is None, proc.stderr.read()
    return proc, line.split(",") if line else []


@pytest.fixture(autouse=True)
def _no_worker_left():
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def finish(proc, command: str = "exit") -> int:
    proc.communicate(command + "\n", timeout=60)
    return proc.returncode


def kill(proc) -> None:
    proc.kill()
    proc.communicate(timeout=60)


def readline_within(stream, seconds: float) -> str:
    """A line of a child's output pipe, or '' if none comes in time."""
    ready, _, _ = select.select([stream], [], [], seconds)
    return stream.readline() if ready else ""


def stop_outside_the_lock(proc, path) -> None:
    """SIGSTOP ``proc`` at an instant it does not hold the tracker's lock
    (its heartbeat writes now and then): stopped holding it, it would keep
    every other process out."""
    while True:
        os.kill(proc.pid, signal.SIGSTOP)
        fd = os.open(os.path.join(path, "tastypy.lock"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return
        except BlockingIOError:
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.01)
        finally:
            os.close(fd)


def holder_name(pid: int, host: str | None = None) -> str:
    """How lease records name process ``pid`` of this host's kernel and PID
    namespace, on ``host`` (default: this host's name)."""
    return f"{host or socket.gethostname()}:{pid}/{_identity.me().kernel}"


def on_disk(path) -> dict:
    with Tracker(path, clone=False) as tracker:
        return {key: dict(rec) for key, rec in tracker.items()}


#: How another process replaces the journal (Python, with the tracker's
#: path as ``sys.argv[1]``).
REPLACE = {
    "compact": "tastypy.Tracker(sys.argv[1]).compact()",
    "compact-cli-function": "from tastypy.storage.repair import compact; compact(sys.argv[1])",
    # repair makes a new generation only when there is damage: a line
    # garbled in place (the file keeps its size).
    "repair": "f = open(sys.argv[1] + '/journal-000000.jsonl', 'r+b'); f.write(b'?'); "
    "f.close(); assert tastypy.repair(sys.argv[1]).repaired",
}


def another_process_runs(path, key: str) -> None:
    """Another process tries ``key`` (it must be granted), marks it done and exits."""
    proc, got = start_worker(path, key)
    assert got == [key]
    assert finish(proc, f"done {key}") == 0


def replace_journal(path, how: str) -> None:
    result = run_python(f"import sys, tastypy\n{REPLACE[how]}", path)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def path(tmp_path):
    return tmp_path / "jobs.tracker"


@pytest.fixture
def tracker(path):
    t = Tracker(path, max_tries=5)
    yield t
    t.close()


# -- try_it ---------------------------------------------------------------------------------------


def test_try_it_leases_the_task_to_this_process(tracker):
    before = time.time()
    assert tracker.try_it("a")
    rec = tracker["a"]
    assert rec["_holder"] == tracker.holder == holder_name(os.getpid())
    assert before + DEFAULT_LEASE <= rec["_lease_until"] <= time.time() + DEFAULT_LEASE + 0.01
    assert without_lease(rec) == {"_done": False, "_tries": 1, "_aborted": False}


def test_the_lease_is_set_per_tracker_and_per_call(path):
    with Tracker(path, lease=30) as tracker:
        assert tracker.lease == 30
        tracker.try_it("a")
        tracker.try_it("b", lease=5)
        tracker.lease = 100
        tracker.try_it("c")
        left = {k: v.lease_left for k, v in tracker.lease_info().items()}
    assert 29 < left["a"] <= 30.01 and 4 < left["b"] <= 5.01 and 99 < left["c"] <= 100.01


@pytest.mark.parametrize("bad", [0, -1, "60", True, float("nan"), float("inf")])
def test_a_bad_lease_is_refused(path, bad):
    with pytest.raises(InvalidArgumentError, match="lease"):
        Tracker(path, lease=bad)
    with Tracker(path) as tracker:
        with pytest.raises(InvalidArgumentError, match="lease"):
            tracker.try_it("a", lease=bad)
        with pytest.raises(InvalidArgumentError, match="lease"):
            tracker.claim(1, lease=bad)
        assert "a" not in tracker


def test_another_process_skips_a_leased_task(path, tracker):
    proc, got = start_worker(path, "a,b")
    assert got == ["a", "b"]
    assert not tracker.try_it("a") and not tracker.try_it("b")
    assert tracker.try_it("c")
    assert tracker.lease_info(["a"])["a"].holder == holder_name(proc.pid)
    assert finish(proc, "done a") == 0
    # a is done; b was released at the worker's exit, its try still counted.
    assert not tracker.try_it("a")
    assert tracker.try_it("b") and tracker.tries("b") == 2


def test_mark_done_and_a_recorded_error_end_the_lease(tracker):
    tracker.try_it("a")
    tracker.mark_done("a")
    assert tracker["a"] == {
        "_done": True,
        "_tries": 1,
        "_aborted": False,
        "_done_at": tracker["a"]["_done_at"],
    }
    for task in tracker.attempts(["b"]):
        with task:
            raise ValueError("no")
    assert "_lease_until" not in tracker["b"] and "_holder" not in tracker["b"]
    assert tracker["b"]["_error"]["type"] == "ValueError"
    tracker.try_it("c")
    tracker.update({"c": {"_done": True}})
    assert "_lease_until" not in tracker["c"]
    assert tracker.lease_info() == {}


def test_this_process_may_try_its_own_leased_task_again(tracker):
    assert tracker.try_it("a") and tracker.try_it("a")
    assert tracker.tries("a") == 2


def test_a_killed_worker_of_this_host_gives_its_tasks_back_at_once(path, tracker):
    tracker.add_many(["a", "b", "c", "d"])
    tracker.sync()
    proc, got = start_worker(path, "a,claim:2", lease=3600)
    assert got == ["a", "b", "c"]
    assert tracker.claim(5) == ["d"]
    kill(proc)
    # Its pid is gone from this host: the leases are void, the tries counted.
    for key in got:
        assert tracker.try_it(key)
        assert tracker.tries(key) == 2


def test_a_killed_worker_of_another_host_keeps_its_tasks_until_the_lease_ends(path, tracker):
    tracker.add_many(["a", "b", "c"])
    tracker.sync()
    proc, got = start_worker(path, "a,claim:1", lease=2, host="other-host")
    assert got == ["a", "b"]
    kill(proc)
    info = tracker.lease_info(["a", "b"])
    assert {i.holder for i in info.values()} == {holder_name(proc.pid, "other-host")}
    until = max(rec["_lease_until"] for rec in on_disk(path).values() if "_lease_until" in rec)
    assert tracker.claim(5) == ["c"]
    for key in got:
        while not tracker.try_it(key):
            time.sleep(0.05)
        # Not before the lease ended, by the clock leases are judged by.
        assert time.time() >= until - 0.01
        assert tracker.tries(key) == 2


@pytest.mark.parametrize("how", ["exit", "raise", "sigterm", "sigint"])
def test_a_process_that_ends_releases_its_leases(path, how):
    with Tracker(path) as tracker:
        tracker.add_many(["a", "b", "c", "d"])
    proc, got = start_worker(path, "a,claim:2", lease=3600, host="other-host")
    assert got == ["a", "b", "c"]
    if how in ("exit", "raise"):
        status = finish(proc, how)
    else:
        os.kill(proc.pid, signal.SIGTERM if how == "sigterm" else signal.SIGINT)
        status = finish(proc, "wait")
    assert status != 0 if how != "exit" else status == 0
    records = on_disk(path)
    for key in got:
        assert "_lease_until" not in records[key] and "_holder" not in records[key]
        assert records[key]["_tries"] == 1  # handed out: the try counts
    with Tracker(path) as tracker:
        assert tracker.claim(5) == ["d", "a", "b", "c"]


def test_close_releases_the_leases(path):
    tracker = Tracker(path)
    tracker.try_it("a")
    tracker.close()
    assert on_disk(path) == {"a": {"_done": False, "_tries": 1, "_aborted": False}}


def test_a_claim_another_process_made_is_kept_over_a_change_here(path, tracker):
    tracker.add("x")  # not written yet
    tracker.hold()
    proc, got = start_worker(path, "x")
    assert got == ["x"]
    tracker.unhold()
    assert not tracker.try_it("x")
    # Our write of x kept the worker's claim.
    assert on_disk(path)["x"]["_holder"] == holder_name(proc.pid)
    finish(proc, "done x")
    assert on_disk(path)["x"]["_done"]


@pytest.mark.parametrize("how", ["compact", "repair"])
def test_closing_after_a_replacement_does_not_undo_what_others_wrote_since(path, how):
    # This process claims k and gives it back (quick writes, not confirmed
    # live yet), then reads nothing more. Another process runs k and marks
    # it done; a third replaces the journal. This process's close finds a
    # new generation: its quick writes are in it (the old journal was
    # sealed after being taken in), so its older copy of k is not written
    # again over the done mark. (Replaced twice: after one replacement
    # this process would follow to the new journal without loading.)
    tracker = Tracker(path, max_tries=5)
    try:
        assert tracker.try_it("k")
        tracker.release(["k"])
        another_process_runs(path, "k")
        replace_journal(path, how)
        replace_journal(path, "compact")
    finally:
        tracker.close()
    disk = on_disk(path)
    assert disk["k"]["_done"] and disk["k"]["_tries"] == 1  # the released try is given back


@pytest.mark.parametrize("read", [False, True], ids=["", "read"])
@pytest.mark.parametrize("then", ["try_it another", "try_it it", "claim", "sync", "close"])
def test_an_add_not_yet_written_yields_to_another_process_record(path, then, read):
    # A job array's workers each add every key if absent, on what they
    # know: this process adds x and y (unwritten) while a worker it has not
    # heard of yet adds x, runs it and marks it done. Whichever way this
    # process writes next, x stays done, tried once: the add does not undo
    # it, and this process does not run x again. Reading the record added
    # (without changing it) changes nothing to that.
    tracker = Tracker(path, max_tries=5)
    try:
        tracker.add_if_absent("x")
        tracker.add_if_absent("y")
        if read:
            assert tracker["x"]["_tries"] == 0
        another_process_runs(path, "x")
        if then == "try_it another":
            assert tracker.try_it("y")
        elif then == "try_it it":
            assert not tracker.try_it("x")
        elif then == "claim":
            assert tracker.claim(5) == ["y"]
        elif then == "sync":
            tracker.sync()
        if then != "close":
            assert tracker.done("x") and tracker.tries("x") == 1
            assert tracker.num_done() == 1
    finally:
        tracker.close()
    disk = on_disk(path)
    assert list(disk) == ["x", "y"]
    assert disk["x"]["_done"] and disk["x"]["_tries"] == 1
    assert not disk["y"]["_done"]


def test_an_add_changed_here_no_longer_yields(path, tracker):
    # A record added, then given a field here, is this process's change:
    # written over another process's record of the key, as any change is.
    tracker.add_if_absent("x")
    tracker.set["x"]["note"] = "mine"
    proc, got = start_worker(path, "x")
    assert finish(proc, "exit") == 0
    tracker.sync()
    assert on_disk(path)["x"]["note"] == "mine"


@pytest.mark.parametrize("how", ["compact", "repair"])
def test_an_add_not_yet_written_yields_after_another_process_replaced_the_journal(path, how):
    # The reload after the replacement keeps the adds the disk lacks (z).
    tracker = Tracker(path, max_tries=5)
    try:
        tracker.add_if_absent("x")
        tracker.add_if_absent("y")
        tracker.add_if_absent("z")
        another_process_runs(path, "x")
        replace_journal(path, how)
        assert tracker.try_it("y")
        assert tracker.done("x")
    finally:
        tracker.close()
    disk = on_disk(path)
    assert disk["x"]["_done"] and disk["x"]["_tries"] == 1
    assert disk["y"]["_tries"] == 1
    assert disk["z"] == {"_done": False, "_tries": 0, "_aborted": False}


# -- claim ----------------------------------------------------------------------------------------


def test_claim_hands_out_bumped_then_never_tried_then_least_tried(tracker):
    tracker.add_many("abcdefg")
    # a: tried twice; b: tried once, long ago; c: once, recently; d: bumped.
    for key in "aab":
        tracker.try_it(key)
        tracker.release([key], tried=True)
    for task in tracker.attempts(["c"]):
        with task:
            raise ValueError
    tracker.bump(["d"])
    got = tracker.claim(3)
    assert got == ["d", "e", "f"]
    assert tracker.claim(10) == ["g", "b", "c", "a"]
    assert tracker.claim(10) == []  # all leased to this process
    assert [tracker.tries(k) for k in "abcdefg"] == [3, 2, 2, 1, 1, 1, 1]


def test_claim_skips_done_aborted_and_exhausted_tasks(path):
    with Tracker(path, max_tries=1) as tracker:
        tracker.add_many(["done", "aborted", "spent", "free"])
        tracker.mark_done("done")
        tracker.abort("aborted")
        tracker.try_it("spent")
        tracker.release(["spent"], tried=True)
        assert tracker.claim(10) == ["free"]
        assert tracker.claim(0) == []
        with pytest.raises(InvalidArgumentError, match="n must be"):
            tracker.claim(-1)


def test_claims_of_two_processes_never_overlap(path, tracker):
    keys = [f"k{i:02d}" for i in range(40)]
    tracker.add_many(keys)
    tracker.sync()
    proc, got = start_worker(path, ",".join(["claim:7"] * 3), host="other-host")
    mine = tracker.claim(100)
    assert len(got) == 21 and not set(got) & set(mine)
    assert sorted(got + mine) == keys
    kill(proc)


# -- release, bump, renew -------------------------------------------------------------------------


def test_release_gives_the_task_back_without_counting_the_try(tracker):
    tracker.add_many(["a", "b", "c"])
    assert tracker.claim(3) == ["a", "b", "c"]
    assert tracker.release(["a", "b"]) == ["a", "b"]
    assert tracker.release("c", tried=True) == ["c"]
    assert [tracker.tries(k) for k in "abc"] == [0, 0, 1]
    assert tracker.num_tried() == 1
    assert all("_lease_until" not in tracker[k] for k in "abc")
    assert tracker.release(["a", "nope"]) == []  # not leased here: left alone
    tracker.mark_done("a")
    assert tracker.claim(5) == ["b", "c"]


def test_release_leaves_another_process_lease_alone(path, tracker):
    proc, got = start_worker(path, "a")
    assert tracker.release(["a"]) == []
    assert not tracker.try_it("a")
    finish(proc)


def test_bump_only_ever_moves_a_lease_earlier(tracker):
    tracker.add_many(["a", "b", "c", "d"])
    tracker.bump(["c"], lease=3600)  # held back for an hour, then first
    assert tracker.claim(10) == ["a", "b", "d"]
    tracker.bump(["c"], lease=7200)  # later: ignored
    assert 3500 < tracker.lease_info(["c"])["c"].lease_left <= 3600
    assert not tracker.try_it("c")
    tracker.bump(["c"], lease=-10)
    assert tracker.try_it("c")
    with pytest.raises(KeyError, match="nope"):
        tracker.bump(["nope"])


def test_a_negative_bump_goes_before_a_plain_one(tracker):
    tracker.add_many(["a", "b", "c"])
    tracker.bump(["b"])
    tracker.bump(["c"], lease=-60)
    assert tracker.claim(3) == ["c", "b", "a"]


def test_bump_hands_back_the_tasks_of_a_worker_known_to_be_gone(path, tracker):
    proc, got = start_worker(path, "a,b", lease=3600, host="other-host")
    kill(proc)
    assert tracker.claim(5) == []
    tracker.bump(got)
    assert tracker.claim(5) == ["a", "b"]
    assert tracker.tries("a") == 2


def test_renew_extends_only_this_process_leases(path, tracker):
    tracker.try_it("a", lease=10)
    assert tracker.renew(["a", "b"], lease=500) == ["a"]
    assert 490 < tracker.lease_info(["a"])["a"].lease_left <= 500.01
    proc, got = start_worker(path, "b")
    assert tracker.renew("b") == []
    finish(proc)


# -- lease_info, stats, hold ----------------------------------------------------------------------


def test_lease_info_reports_done_tries_holder_and_time_left(tracker):
    tracker.add_many(["a", "b", "c"])
    tracker.try_it("a", lease=100)
    tracker.try_it("b")
    tracker.mark_done("b")
    info = tracker.lease_info(["a", "b", "c"])
    assert info["a"].holder == tracker.holder and 99 < info["a"].lease_left <= 100.01
    assert info["a"].tries == 1 and not info["a"].done
    assert info["b"] == LeaseInfo(True, 1, None, None)
    assert info["c"] == LeaseInfo(False, 0, None, None)
    assert list(tracker.lease_info()) == ["a"]
    with pytest.raises(KeyError, match="nope"):
        tracker.lease_info(["nope"])
    assert tracker.check("b") is True  # the manual's check(key) is unchanged


def test_stats_count_leased_and_expired_tasks(path, tracker):
    tracker.add_many(["a", "b", "c", "d"])
    tracker.try_it("a")
    tracker.mark_done("a")
    tracker.try_it("b")
    tracker.sync()
    proc, got = start_worker(path, "c", lease=0.5, host="other-host")
    kill(proc)
    time.sleep(0.6)
    tracker.refresh()
    stats = tracker.stats()
    assert (stats["leased"], stats["expired"]) == (1, 1)
    assert stats["done"] == 1 and stats["total"] == 4


def test_under_hold_try_it_decides_in_memory_and_writes_at_unhold(path, tracker):
    with tracker.holding():
        assert tracker.try_it("a")
        assert "a" not in on_disk(path)
    assert on_disk(path)["a"]["_holder"] == tracker.holder


# -- writes that fail -----------------------------------------------------------------------------


def test_a_quick_write_that_fails_is_taken_back_and_retried(tracker):
    tracker.try_it("a")
    tracker.mark_done("a")
    tracker._store.fault = _faults.make_hook("before-write:1:eio")
    assert tracker.try_it("b")
    tracker._store.fault = _faults.no_fault
    assert tracker.tries("b") == 1 and tracker["a"]["_done"]


def test_a_full_disk_refuses_the_try_and_takes_the_lease_back(path):
    with Tracker(path, lock="soft") as tracker:
        tracker.add("a")
        tracker.sync()
        tracker._store.fault = _faults.make_hook("before-write:1:enospc")
        with pytest.raises(StorageError):
            tracker.try_it("a")
        assert tracker["a"] == {"_done": False, "_tries": 0, "_aborted": False}
        assert tracker.try_it("a") and tracker.tries("a") == 1


def test_holder_names_the_host_and_the_process(tracker):
    result = run_python(
        "import tastypy, sys; print(tastypy.Tracker(sys.argv[1]).holder)",
        tracker.path,
        env=child_env(TASTYPY_HOST="node17"),
    )
    assert result.stdout.strip().startswith("node17:")


def test_the_lease_clock_is_the_filesystem_clock_where_hosts_share_it(path):
    # With the soft lock (what lock='auto' takes on shared filesystems) the
    # ordinary path runs, and measures this host's clock against the
    # journal's modification time; on a local disk the two agree.
    with Tracker(path, lock="soft", lease=100) as tracker:
        for key in "abc":
            tracker.try_it(key)
        for key in "abc":
            assert 99 < tracker[key]["_lease_until"] - time.time() <= 100.01


TRY_IN_ANOTHER_PROCESS = """
import sys, tastypy
tracker = tastypy.Tracker(sys.argv[1], max_tries=5)
print(tracker.try_it(sys.argv[2]))
"""


@pytest.mark.parametrize("how", list(REPLACE))
def test_a_claim_made_after_another_process_replaced_the_journal_is_seen_at_once(path, how):
    # This process keeps the journal open and appends while the file ends
    # where it last read it; another process folds that journal into a new
    # generation without writing to it. The next claim must go to the new
    # journal (a claim in the old one would be invisible to everyone), so a
    # third process sees the task as taken.
    tracker = Tracker(path, max_tries=5)
    try:
        for key in "abc":
            assert tracker.try_it(key)
            tracker.mark_done(key)
        tracker.sync()
        replace_journal(path, how)
        assert tracker.try_it("d")
        other = run_python(TRY_IN_ANOTHER_PROCESS, path, "d")
        assert other.returncode == 0, other.stderr
        assert other.stdout.split() == ["False"], "the claim of 'd' went to a replaced journal"
        tracker.mark_done("d")
    finally:
        tracker.close()
    with Tracker(path) as again:
        assert [k for k in "abcd" if again.done(k)] == list("abcd")
        assert again.tries("d") == 1


# -- a worker whose lease ran out ---------------------------------------------------------------

#: A worker that claims ``k`` with a short lease (``path lease how write``),
#: prints when its lease ends, waits for a line on stdin (meanwhile its
#: lease runs out and another worker takes the task over), then does
#: ``how`` to ``k`` and writes through ``write``, and exits.
LATE = """
import sys
import tastypy
path, lease, how, write = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
tracker = tastypy.Tracker(path, max_tries=5, lease=lease)

def claimed():
    print(tracker["k"]["_lease_until"], flush=True)
    sys.stdin.readline()

if how in ("fails", "is interrupted", "succeeds"):
    try:
        with tracker.attempt("k") as task:
            assert task
            claimed()
            if how == "fails":
                raise ValueError("too late")
            if how == "is interrupted":
                raise KeyboardInterrupt
    except (ValueError, KeyboardInterrupt):
        pass
else:
    assert tracker.try_it("k")
    claimed()
    if how == "sets a field":
        tracker["k"]["progress"] = 5
    elif how == "marks it done":
        tracker.mark_done("k")
    elif how == "releases it":
        tracker.release("k")
if write == "sync":
    tracker.sync()
elif write == "try_it":
    assert tracker.try_it("other")
elif write == "try_it with a lease":
    assert tracker.try_it("other", lease=60)
elif write == "close":
    tracker.close()
"""


@pytest.mark.parametrize("write", ["sync", "try_it", "try_it with a lease", "close"])
@pytest.mark.parametrize(
    "how",
    ["fails", "is interrupted", "succeeds", "sets a field", "marks it done", "releases it"],
)
def test_a_worker_whose_lease_ran_out_leaves_the_new_holder_lease_alone(path, how, write):
    # A claims k with a short lease, then is stopped (SIGSTOP: its heartbeat
    # cannot renew the lease): its lease runs out and B takes the task
    # over. Once A goes on, it learns so, and whatever it then does to k,
    # and whichever way it is written, B's lease and the try count stay as
    # B's claim left them: a third worker cannot take k while B runs it,
    # and k is done only if A's late attempt finished the work.
    with Tracker(path) as tracker:
        tracker.add_many(["k", "other"])
    late = spawn_python(LATE, path, 0.5, how, write, stdin=subprocess.PIPE)
    _started.append(late)
    late.stdout.readline()  # it holds k
    stop_outside_the_lock(late, path)
    try:
        until = on_disk(path)["k"]["_lease_until"]
        time.sleep(max(0.0, until - time.time()) + 0.05)
        holder, got = start_worker(path, "k", lease=3600)
        assert got == ["k"], "B could not take over a task whose lease ran out"
    finally:
        os.kill(late.pid, signal.SIGCONT)
    lease = {f: on_disk(path)["k"][f] for f in ("_holder", "_lease_until", "_tries")}
    assert lease["_holder"] == holder_name(holder.pid) and lease["_tries"] == 2
    # Its heartbeat's next renewal takes in B's claim, and says so.
    assert "no longer holds the lease of 'k'" in readline_within(late.stderr, 30)
    assert finish(late, "go") == 0, late.stderr.read()
    record = on_disk(path)["k"]
    assert {f: record.get(f) for f in lease} == lease
    assert record["_done"] == (how in ("succeeds", "marks it done"))
    third = run_python(TRY_IN_ANOTHER_PROCESS, path, "k")
    assert third.returncode == 0, third.stderr
    assert third.stdout.split() == ["False"], "a third worker took a task B still runs"
    assert finish(holder, "done k") == 0
    assert on_disk(path)["k"]["_done"] and on_disk(path)["k"]["_tries"] == 2


# -- two tracker objects of one process ------------------------------------------------------------


@pytest.mark.parametrize("end", ["close", "garbage collection"])
def test_ending_one_tracker_object_keeps_the_leases_another_object_holds(path, end):
    # Two objects on one path in one process: the second claims a task of
    # its own (and reads the first one's claim as it writes). When it is
    # closed (or dropped), it ends its own leases only: the first still
    # runs k, so another process cannot take k.
    first = Tracker(path, max_tries=5)
    second = Tracker(path, max_tries=5)
    try:
        assert first.try_it("k")
        assert second.try_it("mine")
        if end == "close":
            second.close()
        else:
            del second
            gc.collect()
        records = on_disk(path)
        assert records["k"]["_holder"] == first.holder
        assert "_holder" not in records["mine"]
        other = run_python(TRY_IN_ANOTHER_PROCESS, path, "k")
        assert other.returncode == 0, other.stderr
        assert other.stdout.split() == ["False"], "another process took a task still leased"
        first.mark_done("k")
    finally:
        first.close()
    assert on_disk(path)["k"]["_done"]


NOT_DONE = """
import sys, tastypy
with tastypy.Tracker(sys.argv[1]) as t:
    t.mark_not_done("k")
"""


def test_what_this_process_knew_of_a_task_does_not_refuse_it_once_it_is_free_again(path):
    # This process knows k is done; another process then marks it not done
    # (as `tastypy retry` gives tries back). A try here must ask the disk,
    # not answer from what it knew: a pool worker kept a task's old state
    # in mind between two runs and skipped the task.
    tracker = Tracker(path, max_tries=5)
    try:
        assert tracker.try_it("k")
        tracker.mark_done("k")
        tracker.sync()
        assert not tracker.try_it("k")  # done
        result = run_python(NOT_DONE, path)
        assert result.returncode == 0, result.stderr
        assert tracker.try_it("k") and tracker.tries("k") == 2
    finally:
        tracker.close()
