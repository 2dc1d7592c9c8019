"""Hypothesis drives a tracker and a plain model side by side.

After every step the tracker's records and its counters (``num_done``,
``num_tried``, ``num_aborted``, ``len``, ``stats()``) must equal the model's,
whatever path changed a record: assignment, deletion, ``update``, the
tracker's methods, a change in place through a read, ``mark_dirty`` after a
change through an old reference, ``revert``, ``refresh`` after another
writer (with and without a compaction), and reopening.

The model also keeps what is on disk: every sync, every try that returns
True (a try writes every unsynced change before it returns) and every bulk
method (they sync when done) make the disk equal to memory, so ``revert``
can be checked too.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tastypy import DuplicateKeyError, InvalidValueError, Tracker

KEYS = st.sampled_from(["a", "b", "c", "d", 7, ("t", 2)])
FIELDS = st.sampled_from(["_done", "_tries", "_aborted", "note"])
NOISE = ("_started", "_ended", "_error", "_lease_until", "_holder", "_done_at")
MAX_TRIES = 3


def field_value(field: str):
    if field in ("_done", "_aborted"):
        return st.booleans()
    if field == "_tries":
        return st.integers(0, 5)
    small_lists = st.lists(st.integers(-100, 100), max_size=2)
    return st.one_of(st.integers(-3, 3), st.text(max_size=3), small_lists)


@st.composite
def records(draw):
    record = {}
    for field in draw(st.lists(FIELDS, unique=True)):
        record[field] = draw(field_value(field))
    return record


@st.composite
def field_and_value(draw):
    field = draw(FIELDS)
    return field, draw(field_value(field))


def full(record: dict) -> dict:
    out = {"_done": False, "_tries": 0, "_aborted": False}
    out.update(record)
    return out


def strip(record: dict) -> dict:
    """A record without the times and errors that attempts add, and its lease
    (a ``_done_at`` there must be a time: tests/test_freshness.py checks when)."""
    assert type(record.get("_done_at", 0.0)) is float, record
    return {f: v for f, v in record.items() if f not in NOISE}


def runnable(record: dict, allow_aborted: bool = False) -> bool:
    return (
        not record["_done"]
        and (allow_aborted or not record["_aborted"])
        and record["_tries"] < MAX_TRIES
    )


class TrackerMachine(RuleBasedStateMachine):
    lock = "auto"

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tracker-stateful-"))
        self.path = self.dir / "jobs.tracker"
        self.tracker = self._open()
        self.model: dict = {}
        self.disk: dict = {}

    def _open(self) -> Tracker:
        # A huge sync_at: only the writes the model knows about happen.
        return Tracker(self.path, max_tries=MAX_TRIES, sync_at=10**6, lock=self.lock)

    def written(self) -> None:
        self.disk = copy.deepcopy(self.model)

    def teardown(self):
        self.tracker.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the mapping ----------------------------------------------------------

    @rule(key=KEYS, record=records())
    def assign(self, key, record):
        self.tracker[key] = copy.deepcopy(record)
        self.model[key] = full(record)

    @rule(key=KEYS, bad=st.one_of(st.integers(), st.none(), st.just({"_tries": -1})))
    def assign_something_refused(self, key, bad):
        with pytest.raises(InvalidValueError):
            self.tracker[key] = bad

    @rule(key=KEYS)
    def delete(self, key):
        if key in self.model:
            del self.tracker[key]
            del self.model[key]
        else:
            with pytest.raises(KeyError):
                del self.tracker[key]

    @rule(key=KEYS, record=records())
    def update_merges(self, key, record):
        self.tracker.update({key: copy.deepcopy(record)})
        self.model[key] = full({**self.model.get(key, {}), **record})
        self.written()

    @rule(key=KEYS, change=field_and_value())
    def change_in_place_through_a_read(self, key, change):
        field, value = change
        if key not in self.model:
            return
        self.tracker[key][field] = copy.deepcopy(value)
        self.model[key][field] = value

    @rule(key=KEYS, change=field_and_value())
    def change_through_an_old_reference_then_mark_dirty(self, key, change):
        field, value = change
        if key not in self.model:
            return
        record = self.tracker[key]
        self.tracker.num_done()  # the read is counted here, before the change
        record[field] = copy.deepcopy(value)
        self.tracker.mark_dirty(key)
        self.model[key][field] = value

    @rule(key=KEYS, record=records())
    def setdefault(self, key, record):
        got = self.tracker.setdefault(key, copy.deepcopy(record))
        self.model.setdefault(key, full(record))
        assert strip(got) == self.model[key]

    # -- tracker methods --------------------------------------------------------

    @rule(key=KEYS)
    def add(self, key):
        if key in self.model:
            with pytest.raises(DuplicateKeyError):
                self.tracker.add(key)
        else:
            self.tracker.add(key)
            self.model[key] = full({})

    @rule(keys=st.lists(KEYS, max_size=4))
    def add_many_if_absent(self, keys):
        self.tracker.add_many_if_absent(keys)
        for key in keys:
            self.model.setdefault(key, full({}))
        self.written()

    @rule(key=KEYS)
    def try_it(self, key):
        record = self.model.get(key)
        if record is None:
            record = self.model[key] = full({})
        expected = runnable(record)
        assert self.tracker.try_it(key) is expected
        if expected:
            record["_tries"] += 1
        # Granted or not, a try writes every change made before it.
        self.written()

    @rule(key=KEYS, allow_aborted=st.booleans())
    def should_try(self, key, allow_aborted):
        if key not in self.model:
            with pytest.raises(KeyError):
                self.tracker.should_try(key, allow_aborted)
            return
        expected = runnable(self.model[key], allow_aborted)
        assert self.tracker.should_try(key, allow_aborted) is expected
        if expected:
            self.model[key]["_tries"] += 1
        self.written()

    @rule(
        key=KEYS,
        method=st.sampled_from(
            ["mark_done", "mark_not_done", "abort", "unabort", "increment_tries", "reset_tries"]
        ),
    )
    def flag_method(self, key, method):
        if key not in self.model:
            with pytest.raises(KeyError):
                getattr(self.tracker, method)(key)
            return
        getattr(self.tracker, method)(key)
        record = self.model[key]
        if method == "mark_done":
            record["_done"] = True
        elif method == "mark_not_done":
            record["_done"] = False
        elif method == "abort":
            record["_aborted"] = True
        elif method == "unabort":
            record["_aborted"] = False
        elif method == "increment_tries":
            record["_tries"] += 1
        else:
            record["_tries"] = 0

    @rule(key=KEYS)
    def decrement_tries(self, key):
        record = self.model.get(key)
        if record is None or record["_tries"] == 0:
            with pytest.raises((KeyError, ValueError)):
                self.tracker.decrement_tries(key)
            return
        self.tracker.decrement_tries(key)
        record["_tries"] -= 1

    @rule(key=KEYS, fails=st.booleans())
    def attempt(self, key, fails):
        record = self.model.setdefault(key, full({}))
        expected = runnable(record)
        with self.tracker.attempt(key, reraise=False) as task:
            assert bool(task) is expected
            if task and fails:
                raise ValueError("simulated failure")
        # The try, granted or not, was written with everything before it;
        # the outcome not yet.
        if expected:
            record["_tries"] += 1
        self.written()
        if expected and not fails:
            record["_done"] = True

    # -- syncing, reverting, reopening, other writers ------------------------------

    @rule()
    def sync(self):
        self.tracker.sync()
        self.written()

    @rule()
    def revert(self):
        self.tracker.revert()
        self.model = copy.deepcopy(self.disk)

    @rule()
    def reopen(self):
        self.tracker.close()
        self.tracker = self._open()
        self.written()

    @rule(key=KEYS, other=KEYS, compact=st.booleans())
    def another_writer_then_refresh(self, key, other, compact):
        self.tracker.sync()
        self.written()
        with self._open() as writer:
            writer.add_if_absent(key)
            writer.mark_done(key)
            if other != key and other in writer:
                del writer[other]
            if compact:
                writer.compact()
        self.model.setdefault(key, full({}))["_done"] = True
        if other != key:
            self.model.pop(other, None)
        self.written()
        self.tracker.refresh()

    def _another_handle_tries(self, key, done: bool) -> None:
        """Another handle tries ``key`` (and if granted and ``done``, marks it
        done), and closes: the model and the disk follow."""
        with self._open() as writer:
            granted = writer.try_it(key)
            if granted and done:
                writer.mark_done(key)
        record = self.model.setdefault(key, full({}))
        assert granted is runnable(record)
        if granted:
            record["_tries"] += 1
            record["_done"] = record["_done"] or done
        self.written()

    @rule(key=KEYS, other=KEYS, done=st.booleans())
    def another_writer_then_try(self, key, other, done):
        # The other handle claims through its quick path; this tracker's next
        # try reads what it wrote after the fact (filed aside until a read
        # needs it, for plain string keys): every read below must see it.
        self.tracker.sync()
        self.written()
        self._another_handle_tries(other, done)
        self.try_it(key)
        # A try refused on what this tracker knows reads nothing; a refresh
        # then reads the rest (after a granted try there is nothing left to
        # read, and the other's records may still be filed aside).
        self.tracker.refresh()

    @rule(key=KEYS, done=st.booleans(), then=st.sampled_from(["sync", "refresh", "try"]))
    def add_here_while_another_writer_runs_it(self, key, done, then):
        # This tracker adds the key if absent (not yet written) while another
        # handle, which has not seen that add, tries it and maybe marks it
        # done: the add yields to what the other wrote.
        self.tracker.sync()
        self.written()
        self.tracker.add_if_absent(key)
        self._another_handle_tries(key, done)
        if then == "sync":
            self.tracker.sync()
        elif then == "refresh":
            self.tracker.refresh()
        else:
            self.try_it(key)

    # -- what must always hold ---------------------------------------------------------

    @invariant()
    def records_match(self):
        got = {k: strip(rec) for k, rec in self.tracker.to_dict().items()}
        assert got == self.model

    @invariant()
    def counters_match(self):
        model = self.model.values()
        assert self.tracker.num_done() == sum(1 for r in model if r["_done"])
        assert self.tracker.num_tried() == sum(1 for r in model if r["_tries"] > 0)
        assert self.tracker.num_aborted() == sum(1 for r in model if r["_aborted"])
        assert len(self.tracker) == len(self.model)

    @invariant()
    def stats_match(self):
        stats = self.tracker.stats()
        assert stats["total"] == len(self.model)
        assert stats["done"] == sum(1 for r in self.model.values() if r["_done"])
        parts = ("done", "todo", "failed", "aborted", "in_progress")
        assert sum(stats[p] for p in parts) == stats["total"]


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TrackerMachine.TestCase.settings = SETTINGS
test_tracker_against_a_model = TrackerMachine.TestCase


class SoftLockTrackerMachine(TrackerMachine):
    """The same with lock='soft': every write goes through the ordinary sync."""

    lock = "soft"


SoftLockTrackerMachine.TestCase.settings = settings(SETTINGS, max_examples=15)
test_tracker_against_a_model_with_soft_locks = SoftLockTrackerMachine.TestCase
