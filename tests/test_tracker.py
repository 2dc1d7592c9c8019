"""ProgressTracker: records, the 0.0.3 methods (with their bugs fixed), counters,
attempts, progress, stats, and the bad input of issue 3."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from conftest import run_python, without_lease

import tastypy
from tastypy import (
    POD,
    DuplicateKeyError,
    InvalidArgumentError,
    InvalidValueError,
    KindMismatchError,
    PersistentOrderedDictException,
    ProgressTracker,
    Tracker,
)
from tastypy.tracker.counters import _iso


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.tracker"


@pytest.fixture
def open_tracker(path: Path):
    """``open_tracker(*args, **kw)`` opens a tracker at ``path``; all are closed after."""
    opened: list[Tracker] = []

    def factory(*args, at: Path | None = None, **kw) -> Tracker:
        tracker = Tracker(path if at is None else at, *args, **kw)
        opened.append(tracker)
        return tracker

    yield factory
    for tracker in opened:
        tracker.close()


def reopened(path: Path, **kw) -> dict:
    """What a fresh tracker on ``path`` holds, as a plain dict (and its counters)."""
    with Tracker(path, clone=False, **kw) as tracker:
        return {
            "data": tracker.to_dict(),
            "counts": (tracker.num_done(), tracker.num_tried(), tracker.num_aborted()),
        }


def new_record(**fields) -> dict:
    return {"_done": False, "_tries": 0, "_aborted": False, **fields}


def without_time(rec: dict) -> dict:
    """``rec`` without its ``_done_at``, which must be there (a time) if it is done."""
    rec = dict(rec)
    done_at = rec.pop("_done_at", None)
    assert (type(done_at) is float) == bool(rec["_done"]), done_at
    return rec


# -- construction ---------------------------------------------------------------


def test_tracker_is_the_progress_tracker_and_a_pod():
    assert Tracker is ProgressTracker
    assert issubclass(Tracker, tastypy.PersistentOrderedDict)


def test_the_positional_call_of_0_0_3_is_accepted(open_tracker, path):
    tracker = open_tracker(3, {"a": new_record()}, False, 1000, 10, True)
    assert tracker.max_tries == 3
    assert tracker.sync_at == 10
    assert list(tracker) == ["a"]


@pytest.mark.parametrize("max_tries", [0, None])
def test_max_tries_zero_or_none_means_no_limit(open_tracker, max_tries):
    tracker = open_tracker(max_tries=max_tries)
    assert all(tracker.try_it("t") for _ in range(50))
    assert tracker.tries("t") == 50
    assert tracker.max_tries == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_a_bad_max_tries_is_refused(path, bad):
    with pytest.raises(InvalidArgumentError, match="max_tries"):
        Tracker(path, max_tries=bad)
    assert not path.exists() or not any(path.glob("journal-*"))


def test_max_tries_can_be_changed_and_is_checked(open_tracker):
    tracker = open_tracker(max_tries=1)
    assert tracker.try_it("t") and not tracker.try_it("t")
    tracker.max_tries = 2
    assert tracker.try_it("t")
    with pytest.raises(ValueError):
        tracker.max_tries = -1
    assert tracker.max_tries == 2


def test_init_fills_only_keys_not_stored_yet(open_tracker, path):
    with Tracker(path, init={"a": new_record(_tries=2)}) as tracker:
        tracker.mark_done("a")
    tracker = open_tracker(init={"a": new_record(), "b": new_record()})
    assert tracker["a"]["_done"] is True and tracker["a"]["_tries"] == 2
    assert tracker.num_done() == 1 and len(tracker) == 2


# -- records ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1, "done", None, [1, 2], ("a",)])
def test_a_value_that_is_not_a_dict_is_refused_and_nothing_changes(open_tracker, path, bad):
    tracker = open_tracker()
    tracker.add("a")
    with pytest.raises(InvalidValueError, match="'a'.*dict"):
        tracker["a"] = bad
    with pytest.raises(InvalidValueError, match="'b'"):
        tracker["b"] = bad
    assert tracker.to_dict() == {"a": new_record()}
    tracker.close()
    assert reopened(path)["data"] == {"a": new_record()}


@pytest.mark.parametrize("bad", [-1, 1.0, "2", None, True])
def test_a_bad_tries_is_refused_and_nothing_changes(open_tracker, bad):
    tracker = open_tracker()
    tracker.try_it("a")
    with pytest.raises(InvalidValueError, match="_tries"):
        tracker["a"] = new_record(_tries=bad)
    with pytest.raises(InvalidValueError, match="_tries"):
        tracker.update({"a": {"_tries": bad}})
    assert without_lease(tracker["a"]) == new_record(_tries=1)
    assert tracker.num_tried() == 1


@pytest.mark.parametrize("field", ["_done", "_aborted"])
def test_a_flag_that_is_not_a_bool_is_refused(open_tracker, field):
    tracker = open_tracker()
    with pytest.raises(InvalidValueError, match=field):
        tracker["a"] = {field: "yes"}
    assert "a" not in tracker


def test_a_record_missing_fields_gets_them(open_tracker):
    tracker = open_tracker()
    tracker["a"] = {"url": "http://x"}
    assert tracker["a"] == new_record(url="http://x")
    tracker["b"] = {"_done": True}
    assert tracker.num_done() == 1 and tracker.tries("b") == 0


def test_an_unstorable_value_in_a_record_is_refused_and_counters_stay(open_tracker):
    tracker = open_tracker()
    tracker.add("a")
    tracker.mark_done("a")
    with pytest.raises(InvalidValueError):
        tracker["a"] = new_record(_done=False, blob={1, 2})
    assert tracker["a"]["_done"] is True
    assert tracker.num_done() == 1


def test_a_record_changed_in_place_into_nan_is_refused_and_the_rest_written(open_tracker, path):
    """A NaN put into a record in place is found when the batch is written
    (str and tuple keys): the error names the key, every other change of
    the batch reaches the file, the bad record's line does not."""
    tracker = open_tracker()
    for key in ("a", ("b", 2), "c"):
        assert tracker.try_it(key)
    # (A field set is checked at once; a change deeper down is found at the write.)
    tracker["a"]["score"] = [0.5]
    tracker[("b", 2)]["score"] = [1.0]
    tracker.flush()
    tracker["a"]["score"][0] = float("nan")
    tracker[("b", 2)]["score"].append(float("-inf"))
    tracker.mark_done("c")
    with pytest.raises(InvalidValueError, match="could not sync key 'a'.*NaN or infinity"):
        tracker.try_it("d")
    on_disk = reopened(path)["data"]
    assert on_disk["c"]["_done"] is True and on_disk["d"]["_tries"] == 1
    assert on_disk["a"]["score"] == [0.5] and on_disk[("b", 2)]["score"] == [1.0]
    tracker["a"]["score"] = 0.25
    tracker[("b", 2)]["score"] = [2.0]
    tracker.sync()
    on_disk = reopened(path)["data"]
    assert on_disk["a"]["score"] == 0.25 and on_disk[("b", 2)]["score"] == [2.0]


