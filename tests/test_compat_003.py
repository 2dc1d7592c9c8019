"""tastypy 0.0.3's own test suite (``tastypy/test.py`` of enewe101/tastypy),
ported: the same calls and the same expectations, except where
``docs/compat.md`` lists a difference; each such place says so.

Ported as a whole:

* 0.0.3 read its shard files (``0.json``...) directly; here "what is on
  disk" is what a fresh handle opened on the path reads (:func:`on_disk`).
* The shared objects' tests handed one ``SharedPOD`` to forked children;
  the concurrent writes are run both that way (:data:`FORKED_WRITE`) and
  with each child process opening the path itself (see "Shared objects"
  and "Forked children" in ``docs/compat.md``); ``items()``, ``keys()``
  and ``values()`` are views, compared as lists (0.0.3 ran on Python 2).
"""

from __future__ import annotations

import time

import pytest
from conftest import run_python, spawn_python

import tastypy
from tastypy.progress_tracker import DEFAULT_PROGRESS_TRACKER_MAPPING

DEFAULT_TRACKER_ITEM = dict(DEFAULT_PROGRESS_TRACKER_MAPPING)
SYNC_AT = tastypy.DEFAULT_SYNC_AT
FILE_SIZE = tastypy.DEFAULT_FILE_SIZE


def on_disk(path) -> dict:
    """What another process opening ``path`` now reads (0.0.3's ``read_test_files``)."""
    try:
        reader = tastypy.POD(path, clone=False)
    except tastypy.KindMismatchError:
        reader = tastypy.Tracker(path, clone=False)
    with reader:
        return reader.to_dict()


# -- TestPOD -----------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
def test_pod_basic(tmp_path, gzipped):
    path = tmp_path / "test-data"
    my_pod = tastypy.POD(path, gzipped=gzipped, clone=False)
    my_pod["a"] = 1
    my_pod["b"] = "2"
    my_pod["c"] = {"key": [1, "2"]}
    for i in range(FILE_SIZE):
        my_pod[str(i)] = i
    entries = on_disk(path)
    assert entries["a"] == 1
    assert entries["b"] == "2"
    assert entries["c"] == {"key": [1, "2"]}
    # 0.0.3 compared with FILE_SIZE: the sync at SYNC_AT (= FILE_SIZE) changes.
    assert len(entries) == SYNC_AT
    my_pod.close()


def test_pod_integrity_check(tmp_path):
    path = tmp_path / "test-data"
    my_pod = tastypy.POD(path)
    my_pod.hold()
    for i in range(2 * FILE_SIZE):
        my_pod[str(i)] = "yo"
    my_pod.sync()
    journal = next(path.glob("journal-*.jsonl"))

    # 0.0.3 raised for an extra valid line at the end of a file. Now a record
    # after the last commit line is a torn write (docs/compat.md): ignored.
    with journal.open("a") as f:
        f.write('["extra-key","extra-val"]\n')
    my_pod.revert()
    assert "extra-key" not in my_pod and len(my_pod) == 2 * FILE_SIZE
    # A complete line there that is not a record is damage, as in 0.0.3.
    good = journal.read_bytes()
    with journal.open("a") as f:
        f.write('"extra-key"\t"extra-val"\n')
    with pytest.raises(tastypy.PersistentOrderedDictIntegrityError):
        my_pod.revert()
    journal.write_bytes(good)  # mended by hand, as the message says
    my_pod.close()

    path = tmp_path / "test-data-2"
    my_pod = tastypy.POD(path)
    my_pod.hold()
    for i in range(2 * FILE_SIZE):
        my_pod[str(i)] = i
    my_pod.sync()
    journal = next(path.glob("journal-*.jsonl"))
    good = journal.read_text()
    lines = good.split("\n")
    lines[500] = "bad format"
    journal.write_text("\n".join(lines))
    with pytest.raises(tastypy.PersistentOrderedDictIntegrityError):
        my_pod.revert()
    journal.write_text(good)
    my_pod.close()


