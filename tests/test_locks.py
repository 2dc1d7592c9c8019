"""The directory lock: posix (flock) and soft (lock file), with real processes.

Two hosts are simulated in ``test_two_hosts.py``; here every process runs on
this host, except the "foreign" holders, whose lock file names another host.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest
from conftest import spawn_python

import tastypy
from tastypy.storage import fsdetect
from tastypy.storage.locks import DirectoryLock, read_holder

MODES = ["posix", "soft"]

# Each worker adds 1 to a counter file, read-modify-write under the lock, and
# prints every value it read. With exclusion, the values read are 0..N-1, each
# once.
COUNTER = """
import os, sys
from tastypy.storage.locks import DirectoryLock

directory, mode, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = DirectoryLock(os.path.join(directory, "tastypy.lock"), mode, timeout=60)
if sys.argv[4:] == ["create"]:  # as where hard links are refused
    lock._soft._linking = False
path = os.path.join(directory, "counter")
seen = []
for _ in range(rounds):
    with lock.held():
        try:
            with open(path) as f:
                value = int(f.read() or 0)
        except FileNotFoundError:
            value = 0
        with open(path, "w") as f:
            f.write(str(value + 1))
        seen.append(value)
print(" ".join(map(str, seen)))
"""

# Takes the lock, says so, and holds it for argv[3] seconds.
HOLDER = """
import os, sys, time
from tastypy.storage.locks import DirectoryLock

directory, mode, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
lease = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
lock = DirectoryLock(os.path.join(directory, "tastypy.lock"), mode, lease=lease)
with lock.held():
    print("held", flush=True)
    time.sleep(hold)
print("released", flush=True)
time.sleep(600)
"""


def lock_in(directory, mode="auto", **kw) -> DirectoryLock:
    return DirectoryLock(os.path.join(str(directory), "tastypy.lock"), mode, **kw)


def start_holder(directory, mode, hold, lease=60.0):
    proc = spawn_python(HOLDER, directory, mode, hold, lease)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def assert_nothing_left(directory) -> None:
    """No lock file, and no template, claim or aside in the work directory:
    at most one tombstone per lock removed (``broken.TOKEN``, an empty file
    swept after a minute, that tells a waiter with an old cached view of the
    lock file that it is gone)."""
    assert not (directory / "tastypy.lock.held").exists()
    work = directory / "tastypy.lock.d"
    left = os.listdir(work) if work.exists() else []
    tombstones = [n for n in left if n.startswith("broken.")]
    assert len(tombstones) <= 1 and all(os.path.getsize(work / n) == 0 for n in tombstones), (
        tombstones
    )
    assert [n for n in left if not n.startswith("broken.")] == []


def stop(proc) -> None:
    """Kill a child (if it still runs), reap it and close its pipes."""
    proc.kill()
    proc.communicate()


def foreign_record(host="node-17.cluster", pid=4242, lease=1.0, since=None) -> bytes:
    return (
        orjson.dumps(
            {
                "host": host,
                "pid": pid,
                "start": 1,
                "since": time.time() if since is None else since,
                "lease": lease,
                "token": f"foreign-{os.urandom(4).hex()}",
                "boot": "another-boot",
                "pidns": 1,
            }
        )
        + b"\n"
    )


# -- choosing the lock --------------------------------------------------------------


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw 0 0
server:/export /home/shared nfs4 rw,vers=4.2 0 0
/dev/sdb1 /home/shared/local ext4 rw 0 0
fs01@tcp:/lustre /scratch lustre rw,localflock 0 0
user@host:/data /mnt/my\\040data fuse.sshfs rw 0 0
/srv/src /mnt/bind fuse rw,user_id=0 0 0
/dev/sdc1 /mnt/bind ext4 rw 0 0
"""


@pytest.mark.parametrize(
    "path, mode, fstype",
    [
        ("/home/shared/job", "soft", "nfs4"),
        ("/home/shared/local/job", "posix", "ext4"),  # the longest mount point wins
        ("/home/sharedother", "posix", "ext4"),  # a prefix of the name is not a parent
        ("/scratch/me", "soft", "lustre"),
        ("/mnt/my data/x", "soft", "fuse.sshfs"),  # \040 in /proc/mounts is a space
        ("/mnt/bind/x", "posix", "ext4"),  # the later mount hides the earlier one
        ("/tmp/x", "posix", "tmpfs"),
    ],
)
def test_auto_chooses_soft_on_network_and_fuse_filesystems(tmp_path, path, mode, fstype):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert fsdetect.find_mount(path, str(mounts)).fstype == fstype
    chosen, reason = fsdetect.choose_lock(path, str(mounts))
    assert chosen == mode
    assert fstype in reason


