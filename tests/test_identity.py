"""Who holds a lease or a lock, and whether it is alive (tastypy/_identity.py).

A holder's pid is checked only by processes of the same host, boot and PID
namespace. The other namespace here is a real one: a worker started with
``unshare --pid`` on this host, with this host's name (a container that
shares the host's name but not its pids), holding its lease or lock while
its pid means nothing, or another process, in ours.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import child_env, spawn_python

from tastypy import Tracker, _identity
from tastypy.storage.locks import DirectoryLock, read_holder

#: Run in a new PID namespace, where pids are given out from 1 in order:
#: fork until the next child gets pid ``sys.argv[1]`` (one that no process
#: of the test's namespace has), and run ``sys.argv[2]`` (Python) in that
#: child with the remaining arguments.
AT_PID = """
import os, sys
target = int(sys.argv[1])
sys.argv = [sys.argv[0], *sys.argv[3:]]
while True:
    pid = os.fork()
    if pid == 0:
        if os.getpid() == target:
            exec(compile(open(os.environ["TASTYPY_TEST_CODE"]).read(), "worker", "exec"))
            sys.exit(0)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if pid >= target:
        sys.exit(os.waitstatus_to_exitcode(status) if pid == target else 3)
"""

#: Takes the lease of ``sys.argv[2]`` in the tracker ``sys.argv[1]``, says
#: so, and holds it until its stdin closes.
LEASE_HOLDER = """
import sys, tastypy
tracker = tastypy.Tracker(sys.argv[1], lease=3600)
print(tracker.try_it(sys.argv[2]), tracker.holder, flush=True)
sys.stdin.read()
tracker.close()
"""

#: Holds the soft lock of the directory ``sys.argv[1]`` until stdin closes.
LOCK_HOLDER = """
import sys
from tastypy.storage.locks import DirectoryLock
lock = DirectoryLock(sys.argv[1] + "/tastypy.lock", mode="soft")
with lock.held():
    print("held", flush=True)
    sys.stdin.read()
lock.close()
"""


def free_pid() -> int:
    """A small pid that no process of this PID namespace has (pids are given
    out upwards, so a small free one stays free for a while)."""
    for pid in range(2, 4096):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    pytest.fail("no free pid below 4096 in this PID namespace")


def start_in_other_namespace(tmp_path, code: str, *args):
    """Start ``code`` in a new PID namespace of this host (same host name,
    same boot), as a process whose pid does not exist in ours; returns the
    process (of ``unshare``) and the pid the code runs as there."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to make a PID namespace: install it")
    target = free_pid()
    script = tmp_path / f"worker-{len(list(tmp_path.iterdir()))}.py"
    script.write_text(textwrap.dedent(code))
    command = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if os.geteuid() != 0:
        command[1:1] = ["--user", "--map-root-user"]
    command += [sys.executable, "-c", textwrap.dedent(AT_PID), str(target), "-", *map(str, args)]
    proc = subprocess.Popen(
        command,
        env=child_env(TASTYPY_TEST_CODE=str(script)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, target


def stop(proc) -> str:
    """Close the worker's stdin (it gives back what it holds and exits);
    returns its stderr."""
    return proc.communicate("", timeout=60)[1]


def test_a_live_holder_of_another_pid_namespace_keeps_its_lease(tmp_path):
    path = tmp_path / "jobs.tracker"
    with Tracker(path) as tracker:
        tracker.add_many(["a", "b"])
    proc, pid = start_in_other_namespace(tmp_path, LEASE_HOLDER, path, "a")
    try:
        line = proc.stdout.readline().split()
        assert line and line[0] == "True", line or proc.stderr.read()
        holder = line[1]
        assert not os.path.exists(f"/proc/{pid}"), "the worker's pid exists here: pick another"
        with Tracker(path) as tracker:
            # Its pid runs no process here, but it lives in its namespace:
            # the lease stands.
            assert not tracker.try_it("a")
            assert tracker.claim(5) == ["b"]
            assert tracker.lease_info(["a"])["a"].holder == holder
        # Same host name, another kernel id (its PID namespace).
        host_pid, _, kernel = holder.partition("/")
        assert host_pid == f"{socket.gethostname()}:{pid}"
        assert kernel and kernel != _identity.me().kernel
    finally:
        errors = stop(proc)
    assert proc.returncode == 0, errors


def test_a_live_soft_lock_holder_of_another_pid_namespace_keeps_its_lock(tmp_path):
    proc, pid = start_in_other_namespace(tmp_path, LOCK_HOLDER, tmp_path)
    try:
        assert proc.stdout.readline().strip() == "held", proc.stderr.read()
        holder = read_holder(str(tmp_path))
        assert holder.pid == pid and holder.host == socket.gethostname()
        assert not holder.local()
        lock = DirectoryLock(str(tmp_path / "tastypy.lock"), mode="soft", timeout=0.5)
        with pytest.raises(Exception, match="keeps refreshing it"):
            with lock.held():
                pass
        lock.close()
        assert read_holder(str(tmp_path)).token == holder.token
    finally:
        errors = stop(proc)
    assert proc.returncode == 0, errors


def test_a_dead_holder_of_this_namespace_is_gone_and_a_live_one_is_not():
    me = _identity.me()
    child = spawn_python("pass", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child.wait(timeout=60)
    dead = f"{_identity.LEASE_HOST}:{child.pid}/{me.kernel}"
    assert _identity.holder_gone(dead)
    assert not _identity.holder_gone(me.holder)
    # Written by a tastypy that did not record the kernel: in doubt, alive.
    assert not _identity.holder_gone(f"{_identity.LEASE_HOST}:{child.pid}")
    # Another kernel, or another host: not ours to judge.
    assert not _identity.holder_gone(f"{_identity.LEASE_HOST}:{child.pid}/0123456789ab")
    assert not _identity.holder_gone(f"elsewhere:{child.pid}/{me.kernel}")
    for junk in (None, 17, "", "host", "host:x/y", f"{_identity.LEASE_HOST}:-1/{me.kernel}"):
        assert not _identity.holder_gone(junk)


def test_the_holder_names_host_pid_and_kernel():
    me = _identity.me()
    assert me.kernel and len(me.kernel) == 12
    assert me.holder == f"{socket.gethostname()}:{os.getpid()}/{me.kernel}"
