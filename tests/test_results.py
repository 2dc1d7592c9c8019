"""One validation everywhere: what ``run()``, ``attempts()`` (a Task's
fields) and ``tracker[k] = record`` accept or refuse is the codec's one set
(``tastypy.codec.encode_value``); a result that cannot be stored fails its
attempt with an error naming the key and the type, and the run goes on."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import math
import os
from concurrent.futures import ProcessPoolExecutor

import pytest
from conftest import child_env, run_python
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tastypy import InvalidValueError, Tracker
from tastypy.codec import encode_value


@dataclasses.dataclass
class Point:
    x: int


#: Results JSON cannot hold, and the type their error names.
BAD = {
    "nan": (float("nan"), "NaN"),
    "inf": ([1.0, -math.inf], "NaN or infinity"),
    "datetime": (datetime.datetime(2024, 5, 1, 12), "datetime"),
    "dataclass": (Point(1), "Point"),
    "set": ({1, 2}, "set"),
    "nested set": ({"a": [{"b": {3}}]}, "set"),
}

RESULTS = {name: value for name, (value, _) in BAD.items()}
RESULTS["int keys"] = {1: "a"}  # JSON's rule: stored as {"1": "a"}
RESULTS["plain"] = [1, "two", 3.5, None, True]


def result_of(key: str):
    """The task's result (module level: a process pool pickles it)."""
    return RESULTS[key]


@pytest.fixture
def tracker(tmp_path):
    with Tracker(tmp_path / "t", max_tries=3) as tracker:
        yield tracker


def check_outcome(tracker, path):
    for name, (_, kind) in BAD.items():
        assert not tracker.done(name), name
        error = tracker[name]["_error"]
        assert error["type"] == "tastypy.errors.InvalidValueError", name
        assert f"key {name!r}" in error["message"] and kind in error["message"], error
        assert "result" not in tracker[name]
    assert tracker["plain"]["result"] == RESULTS["plain"]
    tracker.close()
    with Tracker(path) as again:  # all of it was written; JSON's rule for int keys
        assert again["int keys"]["result"] == {"1": "a"} and again.done("int keys")
        assert again.stats()["done"] == 2


@pytest.mark.parametrize("pool", [False, True], ids=["here", "process pool"])
def test_run_records_an_unstorable_result_as_a_failure_and_goes_on(tracker, pool):
    if pool:
        with ProcessPoolExecutor(2) as executor:
            summary = tracker.run(result_of, list(RESULTS), executor=executor)
    else:
        summary = tracker.run(result_of, list(RESULTS))
    assert (summary["done"], summary["failed"], summary["left"]) == (2, len(BAD), len(BAD))
    for name, (_, kind) in BAD.items():
        assert summary["errors"][name].startswith("InvalidValueError: cannot store the value")
        assert kind in summary["errors"][name]
    check_outcome(tracker, tracker.path)


def test_attempts_refuse_an_unstorable_result_at_the_line_that_stores_it(tracker):
    after = []
    for task in tracker.attempts(list(RESULTS)):
        with task:
            task["result"] = RESULTS[task.key]
            after.append(task.key)  # not reached when the line above refused
    assert after == ["int keys", "plain"]
    check_outcome(tracker, tracker.path)


def test_a_field_changed_in_place_into_what_json_cannot_hold_fails_the_attempt(tracker):
    for task in tracker.attempts(["k"]):
        with task:
            task.record["when"] = {}
            # Inside a field: not checked at the line (only the record's own
            # fields are), but when the attempt ends.
            task.record["when"]["day"] = datetime.date(2024, 5, 1)
            task.record["fine"] = 1
    assert task.outcome == "failed" and not tracker.done("k")
    assert "the field 'when' of the task 'k' was left out" in tracker["k"]["_error"]["message"]
    assert tracker["k"]["fine"] == 1 and "when" not in tracker["k"]
    # attempt() re-raises by default: the error comes out of the block.
    with pytest.raises(InvalidValueError, match="field 'x' of the task 'j'.*set"):
        with tracker.attempt("j") as task:
            task.record["x"] = {1}
    tracker.sync()  # nothing unstorable is left to refuse a later write