@pytest.mark.parametrize(
    "fstype", ["nfs", "nfs4", "cifs", "smb3", "gpfs", "beegfs", "ceph", "9p", "afs", "fuse",
               "fuse.bindfs", "fuse.glusterfs", "fuseblk", "glusterfs", "lustre"]
)  # fmt: skip
def test_network_filesystems_do_not_trust_flock(fstype):
    assert not fsdetect.flock_is_trusted(fstype)


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "apfs"])
def test_local_filesystems_trust_flock(fstype):
    assert fsdetect.flock_is_trusted(fstype)


def test_auto_on_this_machine_follows_the_mount_table(tmp_path):
    lock = lock_in(tmp_path)
    assert (lock.mode, lock.reason) == fsdetect.choose_lock(tmp_path)
    lock.close()


def test_a_directory_used_with_a_soft_lock_stays_soft_for_auto(tmp_path, caplog):
    # The file server sees the directory as local; its processes must still
    # take the lock file the NFS clients take.
    soft = lock_in(tmp_path, "soft")
    with soft.held():
        pass
    auto = lock_in(tmp_path, "auto")
    assert auto.mode == "soft"
    assert "soft lock" in auto.reason
    with caplog.at_level(logging.WARNING, logger="tastypy"):
        posix = lock_in(tmp_path, "posix")
    assert posix.mode == "posix"
    assert "do not exclude each other" in caplog.text
    posix.close()


def test_a_pod_with_a_soft_lock_is_an_ordinary_pod(tmp_path):
    with tastypy.POD(tmp_path / "p", lock="soft") as pod:
        pod["a"] = 1
        assert os.path.exists(tmp_path / "p" / "tastypy.lock.held") is False
    with tastypy.POD(tmp_path / "p") as pod:
        assert pod["a"] == 1
        assert pod._store._lock.mode == "soft"


@pytest.mark.parametrize("bad", ["flock", "", None, "SOFT"])
def test_an_unknown_lock_mode_is_refused_with_the_choices(tmp_path, bad):
    with pytest.raises(ValueError, match="'auto'.*'posix'.*'soft'"):
        tastypy.POD(tmp_path / "p", lock=bad)


@pytest.mark.parametrize("bad", [-1, "10", float("nan"), True])
def test_a_bad_lock_timeout_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="lock_timeout"):
        lock_in(tmp_path, "soft", timeout=bad)


# -- exclusion ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_no_update_is_lost_under_contention(tmp_path, mode):
    workers, rounds = 4, 150
    procs = [spawn_python(COUNTER, tmp_path, mode, rounds) for _ in range(workers)]
    seen = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        seen += [int(v) for v in out.split()]
    assert sorted(seen) == list(range(workers * rounds))
    assert (tmp_path / "counter").read_text() == str(workers * rounds)
    assert_nothing_left(tmp_path)


def test_a_creating_waiter_says_it_wants_the_lock_before_any_work_directory_exists(tmp_path):
    # Where hard links are refused no template is made, so no one may have
    # made tastypy.lock.d when a waiter first writes its want file there.
    first, second = lock_in(tmp_path, "soft"), lock_in(tmp_path, "soft")
    for lock in (first, second):
        lock._soft._linking = False
    first._acquire()
    assert not (tmp_path / "tastypy.lock.d").exists()
    threading.Timer(0.3, first._release).start()
    with second.held():  # waits well past the time it says it wants the lock
        pass
    first.close()
    second.close()
    assert_nothing_left(tmp_path)


def test_linking_and_creating_processes_exclude_each_other(tmp_path):
    # Where hard links are refused, the lock file is created with O_EXCL;
    # both ways make the same file exclusively.
    workers, rounds = 4, 100
    procs = [
        spawn_python(COUNTER, tmp_path, "soft", rounds, *(["create"] if i % 2 else []))
        for i in range(workers)
    ]
    seen = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        seen += [int(v) for v in out.split()]
    assert sorted(seen) == list(range(workers * rounds))
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("mode", MODES)
def test_threads_of_one_process_exclude_each_other(tmp_path, mode):
    import threading

    lock = lock_in(tmp_path, mode)
    inside = []
    overlaps = []

    def work():
        for _ in range(50):
            with lock.held():
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.0001)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps
    lock.close()


def test_the_soft_lock_file_names_its_holder(tmp_path):
    lock = lock_in(tmp_path, "soft")
    with lock.held():
        holder = read_holder(str(tmp_path))
        record = orjson.loads((tmp_path / "tastypy.lock.held").read_bytes())
    assert holder.pid == os.getpid()
    assert holder.local() and holder.alive()
    assert record["host"] == holder.host
    assert abs(record["since"] - time.time()) < 60
    assert read_holder(str(tmp_path)) is None


