"""The names of tastypy 0.0.3 that old code imports and calls, kept working
(see ``docs/compat.md``)."""

from __future__ import annotations

import pytest
from conftest import spawn_python

import tastypy
import tastypy.exceptions

# 0.0.3's way to share one tracker between processes, as its manual wrote it.
SHARED_WORKER = """
import sys
import tastypy
import tastypy.exceptions

tracker = tastypy.SharedTracker(sys.argv[1], 3)
pod = tastypy.SharedPOD(sys.argv[2])
for _ in range(50):
    with tracker.locked():
        tracker.increment_tries("k")
    with pod.locked():
        pod.set["n"] += 1
tracker.close()
pod.close()
print("ok", flush=True)
"""


def test_shared_names_are_the_classes_and_share_across_processes(tmp_path):
    assert tastypy.SharedTracker is tastypy.SharedProgressTracker is tastypy.Tracker
    assert tastypy.SharedPOD is tastypy.SharedPersistentOrderedDict is tastypy.POD
    with tastypy.SharedTracker(tmp_path / "t", 3) as tracker:
        tracker.add("k")
    with tastypy.SharedPOD(tmp_path / "p") as pod:
        pod["n"] = 0
    procs = [spawn_python(SHARED_WORKER, tmp_path / "t", tmp_path / "p") for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err
    with tastypy.SharedTracker(tmp_path / "t", 3) as tracker:
        assert tracker.tries("k") == 150
    with tastypy.SharedPOD(tmp_path / "p") as pod:
        assert pod["n"] == 150


def test_update_takes_several_mappings_the_right_ones_winning(tmp_path):
    with tastypy.POD(tmp_path / "p") as pod:
        pod.update({"a": 1, "b": 1}, [("b", 2), ("c", 2)], {"c": 3}, d=4)
        assert pod.to_dict() == {"a": 1, "b": 2, "c": 3, "d": 4}
    with tastypy.Tracker(tmp_path / "t") as tracker:
        tracker.add("x")
        tracker.increment_tries("x")
        tracker.update({"x": {"n": 1}, "y": {"n": 1}}, [("x", {"m": 2})], y={"_done": True})
        assert tracker["x"] == {"_done": False, "_tries": 1, "_aborted": False, "n": 1, "m": 2}
        assert tracker.done("y") and tracker["y"]["n"] == 1 and tracker.num_done() == 1
    with tastypy.Tracker(tmp_path / "t") as again:  # and on disk
        assert again["x"]["m"] == 2 and again["x"]["n"] == 1 and again.done("y")


def test_convert_to_tracker_rewrites_every_value_as_0_0_3_did(tmp_path):
    path = tmp_path / "p"
    pod = tastypy.POD(path)
    pod.update(a={"url": "u", "_done": True, "_tries": 4}, b=7, c=[1, 2])
    other = tastypy.POD(path, clone=False)  # an independent handle, as another process holds
    tracker = pod.convert_to_tracker(2)
    assert pod.closed and isinstance(tracker, tastypy.Tracker) and tracker.max_tries == 2
    assert tracker["a"] == {"url": "u", "_done": False, "_tries": 0, "_aborted": False}
    assert tracker["b"] == {"val": 7, "_done": False, "_tries": 0, "_aborted": False}
    assert tracker["c"]["val"] == [1, 2] and tracker.num_done() == 0
    tracker.mark_done("b")
    tracker.close()
    with tastypy.Tracker(path) as reopened:
        assert list(reopened) == ["a", "b", "c"] and reopened.done("b")
        assert reopened.convert_to_tracker() is reopened
    with pytest.raises(tastypy.KindMismatchError, match="Tracker"):
        tastypy.POD(path)
    other["d"] = 1
    with pytest.raises(tastypy.KindMismatchError):
        other.sync()  # the other handle cannot write a POD's records there


def test_convert_to_tracker_checks_everything_before_changing_anything(tmp_path):
    path = tmp_path / "p"
    with tastypy.POD(path) as pod:
        pod.update(a=1, b={"_aborted": "yes"})
        with pytest.raises(tastypy.InvalidValueError, match="_aborted"):
            pod.convert_to_tracker()
        assert not pod.closed and pod["a"] == 1
    with tastypy.POD(path) as pod:  # still a POD, unchanged
        assert pod.to_dict() == {"a": 1, "b": {"_aborted": "yes"}}


def test_0_0_3_modules_and_constants(tmp_path):
    from tastypy import exceptions, persistent_ordered_dict, progress_tracker
    from tastypy import shared_progress_tracker as spt

    assert persistent_ordered_dict.POD is persistent_ordered_dict.PersistentOrderedDict
    assert persistent_ordered_dict.POD is tastypy.POD
    assert progress_tracker.ProgressTracker is progress_tracker.Tracker is tastypy.Tracker
    assert dict(progress_tracker.DEFAULT_PROGRESS_TRACKER_MAPPING) == {
        "_tries": 0,
        "_done": False,
        "_aborted": False,
    }
    assert spt.SharedTracker is spt.SharedProgressTracker is tastypy.Tracker
    assert spt.SharedPOD is spt.SharedPersistentOrderedDict is tastypy.POD
    assert tastypy.DEFAULT_FILE_SIZE == persistent_ordered_dict.DEFAULT_FILE_SIZE == 1000
    assert tastypy.DEFAULT_SYNC_AT == persistent_ordered_dict.DEFAULT_SYNC_AT == 1000
    with tastypy.POD(tmp_path / "p") as pod:
        assert pod.sync_at == tastypy.DEFAULT_SYNC_AT
    assert exceptions.CalledClosedTrackerError is tastypy.CalledClosedTrackerError
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.PersistentOrderedDictException)


def test_a_closed_tracker_raises_both_the_old_and_the_new_name(tmp_path):
    tracker = tastypy.Tracker(tmp_path / "t")
    tracker.add("k")
    tracker.close()
    for error in (tastypy.CalledClosedTrackerError, tastypy.PersistentOrderedDictException):
        with pytest.raises(error, match="closed"):
            tracker.mark_done("k")


def test_a_corrupt_file_is_caught_by_the_old_and_the_new_except(tmp_path):
    path = tmp_path / "p"
    with tastypy.POD(path) as pod:
        pod["a"] = 1
        pod.sync()
        pod["b"] = 2
    journal = next(path.glob("journal-*.jsonl"))
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[0] = b'["a",1 oops\n'
    journal.write_bytes(b"".join(lines))
    for error in (
        tastypy.CorruptFileError,
        tastypy.PersistentOrderedDictIntegrityError,
        tastypy.exceptions.PersistentOrderedDictIntegrityError,
        ValueError,
    ):
        with pytest.raises(error, match="tastypy repair"):
            tastypy.POD(path)


def test_a_bad_key_is_a_type_error_and_a_value_error(tmp_path):
    with tastypy.POD(tmp_path / "p") as pod:
        for error in (tastypy.InvalidKeyError, TypeError, ValueError):
            with pytest.raises(error):
                pod[1.5] = 1
        assert len(pod) == 0