def test_pod_auto_sync(tmp_path):
    path = tmp_path / "test-data"
    my_pod = tastypy.POD(path, clone=False)
    my_pod["a"] = 1
    assert "a" not in on_disk(path)
    for i in range(SYNC_AT):
        my_pod[str(i)] = i
    assert on_disk(path)["a"] == 1
    my_pod.close()


def test_pod_hold(tmp_path):
    path = tmp_path / "test-data"
    my_pod = tastypy.POD(path, clone=False)
    my_pod["a"] = 1

    my_pod.hold()
    for i in range(SYNC_AT):
        my_pod[str(i)] = i
    assert "a" not in on_disk(path)

    my_pod.sync()
    assert on_disk(path)["a"] == 1

    # Still held. 0.0.3 assigned the same values again; they are not changes
    # now and would not count toward sync_at (docs/compat.md): new values.
    my_pod["b"] = 2
    for i in range(SYNC_AT):
        my_pod[str(i)] = i + 1
    assert "b" not in on_disk(path)

    my_pod.unhold()
    assert on_disk(path)["b"] == 2

    my_pod["c"] = 3
    for i in range(SYNC_AT):
        my_pod[str(i)] = i + 2
    assert on_disk(path)["c"] == 3
    my_pod.close()


def test_pod_unchanged_values_do_not_count_toward_sync_at(tmp_path):
    """Where 0.0.3's test_hold differs: the same values again are no change."""
    path = tmp_path / "test-data"
    with tastypy.POD(path) as my_pod:
        my_pod.update((str(i), i) for i in range(SYNC_AT))
        my_pod.sync()
        my_pod["b"] = 2
        for i in range(SYNC_AT):
            my_pod[str(i)] = i
        assert "b" not in on_disk(path)
    assert on_disk(path)["b"] == 2  # written at close


def test_pod_iteration(tmp_path):
    num_lines = 20
    my_pod = tastypy.POD(tmp_path / "test-data", clone=False)
    my_pod.hold()
    for i in range(num_lines):
        my_pod[str(i)] = i
    my_pod.sync()

    assert list(my_pod) == [str(i) for i in range(num_lines)]
    assert list(my_pod.items()) == [(str(i), i) for i in range(num_lines)]
    assert list(my_pod.iteritems()) == [(str(i), i) for i in range(num_lines)]
    assert list(my_pod.keys()) == [str(i) for i in range(num_lines)]

    keys = list(my_pod.keys())
    keys.extend(["adding", "fake", "keys"])
    assert not any(["adding" in my_pod, "fake" in my_pod, "keys" in my_pod])
    assert len(my_pod) == num_lines
    assert list(my_pod.keys())[-1] == str(num_lines - 1)

    assert list(my_pod.values()) == list(range(num_lines))
    values = list(my_pod.values())
    values.extend([1, 2, 3])
    assert list(my_pod.values()) == list(range(num_lines))
    assert list(my_pod.values())[-1] == num_lines - 1
    my_pod.close()


def test_pod_in(tmp_path):
    my_pod = tastypy.POD(tmp_path / "test-data", clone=False)
    my_pod["a"] = 1
    assert "a" in my_pod
    assert "b" not in my_pod
    my_pod.close()


# -- TestTracker -------------------------------------------------------------------


