"""A task's own files: ``tracker.storage(key)`` and ``tracker.paths(key)``.

Directories named safely from any key (no way out of the tracker's
``tasks/`` directory, two keys never one directory, even on a filesystem
that ignores case), made once when several processes ask at once, and the
same for a tracker in parts.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import run_python, spawn_python
from hypothesis import given, settings
from hypothesis import strategies as st

from tastypy import InvalidKeyError, StorageError, Tracker
from tastypy.storage import taskfiles

HOSTILE = [
    "../escape",
    "../../etc/passwd",
    "/absolute/path",
    "a/b",
    "a\\b",
    "..",
    ".",
    "",
    "nul\x00byte",
    "CON",
    "con",
    "NUL.txt",
    "COM1",
    "LPT9.log",
    "trailing dot.",
    "trailing space ",
    "x" * 5000,
    "Case",
    "case",
    "CASE",
    "ключ",
    "鍵",
    "emoji 🎉",
    "e\u0301",  # e and a combining accent
    "\u00e9",  # é precomposed: another key, another directory
    "-rf",
    ".hidden",
    ("a", "b"),
    "a_b",
    ("a", ("b", 1)),
    1,
    "1",
    -5,
]


def _inside(child: str, parent: str) -> bool:
    child, parent = os.path.realpath(child), os.path.realpath(parent)
    return os.path.commonpath([child, parent]) == parent and child != parent


def test_storage_is_a_directory_of_the_task_inside_the_tracker(tmp_path):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        path = tracker.storage("page-7")
        assert path.is_dir() and path.name == "storage"
        assert path.parent.parent == tmp_path / "jobs.tracker" / "tasks"
        assert path.parent.name.startswith("page-7-")
        (path / "page.html").write_text("<html>")
        assert tracker.storage("page-7") == path  # the same directory again
        record = json.loads((path.parent / "key.json").read_text())
        assert record == {"format": "tastypy-task", "version": 1, "key": "page-7"}
    # Reopened, and in another process: the same directory, the file still there.
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        assert (tracker.storage("page-7") / "page.html").read_text() == "<html>"
    out = run_python(
        """
        import sys
        from tastypy import Tracker
        with Tracker(sys.argv[1]) as t:
            print(t.storage("page-7"))
        """,
        tmp_path / "jobs.tracker",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(path)


def test_hostile_keys_stay_inside_and_never_share_a_directory(tmp_path):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        tasks = str(tmp_path / "jobs.tracker" / "tasks")
        made = {}
        for key in HOSTILE:
            storage = tracker.storage(key)
            base = storage.parent
            assert _inside(str(storage), tasks), key
            assert base.parent == tmp_path / "jobs.tracker" / "tasks", key
            name = base.name
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*[0-9a-f]", name), (key, name)
            assert len(name) <= 90, key
            made[key] = name
        # Distinct on a filesystem that ignores case, too.
        lowered = [name.lower() for name in made.values()]
        assert len(set(lowered)) == len(HOSTILE)
        assert sorted(os.listdir(tasks)) == sorted(made.values())
        # Nothing written anywhere but under tasks/.
        assert not (tmp_path / "escape").exists() and not (tmp_path / "absolute").exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=300), min_size=2, max_size=6, unique=True))
def test_any_text_keys_get_distinct_safe_names(keys):
    names = [taskfiles.dir_name(key) for key in keys]
    assert len({n.lower() for n in names}) == len(keys)
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name) and len(name) <= 90
        assert name not in (".", "..") and not name.startswith((".", "-"))


def test_a_key_the_tracker_cannot_hold_is_refused(tmp_path):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        for bad in (1.5, None, ["a"], b"x"):
            with pytest.raises(InvalidKeyError):
                tracker.storage(bad)
        assert not (tmp_path / "jobs.tracker" / "tasks").exists()


def test_a_directory_of_another_key_or_a_link_is_refused(tmp_path):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        base = tracker.storage("a").parent
        # Someone put another key's directory in its place.
        (base / "key.json").write_text(json.dumps({"format": "tastypy-task", "key": "b"}))
        with pytest.raises(StorageError, match="key.json naming"):
            tracker.storage("a")
        # A link planted where a task's directory would be is not followed.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        target = taskfiles.find(str(tmp_path / "jobs.tracker"), "c")
        os.symlink(elsewhere, target)
        with pytest.raises(OSError, match="symbolic link"):
            tracker.storage("c")
        assert os.listdir(elsewhere) == []
    with Tracker(tmp_path / "other.tracker") as tracker:
        os.symlink(elsewhere, tmp_path / "other.tracker" / "tasks")
        with pytest.raises(OSError, match="symbolic link"):
            tracker.storage("a")
        assert os.listdir(elsewhere) == []


def test_processes_making_one_directory_at_once_get_the_same_one(tmp_path):
    path = tmp_path / "jobs.tracker"
    Tracker(path).close()
    go = tmp_path / "go"
    code = """
        import os, sys, time
        from tastypy import Tracker
        t = Tracker(sys.argv[1])
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.001)
        for i in range(40):
            p = t.storage(f"shared-{i}")
            (p / f"from-{os.getpid()}").write_text("x")
        print(t.storage("shared-0"))
        t.close()
    """
    procs = [spawn_python(code, path, go) for _ in range(4)]
    go.write_text("")
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1
    tasks = path / "tasks"
    names = os.listdir(tasks)
    assert len(names) == 40 and not [n for n in names if ".tmp-" in n]
    for name in names:
        assert len(os.listdir(tasks / name / "storage")) == 4


def test_paths_lists_what_is_stored_without_making_anything(tmp_path):
    with Tracker(tmp_path / "jobs.tracker") as tracker:
        paths = tracker.paths("job")
        assert set(paths) == {"base", "storage", "logs", "log", "key"}
        assert paths["logs"] == [] and paths["log"] is None
        assert not paths["base"].exists()
        assert paths["storage"] == paths["base"] / "storage"
        for _ in range(3):
            with tracker.attempt("job", capture=True, reraise=False) as task:
                print("hello")
                raise RuntimeError("again")  # failed: the next attempt runs
        paths = tracker.paths("job")
        assert [p.name for p in paths["logs"]] == [
            "attempt-0001.log",
            "attempt-0002.log",
            "attempt-0003.log",
        ]
        assert paths["log"] == paths["logs"][-1] == task.log_path
        assert paths["key"].is_file() and paths["storage"] == tracker.storage("job")


def test_a_parted_tracker_keeps_task_files_under_its_top_directory(tmp_path):
    path = tmp_path / "big.tracker"
    with Tracker(path, shards=4) as tracker:
        tracker.add_many(f"k{i}" for i in range(20))
        storage = tracker.storage("k3")
        assert storage.parent.parent == path / "tasks"
        for task in tracker.attempts(["k3", "k7"], capture=True):
            with task:
                print(f"working on {task.key}")
        for key in ("k3", "k7"):
            log = tracker.paths(key)["log"]
            assert log.parent.parent.parent == path / "tasks"
            assert f"working on {key}" in log.read_text()
            assert tracker[key]["_log"] == str(log.relative_to(path))
        assert tracker.fetch("k9", str.upper, "nine") == "NINE"
        assert tracker.paths("k9")["log"].parent.parent.parent == path / "tasks"