def test_user_fields_persist_like_any_nested_change(open_tracker, path):
    tracker = open_tracker()
    assert tracker.try_it("a")
    tracker.mark_done("a")
    tracker["a"]["result"] = {"pages": [1, 2]}
    tracker.close()
    record = without_time(reopened(path)["data"]["a"])
    assert record == new_record(_done=True, _tries=1, result={"pages": [1, 2]})


# -- adding ----------------------------------------------------------------------


def test_add_refuses_a_duplicate_with_the_0_0_3_error(open_tracker):
    tracker = open_tracker()
    tracker.add("a")
    tracker.mark_done("a")
    with pytest.raises(DuplicateKeyError, match="'a'") as info:
        tracker.add("a")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, PersistentOrderedDictException)
    assert tracker.done("a")


def test_add_if_absent_leaves_an_existing_task_alone(open_tracker):
    tracker = open_tracker()
    tracker.add("a")
    tracker.mark_done("a")
    tracker.add_if_absent("a")
    tracker.add_if_absent("b")
    assert tracker.done("a") and not tracker.done("b") and len(tracker) == 2


def test_add_many_adds_none_when_one_is_a_duplicate(open_tracker):
    tracker = open_tracker()
    tracker.add("b")
    with pytest.raises(DuplicateKeyError, match="'b'"):
        tracker.add_many(["a", "b", "c"])
    with pytest.raises(DuplicateKeyError, match="twice"):
        tracker.add_many(["x", "y", "x"])
    assert list(tracker) == ["b"]
    tracker.add_many(k for k in ["a", "c"])
    assert list(tracker) == ["b", "a", "c"]