def test_tracker_add(tmp_path):
    path = tmp_path / "test-data"
    my_tracker = tastypy.Tracker(path, clone=False)
    my_tracker.add("a")
    for i in range(SYNC_AT):
        my_tracker.add(str(i))
    assert my_tracker["a"] == DEFAULT_TRACKER_ITEM
    assert on_disk(path)["a"] == DEFAULT_TRACKER_ITEM

    with pytest.raises(tastypy.DuplicateKeyError):
        my_tracker.add("a")
    my_tracker.add_if_absent("a")

    assert not my_tracker.done("a")
    my_tracker.mark_done("a")
    assert my_tracker.done("a")
    my_tracker.mark_not_done("a")
    assert not my_tracker.done("a")

    assert my_tracker.should_do_add("a")
    assert my_tracker["a"] == DEFAULT_TRACKER_ITEM

    my_tracker.mark_done("a")
    assert not my_tracker.should_do_add("a")
    # tastypy records when (a field 0.0.3 did not have).
    assert type(my_tracker["a"].pop("_done_at")) is float
    assert my_tracker["a"] == {"_tries": 0, "_aborted": False, "_done": True}

    assert my_tracker.should_do_add("b")
    assert my_tracker["b"] == DEFAULT_TRACKER_ITEM

    assert my_tracker.tries("a") == 0
    my_tracker.increment_tries("a")
    assert my_tracker.tries("a") == 1
    my_tracker.increment_tries("a")
    assert my_tracker.tries("a") == 2
    my_tracker.decrement_tries("a")
    assert my_tracker.tries("a") == 1
    my_tracker.reset_tries("a")
    assert my_tracker.tries("a") == 0

    my_tracker["a"]["b"] = "c"
    assert my_tracker["a"] == {"b": "c", "_tries": 0, "_done": True, "_aborted": False}

    # 0.0.3 reset the (zero) tries of SYNC_AT keys to reach a sync: no
    # change now (docs/compat.md); counting one try each is.
    for i in range(SYNC_AT):
        my_tracker.increment_tries(str(i))
    assert on_disk(path)["a"] == {"b": "c", "_tries": 0, "_done": True, "_aborted": False}
    my_tracker.close()


def test_tracker_update(tmp_path):
    path = tmp_path / "test-data"
    my_tracker = tastypy.Tracker(path, clone=False)
    my_tracker.add("a")
    my_tracker["a"]["foo"] = 1
    my_tracker.update(
        {"a": {"foo": 2, "bar": [3], "beep": "x"}, "b": {"_tries": 1, "fizz": "baz"}},
        (("a", {"beep": "xx", "boo": 42}),),
        c={"bam": [89]},
    )
    my_tracker.sync()
    entries = on_disk(path)
    assert entries["a"] == {
        "_tries": 0,
        "_aborted": False,
        "_done": False,
        "foo": 2,
        "bar": [3],
        "beep": "xx",
        "boo": 42,
    }
    assert entries["b"] == {"_tries": 1, "_aborted": False, "_done": False, "fizz": "baz"}
    assert entries["c"] == {"_tries": 0, "_aborted": False, "_done": False, "bam": [89]}
    my_tracker.close()


def test_tracker_done_tried(tmp_path):
    my_tracker = tastypy.Tracker(tmp_path / "test-data", clone=False)
    my_tracker.add("a")
    my_tracker.add("b")

    assert my_tracker.num_tried() == 0
    my_tracker.increment_tries("a")
    assert my_tracker.num_tried() == 1
    my_tracker.add_if_absent("b")
    my_tracker.increment_tries("b")
    assert my_tracker.num_tried() == 2
    my_tracker.increment_tries("a")
    assert my_tracker.num_tried() == 2
    my_tracker.sync()

    assert my_tracker.num_tried() == 2
    assert my_tracker.fraction_tried() == 1.0
    assert my_tracker.percent_tried() == "100.00 %"
    my_tracker.reset_tries("b")
    assert my_tracker.fraction_tried() == 0.5
    assert my_tracker.percent_tried() == "50.00 %"

    assert my_tracker.num_done() == 0
    assert my_tracker.fraction_done() == 0.0
    assert my_tracker.percent_done() == "0.00 %"
    my_tracker.mark_done("a")
    assert my_tracker.num_done() == 1
    assert my_tracker.fraction_done() == 0.5
    assert my_tracker.percent_done() == "50.00 %"
    my_tracker.mark_done("b")
    assert my_tracker.num_done() == 2
    assert my_tracker.fraction_done() == 1.0
    assert my_tracker.percent_done() == "100.00 %"
    my_tracker.close()


