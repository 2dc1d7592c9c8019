"""Freshness loops (doloop's, issue 13): ``_done_at`` recorded by every way a
task becomes done, ``redo_after`` making done tasks due again in claim's
order (and try_it's), ``claim(peek=True)``, ``ages()``, the update ages of
``stats()``, and 8 real worker processes keeping 2,000 tasks fresh for
three rounds, never two at once on one task."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from conftest import child_env, run_python, spawn_python

from tastypy import InvalidArgumentError, Tracker
from tastypy.records import merge
from tastypy.storage import layout


def double(key):
    """A task for run() (module level: a process pool pickles it)."""
    return key * 2


def journal_text(path: Path) -> str:
    return "".join(p.read_text() for p in sorted(path.glob("journal-*.jsonl")))


# -- _done_at: every way a task becomes done ----------------------------------------------


def test_every_way_to_done_records_when(tmp_path):
    before = time.time()
    with Tracker(tmp_path / "t") as tracker:
        assert tracker.try_it("marked")
        tracker.mark_done("marked")
        for task in tracker.attempts(["attempted"]):
            with task:
                task["result"] = 1
        with ProcessPoolExecutor(2) as pool:
            tracker.run(double, ["ran-1", "ran-2"], executor=pool)
        tracker.run(double, ["ran-here"])
        assert tracker.should_try_add("compat")  # tastypy 0.0.3's loop
        tracker.mark_done("compat")
        tracker.update({"merged": {"_done": True}})  # 0.0.3's update marks done too
        keys = ["marked", "attempted", "ran-1", "ran-2", "ran-here", "compat", "merged"]
        for key in keys:
            assert before <= tracker[key]["_done_at"] <= time.time() + 1, key
        failed = tracker.attempt("failed", reraise=False)
        with failed:
            raise ValueError("no")
        assert "_done_at" not in tracker["failed"]  # done never, so no time
    # In the files, as epoch seconds that jq reads.
    out = subprocess.run(
        ["jq", "-r", 'select(type == "array" and length == 2) | "\\(.[0]) \\(.[1]._done_at)"'],
        input=journal_text(tmp_path / "t"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    last = {line.split()[0]: line.split()[1] for line in out if line}
    for key in keys:
        assert before <= float(last[key]) <= time.time(), (key, last[key])
    assert last["failed"] == "null"


def test_a_parted_tracker_records_when_and_refuses_redo_after(tmp_path):
    with Tracker(tmp_path / "p", shards=4) as tracker:
        tracker.add_many(["a", "b"])
        for key in tracker.claim(2):
            tracker.mark_done(key)
        assert all(type(tracker[k]["_done_at"]) is float for k in "ab")
        assert tracker.ages(["a"])["a"][0] >= 0
        assert tracker.stats()["newest_done"] is not None
        assert tracker.claim(1, peek=True) == []
    with pytest.raises(InvalidArgumentError, match="redo_after=5.*parts.*without shards="):
        Tracker(tmp_path / "q", shards=4, redo_after=5)


def test_mark_done_again_moves_the_time_and_mark_not_done_drops_it(tmp_path):
    with Tracker(tmp_path / "t") as tracker:
        tracker.add("a")
        tracker.mark_done("a")
        first = tracker["a"]["_done_at"]
        time.sleep(0.01)
        tracker.mark_done("a")  # doloop's did on a thing updated again
        assert tracker["a"]["_done_at"] > first
        again = tracker["a"]["_done_at"]
        tracker.update({"a": {"note": 1}})  # a merge into a done record: not done again
        tracker.update({"a": {"_done": True}})
        assert tracker["a"]["_done_at"] == again
        tracker.mark_not_done("a")
        assert "_done_at" not in tracker["a"]


def test_the_merge_keeps_the_later_done_time():
    base = {"_done": True, "_tries": 1, "_aborted": False}
    mine, theirs = {**base, "_done_at": 10.0}, {**base, "_done_at": 20.0}
    assert merge(mine, theirs, "me", 0.0, lambda h: False)["_done_at"] == 20.0
    assert merge(theirs, mine, "me", 0.0, lambda h: False)["_done_at"] == 20.0
    # A new round running here (not done, no time yet) and an older done one there.
    running = {"_done": False, "_tries": 1, "_aborted": False, "_done_at": 20.0}
    merged = merge(running, {**base, "_done_at": 10.0}, "me", 0.0, lambda h: False)
    assert merged["_done"] and merged["_done_at"] == 20.0


def test_two_processes_marking_one_task_keep_the_later_time(tmp_path):
    path = tmp_path / "t"
    with Tracker(path) as tracker:
        tracker.add("a")
    code = """
        import sys, time
        from tastypy import Tracker
        tracker = Tracker(sys.argv[1])
        with tracker.holding():          # nothing written until the end
            time.sleep(float(sys.argv[2]))
            tracker.mark_done("a")
            print(tracker["a"]["_done_at"])
            time.sleep(float(sys.argv[3]))
        tracker.close()
    """
    early = spawn_python(code, path, 0.0, 1.0)
    late = spawn_python(code, path, 0.5, 0.0)
    times = [float(p.communicate(timeout=60)[0]) for p in (early, late)]
    assert early.returncode == late.returncode == 0
    with Tracker(path) as tracker:
        assert tracker["a"]["_done_at"] == max(times)


# -- redo_after ------------------------------------------------------------------------------


def test_without_redo_after_done_stays_done(tmp_path):
    with Tracker(tmp_path / "t") as tracker:
        assert tracker.redo_after == 0
        tracker.add_many(["a", "b"])
        for key in tracker.claim(2):
            tracker.mark_done(key)
        tracker.bump(["a"])
        assert tracker.claim(5) == [] and not tracker.try_it("a")
        assert list(tracker.todo_keys()) == [] and tracker.stats()["due"] == 0


def test_a_done_task_comes_back_after_redo_after(tmp_path):
    with Tracker(tmp_path / "t", redo_after=0.5, max_tries=1) as tracker:
        tracker.add_many(["a", "b"])
        assert tracker.try_it("a")
        tracker.mark_done("a")
        assert not tracker.try_it("a") and not tracker.should_do("a")
        assert list(tracker.todo_keys()) == ["b"]
        time.sleep(0.6)
        assert tracker.should_do("a") and list(tracker.todo_keys()) == ["a", "b"]
        assert tracker.stats()["due"] == 1
        # A new round: not done while it runs, one try (max_tries=1 does not
        # stop it: the first round's try is over), _done_at of the last round.
        done_at = tracker["a"]["_done_at"]
        assert tracker.try_it("a")
        assert tracker["a"]["_done"] is False and tracker["a"]["_tries"] == 1
        assert tracker["a"]["_done_at"] == done_at and tracker.num_done() == 0
        assert not tracker.try_it("a")  # leased to this process now
        tracker.mark_done("a")
        assert tracker["a"]["_done_at"] > done_at and tracker.num_done() == 1


def test_claim_order_bumped_and_expired_then_never_done_then_least_recently_done(tmp_path):
    with Tracker(tmp_path / "t", redo_after=0.3) as tracker:
        tracker.add_many(["old", "new", "bumped", "expired", "fresh1", "fresh2"])
        for key in ["old", "bumped", "new"]:
            assert tracker.try_it(key)
            tracker.mark_done(key)
            time.sleep(0.02)
        tracker.sync()
        # A worker that claims "expired" and is killed holding it.
        worker = spawn_python(
            "import sys, time; from tastypy import Tracker; t = Tracker(sys.argv[1]); "
            "print(t.claim(1), flush=True); time.sleep(60)",
            tracker.path,
        )
        assert worker.stdout.readline().strip() == "['expired']"
        worker.kill()
        worker.communicate()
        time.sleep(0.4)  # all three done ones are due again
        tracker.bump(["bumped"])
        order = ["bumped", "expired", "fresh1", "fresh2", "old", "new"]
        assert tracker.claim(6, peek=True) == order
        assert tracker.claim(6) == order
        assert tracker.claim(1) == []


def test_a_bumped_done_task_waits_for_its_bump(tmp_path):
    with Tracker(tmp_path / "t", redo_after=3600) as tracker:
        tracker.add_many(["a", "b"])
        for key in tracker.claim(2):
            tracker.mark_done(key)
        tracker.bump(["a"], lease=0.3)  # doloop's bump(lock_for=...)
        assert tracker.claim(2) == []
        time.sleep(0.4)
        assert tracker.claim(2) == ["a"]


def test_redo_after_set_on_the_object_takes_bumped_done_tasks_too(tmp_path):
    with Tracker(tmp_path / "t") as tracker:
        tracker.add_many(["a", "b"])
        for key in tracker.claim(2):
            tracker.mark_done(key)
        tracker.bump(["b"])
        assert tracker.claim(2) == []  # done stays done: the bump only orders
        tracker.redo_after = 3600  # this object only
        assert tracker.claim(2) == ["b"]
    with Tracker(tmp_path / "t") as tracker:
        assert tracker.redo_after == 0


def test_redo_after_is_stored_with_the_tracker(tmp_path, caplog):
    path = tmp_path / "t"
    Tracker(path, redo_after=60).close()
    assert layout.read_settings(str(path))["redo_after"] == 60.0
    with Tracker(path) as tracker:  # as stored
        assert tracker.redo_after == 60.0
    with Tracker(path, redo_after=0) as tracker:  # turned off, and stored so
        assert tracker.redo_after == 0
    with Tracker(path) as tracker:
        assert tracker.redo_after == 0
    assert "redo_after of the tracker" in caplog.text
    for bad in (-1, float("nan"), "1h", True):
        with pytest.raises(InvalidArgumentError, match="redo_after must be"):
            Tracker(path, redo_after=bad)


def test_run_takes_due_tasks_again(tmp_path):
    with Tracker(tmp_path / "t", redo_after=0.3) as tracker:
        assert tracker.run(double, ["a", "b"])["done"] == 2
        assert tracker.run(double, ["a", "b"])["submitted"] == 0
        time.sleep(0.35)
        assert tracker.run(double, ["a", "b"])["done"] == 2


# -- peek, ages, stats ---------------------------------------------------------------------


def test_peek_takes_nothing_and_writes_nothing(tmp_path):
    path = tmp_path / "t"
    with Tracker(path) as tracker:
        tracker.add_many([f"k{i}" for i in range(10)])
        tracker.sync()
        size = len(journal_text(path))
        first = tracker.claim(3, peek=True)
        assert first == ["k0", "k1", "k2"] == tracker.claim(3, peek=True)
        assert len(journal_text(path)) == size and tracker.num_tried() == 0
        assert tracker.lease_info() == {}
        assert tracker.claim(3) == first
        assert tracker.claim(2, peek=True) == ["k3", "k4"]
    # Another process sees what this one claimed: a peek takes in others' writes.
    out = run_python(
        "import sys; from tastypy import Tracker; t = Tracker(sys.argv[1]); "
        "print(t.claim(2, peek=True), t.claim(2)); t.close()",
        path,
    )
    # k0-k2 were released at close, tried: after the tasks never tried.
    assert out.stdout.split("\n")[0] == "['k3', 'k4'] ['k3', 'k4']"
    with pytest.raises(InvalidArgumentError, match="peek must be True or False"):
        Tracker(path).claim(1, peek="yes")


def test_ages_say_how_long_ago_and_how_much_lease_is_left(tmp_path):
    with Tracker(tmp_path / "t", lease=100) as tracker:
        tracker.add_many(["done", "held", "never"])
        tracker.try_it("done")
        tracker.mark_done("done")
        tracker.try_it("held")
        time.sleep(0.2)
        ages = tracker.ages(["done", "held", "never"])
        assert set(ages) == {"done", "held", "never"}
        since, left = ages["done"]
        assert 0.2 <= since < 5 and left is None
        since, left = ages["held"]
        assert since is None and 95 < left < 100
        assert ages["never"] == (None, None)
        assert tracker.ages("done")["done"][0] >= 0.2  # one key alone
        with pytest.raises(KeyError, match="missing"):
            tracker.ages(["missing"])


def test_stats_give_update_ages_and_a_rate_for_try_it_loops(tmp_path):
    path = tmp_path / "t"
    now = time.time()
    with Tracker(path) as tracker:
        for i in range(4):
            assert tracker.try_it(i)
            tracker.mark_done(i)
        # Done long ago (as a loop that ran last week left them).
        tracker["week"] = {"_done": True, "_done_at": now - 8 * 86400}
        tracker["day"] = {"_done": True, "_done_at": now - 2 * 86400}
        tracker.add("never")
        time.sleep(0.05)  # the rate is of the time since the first of them
        stats = tracker.stats()
    assert (stats["not_updated_1d"], stats["not_updated_7d"]) == (2, 1)
    assert stats["oldest_done"].startswith(time.strftime("%Y-%m-%d", time.gmtime(now - 8 * 86400)))
    assert stats["newest_done"] >= stats["last_done"] > stats["oldest_done"]
    assert stats["recent_done"] == 4 and stats["rate"] > 0 and stats["eta"] is not None
    out = run_python("import sys; from tastypy.cli import main; main(sys.argv[1:])",
                     "stats", path, "--json")  # fmt: skip
    document = json.loads(out.stdout)
    assert document["not_updated_7d"] == 1 and document["rate"] > 0
    table = run_python("import sys; from tastypy.cli import main; main(sys.argv[1:])",
                       "stats", path).stdout  # fmt: skip
    assert "oldest done" in table and "not updated" in table and "for a week or more" in table


# -- 8 worker processes keep 2,000 tasks fresh for three rounds -------------------------------

_WORKER = """
import os, sys, time
from tastypy import Tracker
path, log_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
tracker = Tracker(path)                       # redo_after as stored with the tracker
pid = os.getpid()
with open(log_path, "a") as log:
    def work(key):
        start = time.time()
        rec = tracker[key]
        rec["updates"] = rec.get("updates", 0) + 1   # a change in place, checked
        tracker.mark_done(key)
        log.write(f"{key} {pid} {start!r} {time.time()!r} {tracker[key]['_done_at']!r}\\n")
    if mode == "claim":
        while keys := tracker.claim(20):
            for key in keys:
                work(key)
    else:                                    # a try_it loop over every task
        for key in list(tracker):
            if tracker.try_it(key):
                work(key)