def test_add_many_if_absent_skips_existing_keys_and_keeps_order(open_tracker, path):
    tracker = open_tracker()
    tracker.add("b")
    tracker.mark_done("b")
    tracker.add_many_if_absent(["a", "b", "c", ("t", 1), 7])
    assert list(tracker) == ["b", "a", "c", ("t", 1), 7]
    assert tracker.done("b")
    tracker.close()
    assert list(reopened(path)["data"]) == ["b", "a", "c", ("t", 1), 7]


# -- per-key methods ---------------------------------------------------------------

PER_KEY = [
    "mark_done",
    "mark_not_done",
    "increment_tries",
    "decrement_tries",
    "reset_tries",
    "tries",
    "abort",
    "unabort",
    "aborted",
    "should_do",
    "should_try",
]


@pytest.mark.parametrize("method", PER_KEY)
def test_a_missing_key_raises_key_error_naming_it(open_tracker, method):
    tracker = open_tracker()
    tracker.add("present")
    with pytest.raises(KeyError, match="'ghost-42'"):
        getattr(tracker, method)("ghost-42")
    assert list(tracker) == ["present"]


def test_done_and_check_answer_false_for_a_missing_key(open_tracker):
    tracker = open_tracker()
    assert tracker.done("nope") is False
    assert tracker.check("nope") is False
    assert "nope" not in tracker


def test_mark_done_and_not_done(open_tracker, path):
    tracker = open_tracker()
    tracker.add_many(["a", "b"])
    tracker.mark_done("a")
    tracker.mark_done("a")
    assert tracker.done("a") and tracker.check("a") and tracker.num_done() == 1
    tracker.mark_not_done("a")
    tracker.mark_not_done("b")
    assert not tracker.done("a") and tracker.num_done() == 0
    tracker.mark_done("b")
    tracker.close()
    assert reopened(path)["counts"] == (1, 0, 0)


def test_tries_go_up_down_and_back_to_zero(open_tracker):
    tracker = open_tracker()
    tracker.add("a")
    tracker.increment_tries("a")
    tracker.increment_tries("a")
    assert tracker.tries("a") == 2 and tracker.num_tried() == 1
    tracker.decrement_tries("a")
    assert tracker.tries("a") == 1 and tracker.num_tried() == 1
    tracker.decrement_tries("a")
    assert tracker.tries("a") == 0 and tracker.num_tried() == 0
    with pytest.raises(InvalidArgumentError, match="below 0"):
        tracker.decrement_tries("a")
    tracker.increment_tries("a")
    tracker.reset_tries("a")
    assert tracker.tries("a") == 0 and tracker.num_tried() == 0


def test_abort_and_unabort(open_tracker):
    tracker = open_tracker()
    tracker.add("a")
    tracker.abort("a")
    tracker.abort("a")
    assert tracker.aborted("a") and tracker.num_aborted() == 1
    assert not tracker.should_do("a") and tracker.should_do("a", allow_aborted=True)
    assert not tracker.try_it("a")
    tracker.unabort("a")
    assert not tracker.aborted("a") and tracker.num_aborted() == 0
    assert tracker.try_it("a")


# -- deciding -------------------------------------------------------------------------


def test_try_it_follows_the_manual(open_tracker):
    tracker = open_tracker(max_tries=3)
    assert "new" not in tracker
    assert tracker.try_it("new") is True  # added, then tried
    assert without_lease(tracker["new"]) == new_record(_tries=1)
    tracker.mark_done("new")
    assert tracker.try_it("new") is False  # done
    assert tracker.tries("new") == 1
    assert [tracker.try_it("flaky") for _ in range(5)] == [True, True, True, False, False]
    assert tracker.tries("flaky") == 3
    tracker.add("stop")
    tracker.abort("stop")
    assert tracker.try_it("stop") is False and tracker.tries("stop") == 0


