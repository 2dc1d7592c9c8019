"""clone=True (the default, as in tastypy 0.0.3): handles opened on one path in
one process share one in-memory state; clone=False opens an independent one."""

from __future__ import annotations

import gc
import os

import pytest
from conftest import run_python

import tastypy
from tastypy import POD, Tracker


def on_disk(path) -> dict:
    """What another process reads now."""
    with POD(path, clone=False) as reader:
        return reader.to_dict()


def test_a_pod_opened_again_shows_the_last_change_before_any_sync(tmp_path):
    # The notebook case: the cell that opened the POD is run again.
    path = tmp_path / "p"
    pod = POD(path)
    pod["x"] = 1
    first = pod
    pod = POD(path)
    assert "x" in pod and pod["x"] == 1
    assert on_disk(path) == {}  # shared through memory, not through the files
    pod["y"] = {"n": 1}
    first["y"]["n"] = 2  # a change in place through the other handle
    assert pod["y"] == {"n": 2}
    first.close()
    pod.close()
    assert on_disk(path) == {"x": 1, "y": {"n": 2}}


def test_a_tracker_opened_again_knows_what_the_first_marked(tmp_path):
    path = tmp_path / "t"
    tracker = Tracker(path, sync_at=10**6)
    assert tracker.try_it("a")
    tracker.mark_done("a")
    again = Tracker(path)
    assert again.done("a") and again.num_done() == 1
    assert not again.try_it("a")
    tracker.close()
    again.close()


def test_the_same_directory_by_another_spelling_is_the_same_state(tmp_path):
    path = tmp_path / "p"
    pod = POD(path)
    pod["k"] = 1
    os.symlink(path, tmp_path / "link")
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert POD("link")["k"] == 1
        assert POD("./p/")["k"] == 1
    finally:
        os.chdir(old)
    pod.close()


def test_clone_false_gives_an_independent_handle(tmp_path):
    path = tmp_path / "p"
    with POD(path) as a, POD(path, clone=False) as b:
        a["x"] = 1
        assert "x" not in b
        a.sync()
        assert "x" not in b
        b.refresh()
        assert b["x"] == 1
        b["y"] = 2
        assert "y" not in a
    # A POD opened with clone=False is not handed to later clone=True opens.
    with POD(path, clone=False) as lone:
        lone["z"] = 3
        with POD(path) as shared:
            assert "z" not in shared


def test_a_pod_and_a_tracker_are_never_one_state(tmp_path):
    with POD(tmp_path / "p") as pod, pytest.raises(tastypy.KindMismatchError):
        Tracker(pod.path)


def test_closing_one_handle_leaves_the_others_open(tmp_path):
    path = tmp_path / "p"
    a = POD(path, sync_at=10**6)
    b = POD(path, sync_at=10**6)
    a["x"] = 1
    b.close()  # writes what the state holds; a goes on
    assert b.closed and not a.closed
    assert on_disk(path) == {"x": 1}
    with pytest.raises(tastypy.CalledClosedTrackerError):
        b["y"] = 2
    assert b["x"] == 1  # reads of a closed handle still work, as before
    a["y"] = 2
    a.close()
    assert on_disk(path) == {"x": 1, "y": 2}
    # Opened again after every handle closed: a fresh state, from the disk.
    with POD(path) as c:
        assert c.to_dict() == {"x": 1, "y": 2}


def test_each_handle_holds_and_counts_sync_at_on_its_own(tmp_path):
    path = tmp_path / "p"
    held = POD(path, sync_at=2)
    eager = POD(path, sync_at=2)
    held.hold()
    held["a"] = 1
    held["b"] = 2
    held["c"] = 3
    assert on_disk(path) == {}  # held: this handle does not sync
    eager["d"] = 4  # the other handle syncs the shared state at its sync_at
    assert on_disk(path) == {"a": 1, "b": 2, "c": 3, "d": 4}
    held.close()
    eager.close()


def test_opening_again_with_other_storage_options_is_refused(tmp_path):
    path = tmp_path / "p"
    with POD(path, lock="posix") as pod:
        pod["k"] = 1
        with pytest.raises(tastypy.InvalidArgumentError, match="clone=False"):
            POD(path, gzipped=True)
        with pytest.raises(tastypy.InvalidArgumentError, match="lock_timeout"):
            POD(path, lock_timeout=3)
        with pytest.raises(tastypy.InvalidArgumentError, match="lock='soft'"):
            POD(path, lock="soft")
        # The lock it runs, or "auto", is the same lock: shared.
        assert POD(path, lock="auto")["k"] == 1
        assert POD(path, lock="posix")["k"] == 1


