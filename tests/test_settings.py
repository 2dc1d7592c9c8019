"""``max_tries`` and the lease are stored with the tracker (``tracker.json``):
a process opening it without them judges tasks as the job does."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import run_python

import tastypy
from tastypy import CorruptFileError, InvalidArgumentError, Tracker
from tastypy.tracker import DEFAULT_LEASE


def stored(path) -> dict:
    return json.loads((path / "tracker.json").read_text())


def test_settings_given_once_are_used_by_every_later_opening(tmp_path):
    path = tmp_path / "t"
    with Tracker(path, max_tries=2, lease=30) as tracker:
        for task in tracker.attempts(["a", "b"]):
            with task:
                if task.key == "b":
                    raise ValueError("no")
        for task in tracker.attempts(["b"]):
            with task:
                raise ValueError("no again")
    assert stored(path) == {
        "format": "tastypy-tracker-settings",
        "version": 1,
        "max_tries": 2,
        "lease": 30.0,
    }
    # Another process, opening it without them: b is failed, not to do.
    out = run_python(
        "import sys, tastypy\n"
        "t = tastypy.Tracker(sys.argv[1])\n"
        "print(t.max_tries, t.lease, t.stats()['failed'], list(t.todo_keys()))",
        path,
    )
    assert out.stdout.split() == ["2", "30.0", "1", "[]"], out.stderr
    assert tastypy.check(path).ok and not tastypy.check(path).notes  # a file of ours


def test_a_new_value_is_stored_and_logged(tmp_path, caplog):
    path = tmp_path / "t"
    Tracker(path, max_tries=3).close()
    with caplog.at_level(logging.INFO, logger="tastypy"):
        Tracker(path, max_tries=3).close()  # the same: nothing to say
        assert not caplog.records
        with Tracker(path, max_tries=5) as tracker:
            assert tracker.max_tries == 5 and tracker.lease == DEFAULT_LEASE
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert (
        "max_tries of the tracker" in record.getMessage() and "from 3 to 5" in record.getMessage()
    )
    assert stored(path)["max_tries"] == 5 and "lease" not in stored(path)
    # 0 is a value (no limit), stored too; None is "as stored".
    Tracker(path, max_tries=0).close()
    with Tracker(path, max_tries=None) as tracker:
        assert tracker.max_tries == 0


def test_setting_it_on_an_open_tracker_changes_that_object_only(tmp_path):
    path = tmp_path / "t"
    with Tracker(path, max_tries=3) as tracker:
        tracker.max_tries = 1
        tracker.lease = 5
        assert (tracker.max_tries, tracker.lease) == (1, 5.0)
    assert stored(path)["max_tries"] == 3


def test_a_tracker_without_stored_settings_opens_with_the_defaults_and_writes_none(tmp_path):
    path = tmp_path / "t"
    with Tracker(path) as tracker:
        tracker.add("a")
        assert (tracker.max_tries, tracker.lease) == (0, DEFAULT_LEASE)
    assert not (path / "tracker.json").exists()  # opening to look changes nothing


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"{not json", "is not a tastypy tracker's settings file"),
        (b'{"format": "tastypy-tracker-settings", "max_tries": -1}', "max_tries=-1"),
        (b'{"format": "tastypy-tracker-settings", "lease": "long"}', "lease='long'"),
    ],
)
def test_a_damaged_settings_file_is_a_clear_error(tmp_path, content, problem):
    path = tmp_path / "t"
    Tracker(path, max_tries=2).close()
    (path / "tracker.json").write_bytes(content)
    with pytest.raises(CorruptFileError, match="tracker.json") as caught:
        Tracker(path)
    assert problem in str(caught.value)
    assert (path / "tracker.json").read_bytes() == content  # nothing lost


def test_bad_settings_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InvalidArgumentError, match="max_tries"):
        Tracker(tmp_path / "t", max_tries=-1)
    with pytest.raises(InvalidArgumentError, match="lease"):
        Tracker(tmp_path / "t", lease=0)
    assert not (tmp_path / "t").exists()


def test_a_parted_tracker_stores_them_once_at_its_top(tmp_path):
    path = tmp_path / "t"
    with Tracker(path, shards=4, max_tries=2, lease=60) as tracker:
        tracker.add_many(range(100))
        for key in tracker.claim(10):
            tracker.mark_done(key)
    assert stored(path)["max_tries"] == 2 and stored(path)["lease"] == 60.0
    assert not list(path.glob("part-*/tracker.json"))
    with Tracker(path) as tracker:
        assert (tracker.max_tries, tracker.lease) == (2, 60.0)
        assert tracker.stats()["done"] == 10