def test_should_do_honours_max_tries_done_and_aborted(open_tracker):
    tracker = open_tracker(max_tries=2)
    tracker.add_many(["a", "b", "c"])
    assert tracker.should_do("a")
    tracker.increment_tries("a")
    tracker.increment_tries("a")
    assert not tracker.should_do("a")
    tracker.mark_done("b")
    assert not tracker.should_do("b") and not tracker.should_do("b", allow_aborted=True)
    tracker.abort("c")
    assert not tracker.should_do("c") and tracker.should_do("c", allow_aborted=True)


def test_should_do_add_adds_and_honours_allow_aborted(open_tracker):
    tracker = open_tracker()
    assert tracker.should_do_add("a") and "a" in tracker
    tracker.abort("a")
    assert not tracker.should_do_add("a")
    # 0.0.3 dropped allow_aborted here.
    assert tracker.should_do_add("a", allow_aborted=True)
    assert tracker.tries("a") == 0


def test_should_try_counts_a_try_only_when_true(open_tracker):
    tracker = open_tracker(max_tries=1)
    tracker.add("a")
    assert tracker.should_try("a") and tracker.tries("a") == 1
    assert not tracker.should_try("a") and tracker.tries("a") == 1
    tracker.add("b")
    tracker.abort("b")
    assert not tracker.should_try("b")
    assert tracker.should_try("b", allow_aborted=True) and tracker.tries("b") == 1


def test_should_try_add_adds_and_honours_allow_aborted(open_tracker):
    tracker = open_tracker()
    assert tracker.should_try_add("a") and tracker.tries("a") == 1
    tracker.abort("a")
    assert not tracker.should_try_add("a")
    assert tracker.should_try_add("a", allow_aborted=True) and tracker.tries("a") == 2


# -- iterating ---------------------------------------------------------------------------


@pytest.fixture
def mixed(open_tracker):
    """a: to do; b: done; c: out of tries; d: aborted; e: tried once."""
    tracker = open_tracker(max_tries=2)
    tracker.add_many("abcde")
    tracker.mark_done("b")
    tracker.try_it("c")
    tracker.try_it("c")
    tracker.abort("d")
    tracker.try_it("e")
    return tracker


def test_todo_iterators_are_generators_of_the_right_things(mixed):
    for name in ("todo_keys", "todo_items", "todo_values", "aborted_keys"):
        assert isinstance(getattr(mixed, name)(), types.GeneratorType), name
    assert list(mixed.todo_keys()) == ["a", "e"]
    assert list(mixed.todo_keys(allow_aborted=True)) == ["a", "d", "e"]
    assert list(mixed.todo_items()) == [("a", mixed["a"]), ("e", mixed["e"])]
    # 0.0.3's todo_values yielded (key, value) pairs.
    assert list(mixed.todo_values()) == [mixed["a"], mixed["e"]]
    assert mixed.tries("a") == 0  # looking does not count a try


def test_try_iterators_count_one_try_per_item(mixed):
    assert isinstance(mixed.try_keys(), types.GeneratorType)
    assert list(mixed.try_keys()) == ["a", "e"]
    assert (mixed.tries("a"), mixed.tries("e")) == (1, 2)
    # 0.0.3's try_items and try_values returned only the first item.
    items = list(mixed.try_items())
    assert items == [("a", mixed["a"])] and mixed.tries("a") == 2
    mixed.max_tries = 5
    assert list(mixed.try_values()) == [mixed["a"], mixed["c"], mixed["e"]]
    assert list(mixed.try_keys(allow_aborted=True)) == ["a", "c", "d", "e"]


def test_aborted_iterators(mixed):
    assert list(mixed.aborted_keys()) == ["d"]
    assert list(mixed.aborted_items()) == [("d", mixed["d"])]
    assert list(mixed.aborted_values()) == [mixed["d"]]


def test_try_keys_is_lazy_and_safe_to_stop(mixed):
    gen = mixed.try_keys()
    assert next(gen) == "a"
    assert mixed.tries("e") == 1  # not reached yet
    gen.close()
    assert mixed.tries("e") == 1


# -- counters -------------------------------------------------------------------------------


def test_fractions_of_an_empty_tracker_are_zero(open_tracker):
    tracker = open_tracker()
    for what in ("done", "tried", "aborted"):
        assert getattr(tracker, f"num_{what}")() == 0
        assert getattr(tracker, f"fraction_{what}")() == 0.0
        assert getattr(tracker, f"percent_{what}")() == "0.00 %"
        assert getattr(tracker, f"percent_not_{what}")() == "0.00 %"


