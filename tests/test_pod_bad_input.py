"""Bad input gets a clear error from tastypy.errors, and loses nothing."""

from __future__ import annotations

import gzip
import json
import os
import time
import pwd
import shutil
import tempfile

import pytest
from conftest import run_python

import tastypy
from tastypy import POD
from tastypy.errors import (
    CorruptFileError,
    FormatVersionError,
    InvalidArgumentError,
    LegacyFormatError,
    NotAPODError,
    StorageError,
    TastypyError,
)


def snapshot_of(directory) -> dict:
    """Every file under ``directory`` with its bytes."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


# -- wrong paths ----------------------------------------------------------------------


def test_a_file_where_the_directory_should_be(tmp_path):
    path = tmp_path / "my.pod"
    path.write_text("my notes")
    with pytest.raises(NotAPODError) as info:
        POD(path)
    assert isinstance(info.value, TastypyError)
    assert str(path) in str(info.value) and "is a file" in str(info.value)
    assert path.read_text() == "my notes"


def test_a_non_empty_directory_that_is_not_a_pod(tmp_path):
    path = tmp_path / "photos"
    path.mkdir()
    (path / "cat.jpg").write_bytes(b"\xff\xd8")
    (path / "notes.txt").write_text("hi")
    before = snapshot_of(path)
    with pytest.raises(NotAPODError) as info:
        POD(path)
    assert str(path) in str(info.value) and "cat.jpg" in str(info.value)
    assert "new or empty directory" in str(info.value)
    assert snapshot_of(path) == before  # not even a lock file was added


def test_an_empty_directory_becomes_a_pod(tmp_path):
    path = tmp_path / "empty"
    path.mkdir()
    with POD(path) as pod:
        pod["a"] = 1
    with POD(path) as pod:
        assert pod["a"] == 1


# -- damaged files -----------------------------------------------------------------------


def make_pod(path, batches):
    with POD(path) as pod:
        for batch in batches:
            pod.update(batch)
            pod.sync()
    return path / "journal-000000.jsonl"


def test_a_corrupt_line_in_the_middle_names_the_file_and_line_and_how_to_salvage(tmp_path):
    path = tmp_path / "p"
    journal = make_pod(path, [{"a": 1, "b": 2}, {"c": 3}, {"d": 4}])
    lines = journal.read_text().splitlines(keepends=True)
    assert lines[3] == '["c",3]\n'
    lines[3] = '["c",3 oops\n'
    journal.write_text("".join(lines))
    before = snapshot_of(path)
    with pytest.raises(CorruptFileError) as info:
        POD(path)
    message = str(info.value)
    assert str(journal) in message and "line 4" in message
    assert "tastypy repair" in message
    assert info.value.path == str(journal) and info.value.line == 4
    assert snapshot_of(path) == before  # refusing changed nothing


def test_a_line_that_is_json_but_not_a_record(tmp_path):
    path = tmp_path / "p"
    journal = make_pod(path, [{"a": 1}, {"b": 2}])
    text = journal.read_text().replace('["a",1]', '{"a":1}')
    journal.write_text(text)
    with pytest.raises(CorruptFileError, match=r"line 1 is not a record"):
        POD(path)


def test_a_torn_last_line_is_recovered_silently_and_the_rest_kept(tmp_path, caplog):
    path = tmp_path / "p"
    journal = make_pod(path, [{"a": 1}, {"b": [2]}])
    with open(journal, "ab") as f:
        f.write(b'["c",{"half":')
    with POD(path) as pod:
        assert dict(pod) == {"a": 1, "b": [2]}
        pod["c"] = 3
    with POD(path) as pod:
        assert dict(pod) == {"a": 1, "b": [2], "c": 3}
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_a_manifest_from_a_newer_format_version(tmp_path):
    path = tmp_path / "p"
    make_pod(path, [{"a": 1}])
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot_of(path)
    with pytest.raises(FormatVersionError) as info:
        POD(path)
    message = str(info.value)
    assert "99" in message and "newer" in message and "Upgrade tastypy" in message
    assert str(path / "manifest.json") in message
    assert snapshot_of(path) == before


@pytest.mark.parametrize("version", [0, -1, "1", None, 1.0])
def test_a_manifest_version_no_tastypy_writes_is_corruption(tmp_path, version):
    path = tmp_path / "p"
    make_pod(path, [{"a": 1}])
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = version
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match="which no tastypy writes"):
        POD(path)


def test_a_manifest_that_is_not_json(tmp_path):
    path = tmp_path / "p"
    make_pod(path, [{"a": 1}])
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="manifest.json is not valid JSON"):
        POD(path)


def test_a_missing_manifest_beside_data_files(tmp_path):
    path = tmp_path / "p"
    make_pod(path, [{"a": 1}])
    (path / "manifest.json").unlink()
    with pytest.raises(CorruptFileError, match="manifest.json is missing"):
        POD(path)
    assert (path / "journal-000000.jsonl").exists()


# -- the original tastypy 0.0.3 -----------------------------------------------------------------


def write_legacy(directory, shards, gz=False):
    directory.mkdir()
    for number, items in enumerate(shards):
        text = "".join(f"{key}\t{value}\n" for key, value in items)
        name = f"{number}.json" + (".gz" if gz else "")
        if gz:
            (directory / name).write_bytes(gzip.compress(text.encode()))
        else:
            (directory / name).write_text(text)


LEGACY = [
    [('"a"', '{"_aborted": false, "_tries": 0, "_done": false}'), ('"b"', "[1, 2]")],
    [("3", '"int key"'), ('"tab\\\\tkey"', "null"), ('"caf\\\\u00e9"', '{"1": "x"}')],
]


def test_a_directory_of_tastypy_003_points_at_import_legacy(tmp_path):
    old = tmp_path / "old.pod"
    write_legacy(old, LEGACY)
    before = snapshot_of(old)
    with pytest.raises(LegacyFormatError) as info:
        POD(old)
    message = str(info.value)
    assert "0.0.3" in message and "tastypy.import_legacy(" in message and str(old) in message
    assert snapshot_of(old) == before


def test_import_legacy_copies_items_in_order(tmp_path):
    old = tmp_path / "old.pod"
    write_legacy(old, LEGACY)
    before = snapshot_of(old)
    assert tastypy.import_legacy(old, tmp_path / "new.pod") == 5
    assert snapshot_of(old) == before  # only read
    with POD(tmp_path / "new.pod") as pod:
        assert list(pod.items()) == [
            ("a", {"_aborted": False, "_tries": 0, "_done": False}),
            ("b", [1, 2]),
            (3, "int key"),
            ("tab\tkey", None),  # a real tab: 0.0.3 doubled JSON's backslash
            ("café", {"1": "x"}),
        ]


def test_import_legacy_of_a_tracker_makes_a_tracker(tmp_path):
    old = tmp_path / "old.tracker"
    write_legacy(
        old,
        [
            [
                ('"a"', '{"_aborted": false, "_tries": 1, "_done": true}'),
                ('"b"', '{"_aborted": false, "_tries": 0, "_done": false, "x": 5}'),
            ]
        ],
    )
    assert tastypy.import_legacy(old, tmp_path / "new.tracker") == 2
    with tastypy.ProgressTracker(tmp_path / "new.tracker") as tracker:
        assert tracker["b"]["x"] == 5
        assert tracker.num_done() == 1
    # cls= chooses the class: the same records as a plain POD
    tastypy.import_legacy(old, tmp_path / "as.pod", cls=POD)
    with POD(tmp_path / "as.pod") as pod:
        assert pod["a"]["_done"] is True


def test_import_legacy_of_a_gzipped_pod(tmp_path):
    old = tmp_path / "old.pod"
    write_legacy(old, [[('"x"', "1"), ('"y"', '"two"')]], gz=True)
    with pytest.raises(LegacyFormatError):
        POD(old)
    tastypy.import_legacy(old, tmp_path / "new.pod", gzipped=True)
    with POD(tmp_path / "new.pod") as pod:
        assert dict(pod) == {"x": 1, "y": "two"}


def test_import_legacy_refuses_damage_and_a_used_target(tmp_path):
    old = tmp_path / "old.pod"
    write_legacy(old, [[('"x"', "1")], [('"y"', "{broken")]])
    with pytest.raises(CorruptFileError, match=r"1\.json, line 1"):
        tastypy.import_legacy(old, tmp_path / "new.pod")
    gap = tmp_path / "gap.pod"
    write_legacy(gap, [[('"x"', "1")], [('"y"', "2")], [('"z"', "3")]])
    (gap / "1.json").unlink()
    with pytest.raises(CorruptFileError, match=r"1\.json is missing"):
        tastypy.import_legacy(gap, tmp_path / "new2.pod")
    used = tmp_path / "used.pod"
    with POD(used) as pod:
        pod["keep"] = 1
    good = tmp_path / "good.pod"
    write_legacy(good, [[('"x"', "1")]])
    with pytest.raises(NotAPODError, match="not empty"):
        tastypy.import_legacy(good, used)
    with POD(used) as pod:
        assert dict(pod) == {"keep": 1}
    with pytest.raises(NotAPODError):
        tastypy.import_legacy(tmp_path / "nowhere", tmp_path / "new3.pod")


# -- read-only directories -----------------------------------------------------------------

OPEN_EACH = """
import os, pwd, sys
import tastypy  # imported before dropping root: the interpreter's files may be root's only
if sys.argv[1] == "drop":
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
for path in sys.argv[2:]:
    try:
        tastypy.POD(path)
    except tastypy.StorageError as exc:
        print("refused:", exc)
    else:
        print("opened:", path)