# -- timeouts -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_timeout_names_the_lock_file_and_its_holder(tmp_path, mode):
    proc = start_holder(tmp_path, mode, hold=30)
    try:
        lock = lock_in(tmp_path, mode, timeout=0.3)
        with pytest.raises(tastypy.LockTimeoutError) as info:
            with lock.held():
                pass
        message = str(info.value)
        assert "tastypy.lock" in message
        assert f"pid {proc.pid} on this host" in message
        assert "since" in message
        assert "lock_timeout" in message
        lock.close()
    finally:
        stop(proc)


def test_a_pod_sync_times_out_with_the_holder_named(tmp_path):
    path = tmp_path / "p"
    tastypy.POD(path, lock="soft").close()
    proc = start_holder(path, "soft", hold=30)
    try:
        with pytest.raises(tastypy.LockTimeoutError, match=f"pid {proc.pid}"):
            tastypy.POD(path, lock="soft", lock_timeout=0.2)
    finally:
        stop(proc)


def test_a_foreign_holder_is_named_by_its_host(tmp_path):
    (tmp_path / "tastypy.lock.held").write_bytes(foreign_record(lease=600))
    lock = lock_in(tmp_path, "soft", timeout=0.2)
    with pytest.raises(tastypy.LockTimeoutError) as info:
        with lock.held():
            pass
    assert "pid 4242 on node-17.cluster" in str(info.value)
    assert "unrefreshed for 600 s" in str(info.value)