def test_percentages_format_like_0_0_3(open_tracker):
    assert ProgressTracker.percent(0.347) == "34.70 %"
    assert ProgressTracker.percent(1 / 3, 4) == "33.3333 %"
    tracker = open_tracker()
    tracker.add_many(range(8))
    for key in range(3):
        tracker.mark_done(key)
    tracker.try_it(7)
    tracker.abort(6)
    assert tracker.fraction_done() == 3 / 8
    assert tracker.percent_done() == "37.50 %"
    assert tracker.percent_not_done() == "62.50 %"  # broken in 0.0.3
    assert tracker.percent_done(0) == "38 %"
    assert tracker.percent_tried(1) == "12.5 %" and tracker.percent_not_tried(1) == "87.5 %"
    assert tracker.percent_aborted() == "12.50 %" and tracker.percent_not_aborted() == "87.50 %"


def test_counters_follow_update_which_merges_records(open_tracker, path):
    tracker = open_tracker()
    tracker.add("a")
    tracker.try_it("a")
    tracker.update({"a": {"_done": True}, "b": {"_aborted": True, "note": 1}}, c={"x": 2})
    assert without_time(tracker["a"]) == new_record(_done=True, _tries=1)
    assert tracker["b"] == new_record(_aborted=True, note=1)
    assert tracker["c"] == new_record(x=2)
    assert (tracker.num_done(), tracker.num_tried(), tracker.num_aborted()) == (1, 1, 1)
    tracker.update([("a", {"_done": False})])
    assert tracker.num_done() == 0
    tracker.close()
    assert reopened(path)["counts"] == (0, 1, 1)


def test_update_checks_everything_before_changing_anything(open_tracker):
    tracker = open_tracker()
    tracker.add("a")
    with pytest.raises(InvalidValueError):
        tracker.update({"a": {"_done": True}, "b": 5})
    with pytest.raises(InvalidValueError):
        tracker.update({"a": {"_done": True}, "b": {"_tries": -2}})
    assert tracker.to_dict() == {"a": new_record()} and tracker.num_done() == 0


def test_counters_follow_assignment_and_deletion(open_tracker):
    tracker = open_tracker()
    tracker["a"] = new_record(_done=True, _tries=2)
    tracker["b"] = new_record(_aborted=True)
    assert (tracker.num_done(), tracker.num_tried(), tracker.num_aborted()) == (1, 1, 1)
    tracker["a"] = new_record()
    assert (tracker.num_done(), tracker.num_tried()) == (0, 0)
    del tracker["b"]
    assert tracker.num_aborted() == 0
    tracker["c"] = new_record(_done=True)
    assert tracker.pop("c")["_done"] and tracker.num_done() == 0
    tracker.setdefault("d", new_record(_done=True))
    assert tracker.num_done() == 1
    tracker.clear()
    assert (tracker.num_done(), tracker.num_tried(), tracker.num_aborted()) == (0, 0, 0)


def test_counters_follow_a_change_in_place_through_a_read(open_tracker, path):
    tracker = open_tracker()
    tracker.add_many(["a", "b"])
    tracker["a"]["_done"] = True
    assert tracker.num_done() == 1
    record = tracker["b"]
    record["_tries"] = 4
    record["_aborted"] = True
    assert tracker.num_tried() == 1 and tracker.num_aborted() == 1
    tracker.set["b"]["_aborted"] = False
    assert tracker.num_aborted() == 0
    tracker.close()
    assert reopened(path)["counts"] == (1, 1, 0)


def test_counters_follow_mark_dirty_after_a_change_through_an_old_reference(open_tracker):
    tracker = open_tracker()
    tracker.add("a")
    record = tracker["a"]
    assert tracker.num_done() == 0
    record["_done"] = True  # the tracker cannot see this line
    tracker.mark_dirty("a")
    assert tracker.num_done() == 1


def test_counters_follow_revert(open_tracker):
    tracker = open_tracker()
    tracker.add_many(["a", "b"])
    tracker.mark_done("a")
    tracker.sync()
    tracker.mark_done("b")
    tracker["a"]["_done"] = False
    tracker.abort("a")
    tracker.revert()
    assert (tracker.num_done(), tracker.num_aborted()) == (1, 0)
    assert tracker.done("a") and not tracker.done("b")