@pytest.mark.parametrize("name", list(BAD))
def test_a_record_read_from_the_tracker_refuses_an_unstorable_value_at_the_line(tracker, name):
    value, kind = BAD[name]
    tracker.add("k")
    record = tracker["k"]
    record["fine"] = [1, {"a": None}]
    before = dict(record)
    with pytest.raises(InvalidValueError, match=f"field 'x' of the task 'k'.*{kind}"):
        record["x"] = value
    for change in (
        lambda: record.update(x=value),
        lambda: record.update({"x": value}, y=1),
        lambda: record.setdefault("x", value),
        lambda: record.__ior__({"x": value}),
    ):
        with pytest.raises(InvalidValueError, match="the task 'k'"):
            change()
    assert record == before and tracker["k"] is record
    tracker.close()  # nothing unstorable is left to refuse the write
    with Tracker(tracker.path) as again:
        assert again["k"] == before


def test_a_record_from_the_tracker_is_a_dict_like_any_other(tracker):
    import copy
    import json
    import pickle

    import orjson

    tracker.try_it("k")
    tracker.mark_done("k")
    record = tracker["k"]
    record["result"] = {"pages": [1, 2]}
    record |= {"more": 1}
    plain = dict(record)
    assert isinstance(record, dict) and record == plain and plain == record
    assert orjson.dumps(record) == orjson.dumps(plain)
    assert json.loads(json.dumps(record)) == plain
    for duplicate in (record.copy(), copy.copy(record), pickle.loads(pickle.dumps(record))):
        assert type(duplicate) is dict and duplicate == plain
    tracker["other"] = record  # a copy goes in, not the same object
    tracker["other"]["result"] = 2
    assert record["result"] == {"pages": [1, 2]}
    assert tracker.done("other") and tracker.num_done() == 2
    tracker.close()
    with Tracker(tracker.path) as again:
        assert again["k"] == plain and again["other"]["result"] == 2


def test_a_job_whose_results_cannot_be_stored_exits_cleanly(tmp_path):
    # Before: the run crashed, close() raised, and the exit printed two or
    # three tracebacks (the last a NameError from the interpreter's teardown).
    code = """
    import datetime, sys
    from concurrent.futures import ProcessPoolExecutor
    import tastypy
    from test_results import result_of, RESULTS
    tracker = tastypy.Tracker(sys.argv[1], max_tries=1)
    with ProcessPoolExecutor(2) as pool:
        summary = tracker.run(result_of, list(RESULTS), executor=pool)
    print(summary["done"], summary["failed"])
    """
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env["PYTHONPATH"]])
    out = run_python(code, tmp_path / "t", env=env)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.split() == ["2", str(len(BAD))]


# -- the same set everywhere, for any value ----------------------------------------------------

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from([{1}, frozenset(), Point(2), datetime.date(2024, 1, 1), b"x", 1j, object()])
)
values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=2) | st.integers(-3, 3), inner, max_size=3)
    ),
    max_leaves=6,
)

_keys = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=values)
def test_run_attempts_and_assignment_accept_the_same_values(tracker, value):
    try:
        encode_value("k", value)
        storable = True
    except InvalidValueError:
        storable = False
    n = next(_keys)
    # tracker[k] = record
    key = f"assigned-{n}"
    try:
        tracker[key] = {"result": value}
        assigned = True
    except InvalidValueError as exc:
        assigned = False
        assert repr(key) in str(exc) and key not in tracker
    # a Task's field, in attempts()
    key = f"attempted-{n}"
    for task in tracker.attempts([key]):
        with task:
            task["result"] = value
    # run()'s result
    run_key = f"run-{n}"
    summary = tracker.run(lambda _: value, [run_key])
    # a change in place of a record read from the tracker
    key = f"in-place-{n}"
    tracker.add(key)
    try:
        tracker[key]["result"] = value
        in_place = True
    except InvalidValueError as exc:
        in_place = False
        assert repr(key) in str(exc) and "result" not in tracker[key]
    outcomes = (assigned, task.outcome == "done", summary["done"] == 1, in_place)
    assert outcomes == (storable,) * 4
    if not storable:
        assert repr(run_key) in summary["errors"][run_key]