# -- stale locks --------------------------------------------------------------------


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_a_soft_lock_left_by_a_killed_process_is_recovered(tmp_path, reap, caplog):
    proc = start_holder(tmp_path, "soft", hold=600)
    os.kill(proc.pid, signal.SIGKILL)
    if reap:
        proc.wait()
    else:
        stat = Path(f"/proc/{proc.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
    assert (tmp_path / "tastypy.lock.held").exists()
    lock = lock_in(tmp_path, "soft", timeout=10)
    with caplog.at_level(logging.WARNING, logger="tastypy"):
        with lock.held():
            assert read_holder(str(tmp_path)).pid == os.getpid()
    assert "removed the stale lock" in caplog.text
    assert "whose process is gone" in caplog.text
    stop(proc)
    lock.close()
    assert_nothing_left(tmp_path)  # the dead holder's template went with its lock


def test_many_waiters_recover_one_stale_lock_without_overlapping(tmp_path):
    # All of them find the same dead holder and race to remove its file; a
    # waiter that removed a live successor's file would show as a lost update.
    proc = start_holder(tmp_path, "soft", hold=600)
    os.kill(proc.pid, signal.SIGKILL)
    stop(proc)
    workers, rounds = 4, 40
    procs = [spawn_python(COUNTER, tmp_path, "soft", rounds) for _ in range(workers)]
    seen = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        seen += [int(v) for v in out.split()]
    assert sorted(seen) == list(range(workers * rounds))
    assert_nothing_left(tmp_path)


def test_a_live_local_holder_is_never_broken(tmp_path):
    # The holder's lease is short, but it runs on this host and its process
    # is alive: age alone never breaks its lock.
    proc = start_holder(tmp_path, "soft", hold=30, lease=0.2)
    try:
        lock = lock_in(tmp_path, "soft", timeout=1.5, lease=0.2)
        with pytest.raises(tastypy.LockTimeoutError, match=f"pid {proc.pid}"):
            with lock.held():
                pass
        assert read_holder(str(tmp_path)).pid == proc.pid
    finally:
        stop(proc)


REFRESHER = """
import os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
while time.monotonic() < end:
    os.utime(path)
    time.sleep(0.05)
print("stopped", flush=True)
"""


def test_a_foreign_holder_that_refreshes_its_lock_keeps_it(tmp_path):
    marker = tmp_path / "tastypy.lock.held"
    marker.write_bytes(foreign_record(lease=1.0))
    refresher = spawn_python(REFRESHER, marker, 60)
    try:
        # Three leases' worth of waiting, refreshed all along.
        lock = lock_in(tmp_path, "soft", timeout=3, lease=1.0)
        with pytest.raises(tastypy.LockTimeoutError, match="node-17.cluster"):
            with lock.held():
                pass
        assert b"node-17.cluster" in marker.read_bytes()
    finally:
        stop(refresher)
    # Once it stops refreshing (its host died), the lock is taken over after
    # a lease of silence.
    lock = lock_in(tmp_path, "soft", timeout=10, lease=1.0)
    with lock.held():
        assert read_holder(str(tmp_path)).pid == os.getpid()


def test_a_lock_file_without_a_record_is_taken_over_after_a_lease(tmp_path):
    # A holder killed between creating the file and writing its record.
    (tmp_path / "tastypy.lock.held").write_bytes(b"")
    lock = lock_in(tmp_path, "soft", timeout=10, lease=0.3)
    with lock.held():
        assert read_holder(str(tmp_path)).pid == os.getpid()


def test_a_held_soft_lock_is_refreshed(tmp_path):
    lock = lock_in(tmp_path, "soft", lease=0.2)
    marker = tmp_path / "tastypy.lock.held"
    with lock.held():
        first = os.stat(marker).st_mtime_ns
        deadline = time.monotonic() + 10
        while os.stat(marker).st_mtime_ns == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.stat(marker).st_mtime_ns != first


def test_a_holder_whose_lock_was_taken_does_not_remove_the_new_one(tmp_path, caplog):
    lock = lock_in(tmp_path, "soft")
    marker = tmp_path / "tastypy.lock.held"
    with caplog.at_level(logging.ERROR, logger="tastypy"):
        with lock.held():
            os.unlink(marker)
            marker.write_bytes(foreign_record())
    assert b"node-17.cluster" in marker.read_bytes()
    assert "was taken from this process" in caplog.text


LOOPER = """
import os, sys, time
from tastypy.storage.locks import DirectoryLock

lock = DirectoryLock(os.path.join(sys.argv[1], "tastypy.lock"), "soft")
with lock.held():
    pass
print("idle", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    with lock.held():
        pass
"""


def test_the_lock_file_holds_its_whole_record_from_the_start(tmp_path):
    # The file appears by hard link from a template already written, so a
    # holder killed at any instant leaves a file that names it.
    proc = spawn_python(LOOPER, tmp_path, 3)
    try:
        assert proc.stdout.readline().strip() == "idle"
        marker = str(tmp_path / "tastypy.lock.held")
        seen = 0
        end = time.monotonic() + 2
        while time.monotonic() < end:
            try:
                fd = os.open(marker, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
            assert orjson.loads(data)["pid"] == proc.pid
            seen += 1
        assert seen > 10
    finally:
        stop(proc)


def test_what_a_killed_process_left_is_swept(tmp_path):
    proc = start_holder(tmp_path, "soft", hold=0)  # takes the lock once, then idles
    assert proc.stdout.readline().strip() == "released"
    waiter = lock_in(tmp_path, "soft", timeout=10)
    with waiter.held():
        pass
    waiter.close()
    stop(proc)
    assert len(os.listdir(tmp_path / "tastypy.lock.d")) >= 1  # its template
    lock = lock_in(tmp_path, "soft")
    with lock.held():
        assert len(os.listdir(tmp_path / "tastypy.lock.d")) == 1  # ours only
    lock.close()
    assert_nothing_left(tmp_path)


# -- after this process's exit cleanup --------------------------------------------------

# Registers a handler before tastypy is imported, so that it runs after
# tastypy's own exit handlers (atexit runs the last registered first): it
# opens files (the lowest free descriptors, among them any tastypy's cleanup
# just closed), writes to the POD, closes it, then writes its own files.
LATE_SYNC = """
import atexit, os, sys
path, spare = sys.argv[1], sys.argv[2]

def late():
    files = [open(os.path.join(spare, f"f{i}"), "wb") for i in range(8)]
    pod["late"] = True
    pod.sync()
    pod.close()
    for f in files:
        f.write(b"mine")
        f.close()
    print("done", flush=True)

atexit.register(late)
import tastypy
pod = tastypy.POD(path, lock="soft")
pod["early"] = True
"""


def test_a_sync_after_the_exit_cleanup_writes_through_no_closed_descriptor(tmp_path):
    # The exit cleanup removes this process's soft-lock template and closes
    # its descriptor; a later sync must neither write the lock record
    # through that number (EBADF, or into whatever file got it since) nor
    # close it again.
    path, spare = tmp_path / "p", tmp_path / "spare"
    spare.mkdir()
    proc = spawn_python(LATE_SYNC, path, spare)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip() == "done", err
    assert "Error" not in err and "error" not in err, err
    for name in sorted(os.listdir(spare)):
        assert (spare / name).read_bytes() == b"mine", name
    with tastypy.POD(path, lock="soft") as pod:
        assert dict(pod) == {"early": True, "late": True}
    assert_nothing_left(path)