def test_counters_follow_refresh_from_another_process(open_tracker, path):
    tracker = open_tracker()
    tracker.add_many(["a", "b", "c"])
    tracker.sync()
    assert tracker["a"] == new_record()  # handed out before the other process writes
    result = run_python(
        """
        import sys
        from tastypy import Tracker
        with Tracker(sys.argv[1]) as t:
            t.mark_done("a")
            t.try_it("b")
            t.abort("c")
            t.add("d")
            t.mark_done("d")
        """,
        path,
    )
    assert result.returncode == 0, result.stderr
    tracker.refresh()
    assert (tracker.num_done(), tracker.num_tried(), tracker.num_aborted()) == (2, 1, 1)
    assert list(tracker) == ["a", "b", "c", "d"]


def test_counters_are_right_after_reopening(path):
    with Tracker(path, max_tries=5) as tracker:
        tracker.add_many(range(10))
        for key in range(6):
            tracker.try_it(key)
        for key in range(4):
            tracker.mark_done(key)
        tracker.abort(9)
    assert reopened(path)["counts"] == (4, 6, 1)


def test_counters_survive_a_damaged_record(path):
    with Tracker(path) as tracker:
        tracker.add_many(["a", "b"])
        tracker.mark_done("a")
        tracker["b"]["_tries"] = "many"  # a change in place is not checked
        del tracker["a"]["_aborted"]
        assert tracker.num_done() == 1 and tracker.num_tried() == 0
    with Tracker(path) as tracker:
        assert tracker.num_done() == 1
        assert tracker.aborted("a") is False  # the missing field is filled in
        with pytest.raises(InvalidValueError, match="_tries"):
            tracker.try_it("b")


# -- kinds ----------------------------------------------------------------------------------


def test_a_tracker_opened_as_a_pod_is_a_clear_error(path):
    with Tracker(path) as tracker:
        tracker.add("a")
    with pytest.raises(KindMismatchError, match="tastypy.Tracker"):
        POD(path)
    assert reopened(path)["data"] == {"a": new_record()}


def test_a_pod_opened_as_a_tracker_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.pod"
    with POD(path) as pod:
        pod["a"] = 1
    with pytest.raises(KindMismatchError, match="tastypy.POD"):
        Tracker(path)
    with POD(path) as pod:
        assert pod.to_dict() == {"a": 1}


# -- stats ------------------------------------------------------------------------------------


def test_stats_partitions_the_tasks(mixed):
    mixed.add("f")
    for task in mixed.attempts(["f"]):
        # The task is running: started, not ended.
        assert mixed.stats()["in_progress"] == 1
        with task:
            pass
    # c is out of tries, but its last try still runs here (its lease is
    # live): not failed yet, until that lease ends.
    assert (mixed.stats()["failed"], mixed.stats()["todo"]) == (0, 3)
    assert list(mixed.failed_keys()) == []
    mixed.release(["c"], tried=True)
    assert list(mixed.failed_keys()) == ["c"]
    stats = mixed.stats()
    assert {k: stats[k] for k in COUNTS} == {
        "total": 6,
        "done": 2,
        "todo": 2,
        "failed": 1,
        "aborted": 1,
        "in_progress": 0,
        "leased": 1,  # e: tried here, not done: leased to this process (docs/leases.md)
        "expired": 0,
        "tries": {0: 3, 1: 2, 2: 1},
        "leased_by": {mixed.holder: 1},
        "recent_done": 2,  # "f" and the one marked done: both recorded when
    }
    assert stats["last_done"] == _iso(mixed["f"]["_done_at"])
    assert type(stats) is dict
    assert sum(stats[k] for k in ("done", "todo", "failed", "aborted", "in_progress")) == 6


#: The counts of stats(); the other keys are times and the rate.
COUNTS = (
    "total", "done", "todo", "failed", "aborted", "in_progress", "leased", "expired", "tries",
    "leased_by", "recent_done",
)  # fmt: skip


def test_stats_of_an_empty_tracker(open_tracker):
    assert open_tracker().stats() == {
        "total": 0,
        "done": 0,
        "todo": 0,
        "failed": 0,
        "aborted": 0,
        "in_progress": 0,
        "leased": 0,
        "expired": 0,
        "tries": {},
        "leased_by": {},
        "due": 0,
        "oldest_done": None,
        "newest_done": None,
        "not_updated_1d": 0,
        "not_updated_7d": 0,
        "recent_done": 0,
        "recent_since": None,
        "last_done": None,
        "rate": None,
        "eta": 0.0,
    }


