"""Others' records read while claiming, taken in when needed.

A tracker's try reads what other processes appended, but only files those
records by key; a claim or a per-key method takes in its key's record, and
every other read takes in all of them first. None of that may be visible:
whatever a process reads must include what the others wrote before its
last try. The other process here is a real one.
"""

from __future__ import annotations

import pytest
from conftest import run_python

import tastypy.tracker.backlog
from tastypy import Tracker

#: Another process: claims and marks done ``x0``..``x4``, adds ``new``, and
#: adds a note to ``mine`` (which the test's tracker holds).
OTHER = """
import sys, tastypy
with tastypy.Tracker(sys.argv[1], max_tries=3) as t:
    for i in range(5):
        assert t.try_it(f"x{i}")
        t.mark_done(f"x{i}")
    assert t.try_it("new")
    t["mine"]["note"] = "from the other"
"""


def run_other(path) -> None:
    result = run_python(OTHER, path)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def after_others(tmp_path):
    """A tracker that claimed ``mine``, then claimed ``last`` after another
    process wrote: it holds the other's records filed, not taken in."""
    path = tmp_path / "jobs.tracker"
    tracker = Tracker(path, max_tries=3)
    tracker.add_many([f"x{i}" for i in range(5)])
    tracker.sync()
    assert tracker.try_it("mine")
    run_other(path)
    assert tracker.try_it("last")
    # The premise of every test here: the records wait, filed by key.
    assert tracker._backlog
    yield tracker
    tracker.close()


READS = {
    "done": lambda t: [t.done(f"x{i}") for i in range(5)] + [t.done("new")],
    "getitem": lambda t: [t[f"x{i}"]["_done"] for i in range(5)] + [t["new"]["_tries"]],
    "contains": lambda t: "new" in t,
    "len": lambda t: len(t),
    "iteration": lambda t: sorted(t),
    "num_done": lambda t: t.num_done(),
    "num_tried": lambda t: t.num_tried(),
    "stats": lambda t: (t.stats()["done"], t.stats()["total"]),
    "todo_keys": lambda t: sorted(t.todo_keys()),
    "note": lambda t: t["mine"].get("note"),
    "to_dict": lambda t: {k: r["_done"] for k, r in t.to_dict().items()},
}

EXPECTED = {
    "done": [True] * 5 + [False],
    "getitem": [True] * 5 + [1],
    "contains": True,
    "len": 8,
    "iteration": sorted(["mine", "last", "new", *(f"x{i}" for i in range(5))]),
    "num_done": 5,
    "num_tried": 8,
    "stats": (5, 8),
    "todo_keys": ["last", "mine", "new"],
    "note": "from the other",
    "to_dict": {"mine": False, "last": False, "new": False, **{f"x{i}": True for i in range(5)}},
}


@pytest.mark.parametrize("read", sorted(READS))
def test_the_first_read_after_a_try_sees_what_others_wrote_before_it(after_others, read):
    assert READS[read](after_others) == EXPECTED[read]


def test_a_try_of_a_task_another_process_did_is_refused(after_others):
    assert after_others.try_it("x3") is False
    assert after_others.tries("x3") == 1


def test_marking_done_keeps_what_another_process_added_to_the_record(after_others):
    after_others.mark_done("mine")
    after_others.sync()
    with Tracker(after_others.path) as again:
        assert again["mine"]["_done"] and again["mine"]["note"] == "from the other"


def test_close_leaves_the_records_aside_and_a_read_after_it_loads_them(after_others):
    after_others.mark_done("mine")
    after_others.mark_done("last")
    after_others.close()
    assert after_others.num_done() == 7
    assert after_others["new"]["_tries"] == 1 and after_others["mine"]["_done"]
    with Tracker(after_others.path) as again:
        assert again.num_done() == 7 and again["mine"]["note"] == "from the other"