# -- TestSharedPOD -------------------------------------------------------------------


def test_shared_pod_basic_functions(tmp_path):
    path = tmp_path / "test-data"
    my_pod = tastypy.SharedPersistentOrderedDict(path)
    my_pod.set["a"] = 1
    my_pod.close()
    assert on_disk(path)["a"] == 1

    my_pod = tastypy.SharedPersistentOrderedDict(path)
    my_pod.hold()
    my_pod.set["b"] = 2
    for i in range(SYNC_AT):
        my_pod.set[i] = i
    assert "b" not in on_disk(path)

    my_pod.unhold()
    assert on_disk(path)["b"] == 2

    # 0.0.3 assigned the same values again: new ones (see test_pod_hold).
    my_pod.set["c"] = 3
    for i in range(SYNC_AT):
        my_pod.set[i] = i + 1
    assert on_disk(path)["c"] == 3
    my_pod.close()


def test_shared_pod_deep_assignment(tmp_path):
    path = tmp_path / "test-data"
    my_pod = tastypy.SharedPersistentOrderedDict(path)
    my_pod["a"] = {"int": 1, "list": [], "dict": {"a": 1}}
    my_pod.sync()
    assert on_disk(path)["a"] == {"int": 1, "list": [], "dict": {"a": 1}}

    my_pod.set["a"]["list"].append(2)
    my_pod.set["a"]["dict"]["b"] = 4
    my_pod.set["a"]["int"] += 1
    my_pod.sync()
    assert on_disk(path)["a"] == {"int": 2, "list": [2], "dict": {"a": 1, "b": 4}}

    del my_pod.set["a"]["int"]
    my_pod.set["a"]["list"].append(5)
    my_pod.set["a"]["dict"].update({"c": 6})
    my_pod.sync()
    assert on_disk(path)["a"] == {"list": [2, 5], "dict": {"a": 1, "b": 4, "c": 6}}
    my_pod.close()


# 0.0.3 handed one SharedPOD to two forked children; each opens the path now.
CONCURRENT_WRITE = """
import sys
import tastypy

kind, path = sys.argv[1], sys.argv[2]
if kind == "pod":
    my_pod = tastypy.SharedPersistentOrderedDict(path)
    for i in range(200):
        with my_pod.locked():
            my_pod.set["a"] += 1
    my_pod.close()
else:
    tracker = tastypy.SharedProgressTracker(path)
    for i in range(200):
        # 0.0.3's server serialized every call; a read-modify-write of
        # processes that each open the tracker takes locked().
        with tracker.locked():
            tracker.increment_tries("yo")
    tracker.close()
print("ok", flush=True)
"""