# -- attempts --------------------------------------------------------------------------------


def test_attempts_mark_success_done_and_record_errors(open_tracker, path):
    tracker = open_tracker(max_tries=2)
    seen = []
    for task in tracker.attempts(["ok", "bad", "ok2"]):
        with task:
            seen.append(task.key)
            if task.key == "bad":
                raise ValueError("the input is corrupt")
            task["result"] = task.key.upper()
    assert seen == ["ok", "bad", "ok2"]
    assert tracker.done("ok") and tracker["ok"]["result"] == "OK"
    assert not tracker.done("bad") and tracker.tries("bad") == 1
    error = tracker["bad"]["_error"]
    assert error["type"] == "ValueError" and error["message"] == "the input is corrupt"
    assert "Traceback" in error["traceback"] and "the input is corrupt" in error["traceback"]
    assert error["time"] <= tracker["bad"]["_ended"]
    assert tracker["ok"]["_started"] <= tracker["ok"]["_ended"]
    assert "_error" not in tracker["ok"]
    # A second pass tries only what is left, and a success clears the error.
    assert [task.key for task in tracker.attempts()] == ["bad"]
    for _task in tracker.attempts():
        raise AssertionError("bad is out of tries")
    tracker.max_tries = 3
    for task in tracker.attempts():
        with task:
            pass
    assert tracker.done("bad") and "_error" not in tracker["bad"]
    tracker.close()
    assert reopened(path)["counts"] == (3, 3, 0)


def test_attempts_can_reraise(open_tracker):
    tracker = open_tracker()
    with pytest.raises(KeyError, match="missing-field"):
        for task in tracker.attempts(["a", "b"], reraise=True):
            with task:
                raise KeyError("missing-field")
    assert tracker.tries("a") == 1 and tracker.tries("b") == 0
    assert tracker["a"]["_error"]["type"] == "KeyError"


def test_ctrl_c_in_a_task_gives_the_try_back(open_tracker):
    tracker = open_tracker(max_tries=1)
    with pytest.raises(KeyboardInterrupt):
        for task in tracker.attempts(["a", "b"]):
            with task:
                raise KeyboardInterrupt
    assert tracker.tries("a") == 0 and tracker.num_tried() == 0
    assert "_error" not in tracker["a"] and "_ended" in tracker["a"]
    assert tracker.stats()["todo"] == 2


def test_a_task_whose_block_never_began_gets_its_try_back_at_close(open_tracker, path):
    # The loop stopped (or a Ctrl-C landed) between the claim and the block:
    # the task did not run. Another handle on the same state closing first
    # leaves it alone: the task is this handle's.
    tracker = open_tracker(max_tries=1)
    task = next(tracker.attempts(["a", "b"]))
    assert task.key == "a" and tracker.tries("a") == 1
    other = open_tracker()
    other.close()
    assert tracker.tries("a") == 1 and tracker.lease_info(["a"])["a"].holder is not None
    tracker.close()
    with Tracker(path) as reopened:
        assert reopened.tries("a") == 0 and reopened.stats()["todo"] == 2
        assert reopened.stats()["in_progress"] == 0
        assert reopened.lease_info() == {}


def test_attempt_of_one_key(open_tracker):
    tracker = open_tracker(max_tries=1)
    with tracker.attempt("job") as task:
        assert task and task.key == "job"
        task["answer"] = 42
    assert tracker.done("job") and tracker["job"]["answer"] == 42
    with tracker.attempt("job") as task:
        assert not task  # done: nothing to run, nothing recorded
    assert tracker.tries("job") == 1
    with pytest.raises(RuntimeError):
        with tracker.attempt("other") as task:
            raise RuntimeError("reraised by default")
    assert tracker["other"]["_error"]["message"] == "reraised by default"
    with tracker.attempt("other") as task:
        assert not task  # out of tries
    assert tracker.stats()["failed"] == 1