"""


@pytest.fixture
def world_readable_dir():
    # tmp_path lives in a directory only its owner may enter; this one is 0o755.
    directory = tempfile.mkdtemp(prefix="tastypy-ro-", dir="/tmp")
    os.chmod(directory, 0o755)
    yield directory
    for root, dirs, _ in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(directory)


def test_a_read_only_directory_is_refused_at_open_not_at_exit(world_readable_dir):
    top = world_readable_dir
    existing = os.path.join(top, "theirs.pod")
    with POD(existing) as pod:
        pod["a"] = 1
    # Three ways to be read-only for the user who opens: a POD directory he
    # may not write into; one he may write into, whose journal he may not
    # append to; and a new POD in a directory he may not write into.
    mine = os.path.join(top, "mine")
    shutil.copytree(existing, os.path.join(mine, "p"))
    locked_parent = os.path.join(top, "locked")
    os.mkdir(locked_parent)
    new = os.path.join(locked_parent, "new.pod")
    if os.geteuid() == 0:
        # root may write anywhere: the test opens as the user nobody, for
        # whom the files above (root's, 0o755 and 0o644) are read-only.
        how = "drop"
        nobody = pwd.getpwnam("nobody")
        for path in (mine, os.path.join(mine, "p")):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        os.chmod(os.path.join(mine, "p", "tastypy.lock"), 0o666)
    else:
        how = "stay"
        os.chmod(existing, 0o555)
        os.chmod(os.path.join(mine, "p", "journal-000000.jsonl"), 0o444)
        os.chmod(locked_parent, 0o555)
    before = snapshot_of(top)
    result = run_python(OPEN_EACH, how, existing, os.path.join(mine, "p"), new)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    assert lines[0].startswith("refused:") and "not writable by you" in lines[0]
    assert existing in lines[0]
    assert lines[1].startswith("refused:") and "journal-000000.jsonl is not writable" in lines[1]
    assert lines[2].startswith("refused:") and "Permission denied" in lines[2] and new in lines[2]
    assert result.stderr == ""  # nothing left to fail at exit
    assert snapshot_of(top) == before
    os.chmod(existing, 0o755)
    with POD(existing) as pod:
        assert dict(pod) == {"a": 1}


# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("sync_at", [0, -1, -1000])
def test_sync_at_must_be_positive(tmp_path, sync_at):
    with pytest.raises(InvalidArgumentError, match="sync_at must be a positive int") as info:
        POD(tmp_path / "p", sync_at=sync_at)
    assert isinstance(info.value, ValueError)
    assert repr(sync_at) in str(info.value)
    assert not (tmp_path / "p").exists()  # refused before touching the disk


@pytest.mark.parametrize("sync_at", [1.5, "10", None, True, 10.0])
def test_sync_at_must_be_an_int(tmp_path, sync_at):
    with pytest.raises(InvalidArgumentError, match="sync_at must be a positive int") as info:
        POD(tmp_path / "p", sync_at=sync_at)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("file_size", [0, -5, "big", 2.5])
def test_file_size_must_be_a_positive_int(tmp_path, file_size):
    with pytest.raises(InvalidArgumentError, match="file_size"):
        POD(tmp_path / "p", file_size=file_size)


def test_a_lock_mode_that_does_not_exist(tmp_path):
    with pytest.raises(ValueError, match="lock="):
        POD(tmp_path / "p", lock="nfs-magic")


def test_storage_error_is_an_os_error():
    assert issubclass(StorageError, OSError) and issubclass(StorageError, TastypyError)


# -- empty paths and flags that are not bools ---------------------------------------------


def _compact(path):
    from tastypy.storage.repair import compact

    return compact(path)


EMPTY_PATH_CALLS = {
    "POD": lambda: POD(""),
    "Tracker": lambda: tastypy.Tracker(""),
    "parted Tracker": lambda: tastypy.Tracker("", shards=2),
    "check": lambda: tastypy.check(""),
    "repair": lambda: tastypy.repair(""),
    "compact": lambda: _compact(""),
    "import_legacy": lambda: tastypy.import_legacy("", "new.pod"),
}


@pytest.mark.parametrize("call", list(EMPTY_PATH_CALLS.values()), ids=list(EMPTY_PATH_CALLS))
def test_an_empty_path_is_refused_not_taken_for_the_current_directory(tmp_path, monkeypatch, call):
    monkeypatch.chdir(tmp_path)  # empty: it would become a POD
    with pytest.raises(InvalidArgumentError, match="path is empty") as info:
        call()
    assert "'.'" in str(info.value)  # how to ask for the current directory
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["check", "repair", "compact"])
def test_the_commands_refuse_an_empty_path(tmp_path, command):
    proc = run_python(
        "import sys\nfrom tastypy.cli import main\nsys.exit(main())", command, "", cwd=tmp_path
    )
    assert proc.returncode == 1
    assert f"tastypy {command}: path is empty" in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", [None, b"/tmp/x.pod", 3, "a\0b"], ids=repr)
def test_a_path_that_is_no_path_is_refused(tmp_path, path):
    with pytest.raises(InvalidArgumentError, match="path"):
        POD(path)


FLAG_CALLS = {
    "POD": lambda path, **kw: POD(path, **kw),
    "Tracker": lambda path, **kw: tastypy.Tracker(path, **kw),
    "parted Tracker": lambda path, **kw: tastypy.Tracker(path, shards=2, **kw),
}


@pytest.mark.parametrize("value", ["no", "False", 0, 1, None], ids=repr)
@pytest.mark.parametrize("flag", ["gzipped", "clone"])
@pytest.mark.parametrize("make", list(FLAG_CALLS.values()), ids=list(FLAG_CALLS))
def test_a_flag_must_be_true_or_false(tmp_path, make, flag, value):
    with pytest.raises(InvalidArgumentError, match=f"{flag} must be True or False") as info:
        make(tmp_path / "p", **{flag: value})
    assert repr(value) in str(info.value)
    assert not (tmp_path / "p").exists()  # refused before touching the disk


def test_import_legacy_refuses_a_gzipped_flag_that_is_not_a_bool(tmp_path):
    old = tmp_path / "old.pod"
    write_legacy(old, [[('"x"', "1")]])
    with pytest.raises(InvalidArgumentError, match="gzipped must be True or False"):
        tastypy.import_legacy(old, tmp_path / "new.pod", gzipped="no")
    assert not (tmp_path / "new.pod").exists()


# -- a read-only filesystem; a directory moved while open ---------------------------------


@pytest.fixture
def read_only_mount(tmp_path):
    """A tmpfs holding the POD ``p`` (keys a, b), remounted read-only. Mounting
    needs root, as the shared-filesystem tests do; unmounted afterwards."""
    import subprocess

    point = tmp_path / "mnt"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(point)], check=True)
    try:
        with POD(point / "p") as pod:
            pod["a"] = 1
            pod["b"] = 2
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_a_read_only_filesystem_is_named_as_such(read_only_mount):
    path = read_only_mount / "p"
    before = snapshot_of(path)
    with pytest.raises(StorageError) as info:
        POD(path)
    message = str(info.value)
    assert f"{path} is on a read-only filesystem ({read_only_mount}, a tmpfs mount" in message
    assert "remount it read-write" in message and "permissions" not in message
    with pytest.raises(StorageError, match="Read-only file system.*remount it read-write"):
        POD(read_only_mount / "new")
    report = tastypy.check(path)  # reads it where it is
    assert report.ok and report.keys == 2
    assert snapshot_of(path) == before


def test_a_pod_directory_moved_while_open_is_not_written_by_its_old_name(tmp_path):
    path = tmp_path / "p"
    moved = tmp_path / "moved"
    pod = POD(path)
    try:
        pod["a"] = 1
        pod.sync()
        os.rename(path, moved)
        shutil.copytree(moved, path)  # another directory now has its name
        before = snapshot_of(path), snapshot_of(moved)
        pod["b"] = 2
        with pytest.raises(StorageError) as info:
            pod.sync()
        message = str(info.value)
        assert f"the POD directory {path} is no longer the directory that was opened" in message
        assert "moved or renamed" in message and "Nothing was written" in message
        assert (snapshot_of(path), snapshot_of(moved)) == before
        assert pod.to_dict() == {"a": 1, "b": 2}  # memory is whole
    finally:
        with pytest.raises(StorageError):
            pod.close()


def data_of(directory) -> dict:
    """The files of a POD directory but its lock's (which a waiter may touch)."""
    files = snapshot_of(directory)
    return {name: data for name, data in files.items() if not name.startswith("tastypy.lock")}


