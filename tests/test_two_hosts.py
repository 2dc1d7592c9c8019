"""Two hosts, simulated as two FUSE mounts of one directory.

``bindfs SRC MNT_A`` and ``bindfs SRC MNT_B`` show the same files, but each
mount has its own inodes in the kernel, so a flock taken through one is not
seen through the other: the situation of two NFS clients whose locks do not
reach each other. Exclusive creation of a file, which the soft lock uses,
does reach through both, as it reaches the server on NFS.

The mounts switch off FUSE's attribute and name caches (``attr_timeout=0``
...): with them on (one second by default), a process could see an old size
of a file another mount just appended to, even after opening it, which is
weaker than NFS's close-to-open consistency (an open always fetches fresh
attributes there) and is not what is being simulated.

Needs bindfs and FUSE (``.ci/run`` installs them); the mounts are made by
``tests/sharedfs.py``. A test fails, never skips, when it cannot mount.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest
import sharedfs
from conftest import child_env, spawn_python

import tastypy
from tastypy.storage import fsdetect
from tastypy.storage.locks import DirectoryLock, read_holder


@pytest.fixture
def hosts(tmp_path):
    """(SRC, MNT_A, MNT_B): one directory and two FUSE mounts of it, caches off."""
    try:
        with sharedfs.bindfs_rig(tmp_path, coherent=True) as rig:
            yield rig.source, rig.mounts[0], rig.mounts[1]
    except sharedfs.RigError as exc:
        pytest.fail(str(exc))


def test_a_flock_through_one_mount_does_not_exclude_the_other(hosts):
    # The premise of the simulation: without it, this file proves nothing.
    src, a, b = hosts
    (src / "lk").touch()
    fa = os.open(a / "lk", os.O_RDWR)
    fb = os.open(b / "lk", os.O_RDWR)
    fa2 = os.open(a / "lk", os.O_RDWR)
    try:
        fcntl.flock(fa, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fa2, fcntl.LOCK_EX | fcntl.LOCK_NB)  # same mount: excluded
        try:
            fcntl.flock(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.fail(
                "on this kernel a flock through one bindfs mount excludes one through another "
                "mount, so the two mounts do not simulate two hosts"
            )
    finally:
        for fd in (fa, fb, fa2):
            os.close(fd)


def test_auto_picks_the_soft_lock_on_a_fuse_mount(hosts):
    src, a, b = hosts
    assert fsdetect.find_mount(a).fstype.startswith("fuse")
    lock = DirectoryLock(str(a / "tastypy.lock"))
    assert lock.mode == "soft"
    assert "fuse" in lock.reason
    with tastypy.POD(b / "pod") as pod:
        assert pod._store._lock.mode == "soft"


# Writes `keys` keys of its own and adds 1 to a shared counter key `keys`
# times, read-modify-write under the POD's lock.
POD_WORKER = """
import sys
import tastypy

path, name, keys = sys.argv[1], sys.argv[2], int(sys.argv[3])
with tastypy.POD(path, lock_timeout=120) as pod:
    for i in range(keys):
        pod[f"{name}-{i}"] = i
        pod.sync()
        with pod._store.locked():
            pod.refresh()
            pod["counter"] = pod.get("counter", 0) + 1
            pod.sync()
print("ok")
"""


def test_workers_on_two_hosts_lose_nothing_with_the_automatic_lock(hosts):
    src, a, b = hosts
    # Made where the disk is local (the file server itself) for the hosts
    # mounting it: the shared store is asked for (on a mount it is the default).
    tastypy.POD(src / "pod", storage="shared").close()
    per_mount, keys = 2, 40
    procs = [
        spawn_python(POD_WORKER, mount / "pod", f"{mount.name}-{i}", keys)
        for mount in (a, b)
        for i in range(per_mount)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err
    with tastypy.POD(src / "pod") as pod:
        assert pod["counter"] == 2 * per_mount * keys
        for mount in (a, b):
            for i in range(per_mount):
                for k in range(keys):
                    assert pod[f"{mount.name}-{i}-{k}"] == k
        assert len(pod) == 2 * per_mount * keys + 1


HOLDER = """
import sys, time
from tastypy.storage.locks import DirectoryLock

with DirectoryLock(sys.argv[1]).held():
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_lock_left_by_a_killed_process_on_one_host_is_recovered_on_the_other(hosts):
    src, a, b = hosts
    proc = spawn_python(HOLDER, a / "tastypy.lock")
    try:
        assert proc.stdout.readline().strip() == "held", proc.stderr.read()
        assert read_holder(str(b)).pid == proc.pid
    finally:
        proc.kill()
        proc.communicate()
    lock = DirectoryLock(str(b / "tastypy.lock"), timeout=30)
    with lock.held():
        assert read_holder(str(src)).pid == os.getpid()


def _verify(mount, lock, session) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tastypy", "verify-fs", str(mount), "--lock", lock,
         "--session", session, "--seconds", "2", "--processes", "3"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_verify_fs_on_two_hosts_catches_flock_and_passes_auto(hosts):
    src, a, b = hosts
    runs = [_verify(a, "posix", "flock"), _verify(b, "posix", "flock")]
    results = [(p.wait(timeout=300), *p.communicate()) for p in runs]
    assert any(rc == 1 and "exclusion:  FAILED" in out for rc, out, _ in results), results
    runs = [_verify(a, "auto", "auto"), _verify(b, "auto", "auto")]
    results = [(p.wait(timeout=300), *p.communicate()) for p in runs]
    for rc, out, err in results:
        assert rc == 0, out + err
        assert "chosen by 'auto' as 'soft'" in out


def test_a_journal_on_a_caching_mount_is_refused_and_converted_on_request(hosts):
    """A POD made with the local store (one journal) where the disk is local
    is refused through a FUSE mount, whose clients may cache sizes, naming
    the mount and the command that converts it; converted, it opens there."""
    src, a, _ = hosts
    with tastypy.POD(src / "pod", storage="local") as pod:
        pod["kept"] = {"x": 1}
    with pytest.raises(tastypy.TastypyError, match="tastypy compact --storage shared") as err:
        tastypy.POD(a / "pod")
    assert str(a) in str(err.value) and "fuse" in str(err.value)
    result = subprocess.run(
        [sys.executable, "-m", "tastypy", "compact", "--storage", "shared", str(a / "pod")],
        env=child_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    with tastypy.POD(a / "pod") as pod:
        assert pod["kept"] == {"x": 1}
        pod["more"] = 2
    with tastypy.POD(src / "pod") as pod:
        assert dict(pod) == {"kept": {"x": 1}, "more": 2}


RACING_WRITER = """
import sys
import tastypy

path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with tastypy.POD(path, lock="posix") as pod:
    for i in range(n):
        pod[f"{name}-{i}"] = i
        pod.sync()
print("ok")
"""


def test_shared_store_writers_whose_locks_do_not_exclude_each_other_lose_nothing(hosts):
    """flock through one FUSE mount does not exclude a process on another
    (two hosts whose lock daemon is down): writers then race for the same
    commit number. The link decides: the loser takes the winner's commit in
    and commits after it (CommitRaced, retried), so no sync is lost."""
    _, a, b = hosts
    tastypy.POD(a / "pod", storage="shared").close()
    procs = [spawn_python(RACING_WRITER, m / "pod", m.name, 150) for m in (a, b)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err
    with tastypy.POD(a / "pod") as pod:
        assert dict(pod) == {f"{m.name}-{i}": i for m in (a, b) for i in range(150)}