def test_ending_an_attempt_without_a_with_block(open_tracker, path):
    tracker = open_tracker(max_tries=3)
    done, failed, stopped = (tracker.attempt(k) for k in ("done", "failed", "stopped"))
    assert done.end() == "done" and done.end(ValueError("late")) == "done"
    assert failed.end(ValueError("no")) == "failed" == failed.outcome
    assert stopped.end(KeyboardInterrupt()) == "interrupted"
    assert tracker.done("done") and "_error" not in tracker["done"]
    assert tracker["failed"]["_error"]["message"] == "no" and tracker.tries("failed") == 1
    assert tracker.tries("stopped") == 0  # given back
    assert tracker.lease_info() == {}
    tracker.mark_done("failed")
    with tracker.attempt("failed") as skipped:
        assert skipped.end() is None  # not to run: left alone


def test_flush_writes_what_another_process_then_reads(open_tracker, path):
    tracker = open_tracker(sync_at=1_000_000)
    tracker.add_many(["a", "b"])
    tracker.sync()
    tracker.mark_done("a")
    read = "import sys, tastypy; print(tastypy.Tracker(sys.argv[1]).num_done())"
    assert run_python(read, path).stdout.strip() == "0"
    tracker.flush()
    assert run_python(read, path).stdout.strip() == "1"


def test_todo_keys_among_given_keys(open_tracker):
    tracker = open_tracker(max_tries=1)
    tracker.add_many(["a", "b", "c", "d"])
    tracker.mark_done("b")
    tracker.abort("c")
    assert list(tracker.todo_keys(keys=["d", "c", "b", "a", "x"])) == ["d", "a"]
    assert list(tracker.todo_keys(True, keys=["d", "c"])) == ["d", "c"]
    assert list(tracker.todo_keys()) == ["a", "d"]


def test_closed_and_sync_lock(open_tracker):
    tracker = open_tracker()
    assert not tracker.closed
    with tracker.sync_lock, tracker.sync_lock:  # re-entrant, and a sync may take it
        tracker["a"] = {}
        tracker.sync()
    tracker.close()
    assert tracker.closed


def test_progress_plain_line_on_stderr(open_tracker, capsys):
    tracker = open_tracker()
    for task in tracker.attempts(range(5), progress="plain"):
        with task:
            if task.key == 3:
                raise ValueError
    err = capsys.readouterr().err
    assert "4/5 done" in err and "1 failed" in err and "tasks/s" in err


def test_progress_true_shows_done_over_total(open_tracker, capsys):
    # With tqdm installed (tastypy[progress]) a bar, without it the plain line.
    tracker = open_tracker()
    tracker.add_many(range(10))
    for key in range(4):
        tracker.mark_done(key)
    for task in tracker.attempts(progress=True):
        with task:
            pass
    assert "10/10" in capsys.readouterr().err


# -- the reference example of the class docstring ------------------------------------------


def test_the_docstring_example(tmp_path):
    tracker = Tracker(tmp_path / "my.tracker", max_tries=3)
    for name in ["a", "b", "c"]:
        if not tracker.try_it(name):
            continue
        tracker.mark_done(name)
        tracker[name]["result"] = name.upper()
    assert (tracker.num_done(), tracker["b"]["result"], sorted(tracker["b"])) == (
        3,
        "B",
        ["_aborted", "_done", "_done_at", "_tries", "result"],
    )
    tracker.close()


def test_closed_tracker_refuses_changes(path):
    tracker = Tracker(path)
    tracker.add("a")
    tracker.close()
    with pytest.raises(PersistentOrderedDictException, match="closed"):
        tracker.try_it("a")
    with pytest.raises(PersistentOrderedDictException, match="closed"):
        tracker.mark_done("a")
    assert reopened(path)["data"] == {"a": new_record()}


def test_threads_sharing_a_tracker_lose_nothing(open_tracker, path):
    import threading

    tracker = open_tracker(max_tries=3, sync_at=50)

    def worker(first: int) -> None:
        for key in range(first, first + 500):
            if tracker.try_it(key):
                tracker[key]["by"] = first
                tracker.mark_done(key)

    threads = [threading.Thread(target=worker, args=(i * 500,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (tracker.num_done(), tracker.num_tried(), len(tracker)) == (2000, 2000, 2000)
    tracker.close()
    got = reopened(path)
    assert got["counts"] == (2000, 2000, 0)
    assert all(rec["by"] == key // 500 * 500 for key, rec in got["data"].items())