def test_each_tracker_handle_keeps_its_own_settings(tmp_path):
    path = tmp_path / "t"
    with Tracker(path, max_tries=1) as one, Tracker(path) as same:
        assert same.max_tries == 1  # the stored setting
        same.max_tries = 5  # for this handle only, as for any tracker object
        assert one.max_tries == 1
        assert one.try_it("a")
        one.release("a", tried=True)
        assert not one.try_it("a")  # out of tries for this handle
        assert same.try_it("a")  # this handle allows five


DESCRIPTORS = """
import gc, os, resource, sys, time
import tastypy

path = sys.argv[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
before = len(os.listdir("/proc/self/fd"))
pods = [tastypy.POD(path + "/pod") for _ in range(1000)]
trackers = [tastypy.Tracker(path + "/tracker") for _ in range(1000)]
pods[500]["x"] = 1
pods[0].sync()
assert trackers[10].try_it("a")
trackers[999].mark_done("a")
trackers[0].sync()
assert all(p["x"] == 1 for p in pods) and all(t.done("a") for t in trackers)
during = len(os.listdir("/proc/self/fd"))
del pods, trackers
gc.collect()
# The heartbeat thread may be in a round, holding the trackers for a moment.
for _ in range(300):
    after = len(os.listdir("/proc/self/fd"))
    if after == before:
        break
    time.sleep(0.01)
    gc.collect()
print(before, during, after)
"""


def test_a_thousand_live_handles_on_one_path_use_one_set_of_descriptors(tmp_path):
    result = run_python(DESCRIPTORS, tmp_path)
    assert result.returncode == 0, result.stderr
    before, during, after = map(int, result.stdout.split())
    assert during - before <= 10, (before, during)
    assert after == before, "the last handle collected gives the descriptors back"
    with POD(tmp_path / "pod", clone=False) as pod, Tracker(tmp_path / "tracker") as tracker:
        assert pod["x"] == 1 and tracker.done("a")


def test_two_threads_opening_one_path_at_once_get_one_state(tmp_path):
    import threading

    path = tmp_path / "p"
    got: list = []
    start = threading.Barrier(8)

    def open_it():
        start.wait()
        got.append(POD(path))

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got[3]["k"] = "v"
    assert all(pod.get("k") == "v" for pod in got)
    for pod in got:
        pod.close()


def test_convert_to_tracker_closes_the_other_handles_on_the_state(tmp_path):
    path = tmp_path / "p"
    pod = POD(path)
    again = POD(path)
    pod["a"] = 1
    tracker = again.convert_to_tracker()
    assert again.closed and pod.closed
    with pytest.raises(tastypy.CalledClosedTrackerError):
        pod["b"] = 2  # would write a POD value into a tracker's directory
    assert tracker["a"]["val"] == 1 and not tracker.done("a")
    tracker.close()
    with Tracker(path, clone=False) as reader:
        assert list(reader) == ["a"]


def test_two_parted_trackers_on_one_path_share_each_parts_state(tmp_path):
    path = tmp_path / "big"
    first = Tracker(path, shards=4)
    first.add_many([f"t{i}" for i in range(20)])
    second = Tracker(path, sync_at=10**6)
    assert first.try_it("t3")
    first.mark_done("t3")
    assert second.done("t3") and not second.try_it("t3")
    with Tracker(path, clone=False) as lone:
        # The independent handle sees only what was written.
        assert lone.tries("t3") == 1
    second.close()
    first.close()
    with Tracker(path) as reopened:
        assert reopened.done("t3")


def test_rebinding_the_name_drops_the_old_handle_and_keeps_the_state(tmp_path):
    # As a notebook cell run twice does: the old object is dropped once the
    # new one, on its state, is bound.
    path = tmp_path / "p"
    pod = POD(path, sync_at=10**6)
    pod["x"] = 1
    pod = POD(path, sync_at=10**6)
    gc.collect()
    assert pod["x"] == 1 and len(pod._handles) == 1
    assert on_disk(path) == {}  # the dropped handle left the state to this one
    tracker = Tracker(tmp_path / "t", sync_at=10**6)
    assert tracker.try_it("a")
    tracker = Tracker(tmp_path / "t", sync_at=10**6)
    gc.collect()
    # The dropped handle ended its own lease of a, as a closed one does.
    assert tracker.tries("a") == 1 and "_holder" not in tracker["a"]
    pod.close()
    tracker.close()
    assert on_disk(path) == {"x": 1}