def run_children(code, *args, n=2):
    procs = [spawn_python(code, *args) for _ in range(n)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err


def test_shared_pod_concurrent_write(tmp_path):
    path = tmp_path / "test-data"
    my_pod = tastypy.SharedPersistentOrderedDict(path)
    my_pod.set["a"] = 0
    my_pod.sync()
    run_children(CONCURRENT_WRITE, "pod", path)
    my_pod.refresh()  # 0.0.3's server held the children's writes; read them
    assert my_pod["a"] == 400
    my_pod.close()


# As 0.0.3 ran it: one shared object, opened before the fork, handed to two
# forked children (multiprocessing.Process), each adding 1 two hundred times.
FORKED_WRITE = """
import sys, multiprocessing
import tastypy

kind, path = sys.argv[1], sys.argv[2]
if kind == "pod":
    shared = tastypy.SharedPersistentOrderedDict(path)
    shared.set["a"] = 0
else:
    shared = tastypy.SharedProgressTracker(path)
    shared.add("yo")

def add():
    for i in range(200):
        with shared.locked():
            if kind == "pod":
                shared.set["a"] += 1
            else:
                shared.increment_tries("yo")

ctx = multiprocessing.get_context("fork")
procs = [ctx.Process(target=add) for _ in range(2)]
for p in procs:
    p.start()
for p in procs:
    p.join()
shared.refresh()  # 0.0.3's server held the children's writes; read them
print(shared["a"] if kind == "pod" else shared.tries("yo"), [p.exitcode for p in procs])
shared.close()
"""


@pytest.mark.parametrize("kind", ["pod", "tracker"])
def test_shared_object_concurrent_write_in_forked_children(tmp_path, kind):
    result = run_python(FORKED_WRITE, kind, tmp_path / "test-data", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["400", "[0,", "0]"]
    assert on_disk(tmp_path / "test-data") == (
        {"a": 400} if kind == "pod" else {"yo": {**DEFAULT_TRACKER_ITEM, "_tries": 400}}
    )


def test_shared_pod_iteration(tmp_path):
    my_pod = tastypy.SharedPersistentOrderedDict(tmp_path / "test-data")
    my_pod.hold()
    for i in range(2 * FILE_SIZE):
        my_pod[str(i)] = i
    my_pod.unhold()

    expected_values = list(range(2 * FILE_SIZE))
    expected_keys = [str(i) for i in expected_values]
    expected_items = list(zip(expected_keys, expected_values))
    assert list(my_pod.values()) == expected_values
    assert list(my_pod.keys()) == expected_keys
    assert list(my_pod.items()) == expected_items
    assert list(my_pod.iteritems()) == expected_items
    assert list(my_pod) == expected_keys
    my_pod.close()


# Inside locked(), ten insertions with random pauses, each stamped with the time.
HOLD = """
import os, random, sys, time
import tastypy

kind, path, name, ready, go = sys.argv[1:6]
def start():  # both start together (0.0.3's forked children did)
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
if kind == "pod":
    my_pod = tastypy.SharedPersistentOrderedDict(path)
    start()
    with my_pod.locked():
        for i in range(10):
            time.sleep(random.random() / 100.0)
            my_pod["%s:%d" % (name, i)] = time.time()
    my_pod.close()
else:
    tracker = tastypy.SharedProgressTracker(path)
    start()
    with tracker.locked():
        for i in range(10):
            time.sleep(random.random() / 100.0)
            key = "%s:%d" % (name, i)
            tracker.add(key)
            tracker.set[key]["time"] = time.time()
    tracker.close()
print("ok", flush=True)
"""


def run_holders(path, kind):
    base = path.parent
    procs = [spawn_python(HOLD, kind, path, name, base / name, base / "go") for name in "AB"]
    while not all((base / name).exists() for name in "AB"):
        assert all(proc.poll() is None for proc in procs), procs[0].communicate()
        time.sleep(0.005)
    (base / "go").touch()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err


def done_sequentially(p1_times, p2_times) -> bool:
    return max(p1_times) <= min(p2_times) or max(p2_times) <= min(p1_times)


def test_shared_pod_hold(tmp_path):
    path = tmp_path / "test-data"
    tastypy.SharedPersistentOrderedDict(path).close()
    run_holders(path, "pod")
    with tastypy.SharedPersistentOrderedDict(path) as my_pod:
        p1_times = [my_pod["A:" + str(i)] for i in range(10)]
        p2_times = [my_pod["B:" + str(i)] for i in range(10)]
    assert done_sequentially(p1_times, p2_times)


# -- TestSharedTracker ---------------------------------------------------------------


def test_shared_tracker_basic_function(tmp_path):
    path = tmp_path / "test-data"
    my_tracker = tastypy.SharedProgressTracker(path)
    my_tracker.add("a")
    my_tracker.close()
    assert on_disk(path)["a"] == DEFAULT_TRACKER_ITEM

    path = tmp_path / "test-data-2"
    my_tracker = tastypy.SharedProgressTracker(path)
    my_tracker.hold()
    my_tracker.add("a")
    for i in range(SYNC_AT):
        my_tracker.add(i)
    assert "a" not in on_disk(path)

    my_tracker.unhold()
    assert on_disk(path)["a"] == DEFAULT_TRACKER_ITEM

    my_tracker.increment_tries("a")
    my_tracker.sync()
    assert on_disk(path)["a"]["_tries"] == 1

    my_tracker.decrement_tries("a")
    my_tracker.sync()
    assert on_disk(path)["a"]["_tries"] == 0

    my_tracker.mark_done("a")
    my_tracker.sync()
    assert on_disk(path)["a"]["_done"]

    my_tracker.mark_not_done("a")
    my_tracker.sync()
    assert not on_disk(path)["a"]["_done"]
    my_tracker.close()


def test_shared_tracker_fraction(tmp_path):
    my_tracker = tastypy.SharedProgressTracker(tmp_path / "test-data")
    my_tracker.add("a")
    my_tracker.mark_done("a")
    my_tracker.add("b")
    my_tracker.mark_done("b")
    my_tracker.increment_tries("b")
    my_tracker.add("c")
    my_tracker.sync()

    assert my_tracker.num_done() == 2
    assert my_tracker.fraction_done() == 2 / 3.0
    assert my_tracker.percent_done() == "%.2f %%" % (200 / 3.0)
    assert my_tracker.num_tried() == 1
    assert my_tracker.fraction_tried() == 1 / 3.0
    assert my_tracker.percent_tried() == "%.2f %%" % (100 / 3.0)
    my_tracker.close()


def test_shared_tracker_iteration(tmp_path):
    my_tracker = tastypy.SharedProgressTracker(tmp_path / "test-data")
    my_tracker.hold()
    for i in range(20):
        my_tracker.add(str(i))
    my_tracker.unhold()

    expected_keys = [str(i) for i in range(20)]
    expected_values = [DEFAULT_TRACKER_ITEM for _ in expected_keys]
    expected_items = list(zip(expected_keys, expected_values))
    assert list(my_tracker.values()) == expected_values
    assert list(my_tracker.keys()) == expected_keys
    assert list(my_tracker.items()) == expected_items
    assert list(my_tracker.iteritems()) == expected_items
    assert list(my_tracker) == expected_keys
    my_tracker.close()


def test_shared_tracker_special_iteration(tmp_path):
    tracker = tastypy.SharedProgressTracker(tmp_path / "test-data", max_tries=2)
    tracker.add_many(["a", "b", "c", "d"])
    tracker.abort("a")  # aborted: not yielded
    tracker.increment_tries("b")  # one try of two: yielded
    tracker.increment_tries("c")
    tracker.increment_tries("c")  # two tries: not yielded
    tracker.mark_done("d")  # done: not yielded
    assert list(tracker.todo_items()) == [("b", {"_tries": 1, "_done": False, "_aborted": False})]
    tracker.close()


def test_shared_tracker_concurrent_write(tmp_path):
    path = tmp_path / "test-data"
    tracker = tastypy.SharedProgressTracker(path)
    tracker.add("yo")
    tracker.sync()
    run_children(CONCURRENT_WRITE, "tracker", path)
    tracker.refresh()
    assert tracker.tries("yo") == 400
    tracker.close()


def test_shared_tracker_hold(tmp_path):
    path = tmp_path / "test-data"
    tastypy.SharedProgressTracker(path).close()
    run_holders(path, "tracker")
    with tastypy.SharedProgressTracker(path) as tracker:
        p1_times = [tracker["A:" + str(i)]["time"] for i in range(10)]
        p2_times = [tracker["B:" + str(i)]["time"] for i in range(10)]
    assert done_sequentially(p1_times, p2_times)