tracker.close()
"""


def _round(path: Path, logs: Path, n: int) -> float:
    started = time.monotonic()
    workers = [
        spawn_python(_WORKER, path, logs / f"w{i}.log", "try" if i < 2 else "claim")
        for i in range(n)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    return time.monotonic() - started


def _runs(logs: Path) -> dict:
    runs: dict = {}
    for log in logs.glob("w*.log"):
        for line in log.read_text().splitlines():
            key, pid, start, end, done_at = line.split()
            runs.setdefault(key, []).append((float(start), float(end), int(pid), float(done_at)))
    return runs


def test_eight_workers_keep_every_task_fresh_round_after_round(tmp_path):
    path, logs = tmp_path / "fresh.tracker", tmp_path / "logs"
    logs.mkdir()
    redo = 3.0
    keys = [f"user-{i}" for i in range(2000)]
    with Tracker(path, redo_after=redo) as tracker:
        tracker.add_many(keys)
    seen: set = set()  # the processes that ran tasks in the rounds before
    for number in range(1, 4):
        if number > 1:
            time.sleep(redo)  # every task done in the last round is due again
        took = _round(path, logs, 8)
        runs = _runs(logs)
        assert sorted(runs) == sorted(keys)
        # This round's work was done by this round's processes (how many of
        # the 8 got tasks depends on how fast each started).
        pids = {run[2] for r in runs.values() for run in r} - seen
        assert pids and len(pids) <= 8
        seen |= pids
        counts = {len(r) for r in runs.values()}
        if took < redo:  # no task could come due twice within the round
            assert counts == {number}, (number, took)
        else:
            assert min(counts) >= number, (number, took)
    for key, done in runs.items():
        done.sort()
        for (_, end, pid, done_at), (start2, _, pid2, _) in zip(done, done[1:]):
            assert start2 > end, f"{key}: run by {pid} and {pid2} at once"
            # Not before redo_after since it was last done (_done_at is rounded to 1 ms).
            assert start2 >= done_at + redo - 0.001, (key, done_at, start2)
    with Tracker(path) as tracker:
        assert tracker.num_done() == len(keys)
        assert all(tracker[k]["updates"] == len(runs[k]) for k in keys)
        assert all(tracker[k]["_tries"] == 1 for k in keys)  # each round counts afresh


# -- doloop's README, adapted -----------------------------------------------------------------


def test_doloops_readme_workflow(tmp_path):
    path = tmp_path / "user_loop"
    loop = Tracker(path, redo_after=3600, lease=3600)  # doloop's defaults: hourly, 1 h locks
    # Adding things to the loop: INSERT IGNORE, in chunks; remove.
    loop.add_many_if_absent([1, 2, 3, 4, 5, 6])
    loop.add_many_if_absent([5, 6, 7])
    del loop[7]  # the user closed their account
    assert list(loop) == [1, 2, 3, 4, 5, 6]
    # Doing updates: get the IDs that went longest without an update, then did.
    user_ids = loop.claim(4)
    assert user_ids == [1, 2, 3, 4]
    for user_id in user_ids:
        loop[user_id]["profile"] = f"updated {user_id}"
    for user_id in user_ids:
        loop.mark_done(user_id)
    # Code that never called get may update a thing and call did.
    loop.mark_done(6)
    loop.flush()  # the done marks written, for the other processes
    assert loop.claim(10, peek=True) == [5]  # doloop's test=True: a dry run
    # A worker that crashes holding IDs: they come back when its lease ends.
    crashed = spawn_python(
        "import sys, time; from tastypy import Tracker; "
        "t = Tracker(sys.argv[1], lease=0.5); print(t.claim(10), flush=True); time.sleep(60)",
        path,
    )
    assert crashed.stdout.readline().strip() == "[5]"
    crashed.kill()
    crashed.communicate()
    loop.refresh()
    assert loop.ages([5])[5][1] is not None  # still leased: 0.5 s
    time.sleep(0.6)
    assert loop.claim(1) == [5]
    loop.release([5])  # doloop's unlock
    # Prioritization: bump puts an ID first; with lock_for, after that long;
    # a bump never pushes a lease later; a negative lock_for goes before all.
    loop.bump([2])
    loop.bump([3], lease=-10)
    loop.bump([1], lease=3600)
    assert loop.bump([1], lease=7200) == []
    assert loop.claim(10, peek=True) == [3, 2, 5]
    # Auditing: check (seconds since updated, seconds of lock left) and stats.
    ages = loop.ages([1, 4, 5, 6])
    assert ages[4][0] < 60 and ages[4][1] is None
    assert ages[5] == (None, None) and 3500 < ages[1][1] <= 3600
    stats = loop.stats()
    assert stats["not_updated_1d"] == 0 and stats["done"] == 5 and stats["todo"] == 1
    loop.close()
    out = subprocess.run(
        [sys.executable, "-m", "tastypy", "stats", str(path), "--json"],
        env=child_env(),
        capture_output=True,
        text=True,
    )
    assert json.loads(out.stdout)["redo_after"] == 3600