@pytest.mark.parametrize("lock", ["soft", "posix"])
@pytest.mark.parametrize("replaced", [False, True], ids=["renamed", "renamed-and-replaced"])
def test_a_tracker_directory_moved_while_it_runs_is_not_written(tmp_path, replaced, lock):
    # Every transaction checks the directory before it writes (with the
    # files kept open, lock="posix" on a local disk: at most every 50 ms, and
    # this test waits that long).
    path = tmp_path / "t"
    moved = tmp_path / "moved"
    tracker = tastypy.Tracker(path, lock=lock)
    try:
        tracker.add_many(["t1", "t2", "t3"])
        tracker.sync()
        assert tracker.try_it("t1")
        tracker.sync()
        os.rename(path, moved)
        if replaced:
            shutil.copytree(moved, path, ignore=shutil.ignore_patterns("tastypy.lock*"))
        before = data_of(moved), path.exists() and data_of(path)
        time.sleep(0.06)
        with pytest.raises(StorageError) as info:
            tracker.try_it("t2")
        message = str(info.value)
        assert str(path) in message and "Nothing was written" in message
        assert ("no longer the directory" if replaced else "has disappeared") in message
        assert (data_of(moved), path.exists() and data_of(path)) == before
    finally:
        with pytest.raises(StorageError):
            tracker.close()