@pytest.mark.parametrize("bound", [2, None], ids=["past the bound", "within it"])
def test_past_its_bound_the_backlog_is_taken_in_and_this_process_writes_merged(
    tmp_path, monkeypatch, bound
):
    if bound is not None:
        monkeypatch.setattr(tastypy.tracker.backlog, "_BACKLOG_MAX", bound)
    path = tmp_path / "jobs.tracker"
    with Tracker(path, max_tries=3) as tracker:
        tracker.add_many([f"x{i}" for i in range(5)])
        tracker.sync()
        assert tracker.try_it("mine")
        run_other(path)  # marks x0..x4 done, among others
        tracker.abort("x0")  # here, on what this process knew of x0
        assert tracker.try_it("last")  # writes x0 after the other's records
        # The other's records are taken in; where this process wrote after
        # them, its x0 is merged with theirs: aborted here, and still done
        # (a done mark is never undone by a merge), here as on disk.
        assert tracker["x0"]["_aborted"] and tracker["x0"]["_done"]
        assert tracker["mine"]["note"] == "from the other"
        assert tracker.num_done() == 5 and len(tracker) == 8
        # Then another process writes records of keys this one never
        # changed: past the bound they are taken in at once; within it they
        # stay filed until a read needs them.
        result = run_python(WRITER, path, 5)
        assert result.returncode == 0, result.stderr
        assert tracker.try_it("again")
        assert bool(tracker._backlog) == (bound is None)
        assert tracker.num_done() == 10 and len(tracker) == 14
    with Tracker(path) as again:
        assert again["x0"]["_aborted"] and again["x0"]["_done"]
        assert again.num_done() == 10 and again["mine"]["note"] == "from the other"


WRITER = """
import sys, tastypy
with tastypy.Tracker(sys.argv[1], max_tries=3) as t:
    for i in range(int(sys.argv[2])):
        assert t.try_it(f"theirs{i}")
        t.mark_done(f"theirs{i}")
"""


def test_threads_claiming_while_another_thread_reads_and_another_process_writes(tmp_path):
    # Reads in one thread take the backlog in, while claims in others file
    # what the other process writes into it: every count must come out right.
    import subprocess
    import threading

    from conftest import spawn_python

    path = tmp_path / "jobs.tracker"
    tracker = Tracker(path, max_tries=3)
    n_threads, per_thread, theirs = 4, 500, 3000
    writer = spawn_python(WRITER, path, theirs, stdout=subprocess.PIPE)
    errors = []

    def claim(t: int) -> None:
        try:
            for i in range(per_thread):
                key = f"mine{t}-{i}"
                assert tracker.try_it(key), key
                tracker.mark_done(key)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    seen = 0
    while any(thread.is_alive() for thread in threads):
        # Each read takes in what the claims filed meanwhile.
        done = tracker.num_done()
        assert seen <= done <= n_threads * per_thread + theirs
        seen = done
        len(tracker)
    for thread in threads:
        thread.join()
    _, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert not errors, errors[0]
    tracker.refresh()
    mine = n_threads * per_thread
    assert tracker.num_done() == mine + theirs and len(tracker) == mine + theirs
    tracker.close()
    with Tracker(path) as again:
        assert again.num_done() == mine + theirs
        assert all(rec["_tries"] == 1 for rec in again.values())


#: Another process marks done keys that share a start with one another (one
#: written at the very start of a batch), then claims one more.
PREFIXES = """
import sys, tastypy
with tastypy.Tracker(sys.argv[1], max_tries=3) as t:
    for key in sys.argv[2:]:
        assert t.try_it(key)
        t.mark_done(key)
    t.sync()
    assert t.try_it("a1x")  # claimed, not done
"""


@pytest.mark.parametrize("escapes", [False, True], ids=["filed", "parsed"])
def test_a_key_filed_is_found_by_its_own_line_not_one_sharing_its_start(tmp_path, escapes):
    path = tmp_path / "jobs.tracker"
    keys = ["a", "a1", "a10", "é"] + (['q"uote'] if escapes else [])
    with Tracker(path, max_tries=3) as tracker:
        assert tracker.try_it("mine")
        result = run_python(PREFIXES, path, *keys)
        assert result.returncode == 0, result.stderr
        assert tracker.try_it("last")  # reads the other's batches
        # Filed by key (a line with escapes: parsed at once instead).
        assert bool(tracker._backlog) is not escapes
        # Each try looks its own key up, never a key that merely starts the same.
        for key in keys:
            assert not tracker.try_it(key), key
            assert tracker.done(key)
        assert tracker.try_it("a1x")  # the other's lease ended at its close
        assert tracker["a1x"]["_tries"] == 2
        assert tracker.num_done() == len(keys)
