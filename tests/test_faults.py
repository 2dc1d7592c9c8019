"""Faults that are not crashes: a full disk, failing fsync or rename,
permission denied, a directory deleted or a file replaced under a running POD.

Each must give a tastypy error naming the file and the cause, leave memory
and disk intact, and let a later sync succeed once the cause is gone.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time

import pytest
from crashkit import files_of, read_pod, run_child

import tastypy
from tastypy import _faults
from tastypy.errors import StorageError


def make_pod(path, n=20):
    with tastypy.POD(path) as pod:
        for i in range(n):
            pod[f"k{i}"] = {"i": i}
    return {f"k{i}": {"i": i} for i in range(n)}


def test_unarmed_hook_is_the_no_op(tmp_path):
    assert "TASTYPY_FAULT" not in os.environ
    assert _faults.HOOK is _faults.no_fault
    with tastypy.POD(tmp_path / "pod") as pod:
        assert pod._store.fault is _faults.no_fault


@pytest.mark.parametrize(
    "spec", ["no-such-point", "after-write:0", "after-write:1:explode", "after-write:x"]
)
def test_a_bad_fault_spec_is_refused(spec):
    with pytest.raises(ValueError):
        _faults.make_hook(spec)


# -- a full disk: a real write error from the kernel ---------------------------------

DISK_FULL = """
import json, os, resource, signal, sys
import tastypy

# Writing past RLIMIT_FSIZE fails with EFBIG, as a full disk fails with
# ENOSPC: a short write, then an error.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path, what = sys.argv[1], sys.argv[2]
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
out = {}
pod = tastypy.POD(path)
journal = os.path.join(path, "journal-000000.jsonl")
size = os.path.getsize(journal)
for i in range(50):
    pod[f"new{i}"] = "x" * 100
if what == "compact":
    pod.sync()
    size = 0  # the new snapshot is a new file: it may not grow past 1000 bytes
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, hard))
try:
    if what == "sync":
        pod.sync()
    else:
        pod.compact()
except tastypy.StorageError as exc:
    out["error"] = str(exc)
    out["errno"] = exc.errno
out["journal_size"] = os.path.getsize(journal)
out["names"] = sorted(os.listdir(path))
out["memory"] = len(pod)
with tastypy.POD(path, clone=False) as other:  # what another process reads
    out["disk"] = len(other)
# Space is back: the next sync or compaction goes through.
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
if what == "sync":
    pod.sync()
else:
    pod.compact()
pod.close()
print(json.dumps(out))
"""


def test_disk_full_during_sync(tmp_path):
    path = tmp_path / "pod"
    expected = make_pod(path)
    size = (path / "journal-000000.jsonl").stat().st_size
    proc = run_child(DISK_FULL, path, "sync")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    assert out["errno"] == errno.EFBIG
    assert str(path / "journal-000000.jsonl") in out["error"]
    assert "File too large" in out["error"] and "nothing synced is lost" in out["error"]
    # The half-written batch was taken back; memory kept every change; the
    # disk, read by a second handle, held only what was synced before.
    assert out["journal_size"] == size
    assert out["memory"] == 70
    assert out["disk"] == 20
    expected.update({f"new{i}": "x" * 100 for i in range(50)})
    assert read_pod(path) == list(expected.items())


def test_disk_full_during_compaction(tmp_path):
    path = tmp_path / "pod"
    expected = make_pod(path, 200)
    proc = run_child(DISK_FULL, path, "compact")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    assert out["errno"] == errno.EFBIG
    assert str(path / "snapshot-000001.jsonl") in out["error"]
    # No temporary file is left behind and the old generation is intact.
    assert out["names"] == ["journal-000000.jsonl", "manifest.json", "tastypy.lock"]
    assert out["memory"] == out["disk"] == 250
    expected.update({f"new{i}": "x" * 100 for i in range(50)})
    assert read_pod(path) == list(expected.items())
    assert "snapshot-000001.jsonl" in os.listdir(path)


CREATE_FULL = """
import os, resource, signal, sys
import tastypy

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))
try:
    tastypy.POD(sys.argv[1])
except tastypy.StorageError as exc:
    print(exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
with tastypy.POD(sys.argv[1]) as pod:
    pod["a"] = 1
"""


def test_disk_full_while_creating_a_pod(tmp_path):
    path = tmp_path / "pod"
    proc = run_child(CREATE_FULL, path)
    assert proc.returncode == 0, proc.stderr
    assert "cannot write the manifest" in proc.stdout and "File too large" in proc.stdout
    assert read_pod(path) == [("a", 1)]


# -- injected I/O errors ------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, cause",
    [
        ("before-write:1:enospc", "No space left on device"),
        ("mid-write:1:eio", "Input/output error"),
        ("after-write:1:eio", "Input/output error"),  # the fsync fails
        ("before-truncate:1:eio", "Input/output error"),
    ],
)
def test_injected_error_during_sync(tmp_path, spec, cause):
    path = tmp_path / "pod"
    expected = make_pod(path)
    if spec.startswith("before-truncate"):
        # A torn tail for the writer to cut.
        with open(path / "journal-000000.jsonl", "ab") as f:
            f.write(b'["torn",')
    before = files_of(path)
    with tastypy.POD(path) as pod:
        pod._store.fault = _faults.make_hook(spec)
        pod["new"] = [1, 2]
        del pod["k0"]
        with pytest.raises(StorageError) as info:
            pod.sync()
        assert str(path / "journal-000000.jsonl") in str(info.value)
        assert cause in str(info.value)
        assert files_of(path) == before, "a failed sync left bytes on disk"
        assert pod["new"] == [1, 2] and "k0" not in pod
        # The injected error fires once, like space freed: the retry works.
        pod.sync()
    del expected["k0"]
    expected["new"] = [1, 2]
    assert read_pod(path) == list(expected.items())


def test_a_failed_background_fsync_is_raised_at_the_next_transaction(tmp_path):
    """A tracker's periodic durable point is fsynced by a thread: its
    failure is not lost, but raised by the next call that writes, and
    nothing written is taken back (other processes may have read it)."""
    path = tmp_path / "tracker"
    tracker = tastypy.Tracker(path, sync_at=5)
    tracker._store.fault = _faults.make_hook("after-fsync:1:eio")
    with pytest.raises(StorageError) as info:
        for i in range(200):
            if tracker.try_it(f"t{i}"):
                tracker.mark_done(f"t{i}")
            time.sleep(0.001)  # let the thread fsync
    message = str(info.value)
    assert "background fsync" in message and "Input/output error" in message
    assert str(path / "journal-000000.jsonl") in message
    assert info.value.errno == errno.EIO
    assert 5 <= i < 200
    # Raised once: the work goes on, and nothing marked done is lost.
    assert tracker.try_it("after")
    tracker.mark_done("after")
    tracker.close()
    with tastypy.Tracker(path) as reopened:
        assert all(reopened.done(f"t{j}") for j in range(i))
        assert reopened.done("after")


@pytest.mark.parametrize(
    "spec",
    [
        "compact-before-snapshot:1:enospc",
        "snapshot-temp-written:1:eio",  # the snapshot's fsync fails
        "snapshot-temp-fsynced:1:eio",  # its rename fails
        "manifest-temp-written:1:enospc",
        "manifest-temp-fsynced:1:eio",  # the manifest's rename fails
    ],
)
def test_injected_error_during_compaction(tmp_path, spec):
    path = tmp_path / "pod"
    expected = make_pod(path)
    before = files_of(path)
    with tastypy.POD(path) as pod:
        pod._store.fault = _faults.make_hook(spec)
        with pytest.raises(StorageError) as info:
            pod.compact()
        assert "cannot compact into" in str(info.value) and str(path) in str(info.value)
        # A snapshot may be left unlisted (ignored); nothing listed changed.
        after = files_of(path)
        assert {n: after[n] for n in before} == before
        assert not [n for n in os.listdir(path) if n.endswith(".tmp")]
        pod["after"] = 1
        pod.sync()
        pod.compact()
    expected["after"] = 1
    assert read_pod(path) == list(expected.items())
    assert sorted(os.listdir(path)) == ["manifest.json", "snapshot-000001.jsonl", "tastypy.lock"]


ARMED_BY_ENVIRONMENT = """
import sys
import tastypy

pod = tastypy.POD(sys.argv[1])
pod["a"] = 1
try:
    pod.sync()
except tastypy.StorageError as exc:
    print("first:", exc)
pod.sync()
pod["b"] = 2
pod.sync()
"""


def test_environment_arms_the_fault_in_a_child(tmp_path):
    path = tmp_path / "pod"
    tastypy.POD(path).close()
    proc = run_child(ARMED_BY_ENVIRONMENT, path, fault="after-write:1:enospc")
    assert proc.returncode == 0, proc.stderr
    assert "first: cannot append to" in proc.stdout and "No space left" in proc.stdout
    assert read_pod(path) == [("a", 1), ("b", 2)]


def test_exit_action_leaves_without_clean_up(tmp_path):
    path = tmp_path / "pod"
    tastypy.POD(path).close()
    proc = run_child(ARMED_BY_ENVIRONMENT, path, fault="before-write:2:exit")
    assert proc.returncode == _faults.FAULT_EXIT_STATUS
    # The first sync completed; the process left before writing the second.
    assert read_pod(path) == [("a", 1)]


# -- permissions (as a user other than root, whom permissions do not stop) ----------------

PERMISSIONS = """
import json, os, sys
import tastypy

base = sys.argv[1]
out = {}
path = os.path.join(base, "pod")
pod = tastypy.POD(path)
pod["a"] = 1
pod.sync()
journal = os.path.join(path, "journal-000000.jsonl")

os.chmod(journal, 0o444)
pod["b"] = 2
try:
    pod.sync()
except tastypy.StorageError as exc:
    out["journal"] = str(exc)
os.chmod(journal, 0o644)
pod.sync()

os.chmod(path, 0o555)
try:
    pod.compact()
except tastypy.StorageError as exc:
    out["compact"] = str(exc)
try:
    tastypy.POD(path, clone=False).close()  # opened anew, not the open one again
except tastypy.StorageError as exc:
    out["open"] = str(exc)
os.chmod(path, 0o755)
pod.compact()
pod.close()

manifest = os.path.join(path, "manifest.json")
os.chmod(manifest, 0o000)
try:
    tastypy.POD(path)
except tastypy.StorageError as exc:
    out["manifest"] = str(exc)
os.chmod(manifest, 0o644)
with tastypy.POD(path) as again:
    out["items"] = list(again.items())
print(json.dumps(out))
"""


def _without_permission_override() -> None:
    # Root passes every permission check through CAP_DAC_OVERRIDE and
    # CAP_DAC_READ_SEARCH. Dropped from the bounding set before exec, the
    # child runs as root but is refused like any owner of a read-only file.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_permission_denied_is_a_clear_error_and_recoverable(tmp_path):
    from conftest import run_python

    drop = _without_permission_override if os.geteuid() == 0 else None
    proc = run_python(PERMISSIONS, tmp_path, preexec_fn=drop)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    journal = str(tmp_path / "pod" / "journal-000000.jsonl")
    assert journal in out["journal"] and "Permission denied" in out["journal"]
    assert "Check the permissions" in out["journal"]
    assert "Permission denied" in out["compact"]
    assert "not writable" in out["open"]
    assert "manifest.json" in out["manifest"] and "Permission denied" in out["manifest"]
    assert out["items"] == [["a", 1], ["b", 2]]


# -- the directory or a file changed under a running POD ------------------------------------


def test_directory_deleted_under_a_running_pod(tmp_path):
    path = tmp_path / "pod"
    make_pod(path)
    pod = tastypy.POD(path)
    try:
        shutil.rmtree(path)
        pod["late"] = "change"
        with pytest.raises(StorageError) as info:
            pod.sync()
        assert str(path) in str(info.value) and "disappeared" in str(info.value)
        # Nothing was recreated behind the user's back, and memory is whole.
        assert not path.exists()
        assert len(pod) == 21 and pod["late"] == "change"
        with pytest.raises(StorageError):
            pod.sync()
        assert not path.exists()
    finally:
        with pytest.raises(StorageError):
            pod.close()


@pytest.mark.parametrize("victim", ["journal-000000.jsonl", "manifest.json"])
def test_file_replaced_by_a_directory(tmp_path, victim):
    path = tmp_path / "pod"
    expected = make_pod(path)
    pod = tastypy.POD(path)
    try:
        saved = (path / victim).read_bytes()
        os.unlink(path / victim)
        os.mkdir(path / victim)
        others = files_of(path)
        pod["late"] = 1
        with pytest.raises(StorageError) as info:
            pod.sync()
        assert str(path / victim) in str(info.value)
        assert "is a directory" in str(info.value).lower()
        assert files_of(path) == others, "other files were touched"
        assert pod["late"] == 1

        # Put the file back: the next sync goes through.
        os.rmdir(path / victim)
        (path / victim).write_bytes(saved)
        pod.sync()
    finally:
        pod.close()
    expected["late"] = 1
    assert read_pod(path) == list(expected.items())
