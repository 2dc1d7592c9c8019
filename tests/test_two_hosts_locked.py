"""``locked()`` on two hosts, simulated as two FUSE mounts of one directory
(see ``tests/test_two_hosts.py`` for the rig and why it simulates two NFS
clients): a flock through one mount does not exclude the other, so the block
is atomic only because ``lock="auto"`` takes the soft lock there."""

from __future__ import annotations

import pytest
import sharedfs
from conftest import spawn_python

import tastypy


@pytest.fixture
def hosts(tmp_path):
    """(SRC, MNT_A, MNT_B): one directory and two FUSE mounts of it, caches off."""
    try:
        with sharedfs.bindfs_rig(tmp_path, coherent=True) as rig:
            yield rig.source, rig.mounts[0], rig.mounts[1]
    except sharedfs.RigError as exc:
        pytest.fail(str(exc))


# Adds 1 to a tracker's tries of "k" and to a POD's "n", `rounds` times each,
# read-modify-write inside locked().
ADDER = """
import sys
import tastypy

tracker_path, pod_path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
tracker = tastypy.Tracker(tracker_path, lock_timeout=120)
pod = tastypy.POD(pod_path, lock_timeout=120)
assert tracker._store._lock.mode == "soft" and pod._store._lock.mode == "soft"
for _ in range(rounds):
    with tracker.locked():
        tracker.increment_tries("k")
    with pod.locked():
        pod["n"] += 1
tracker.close()
pod.close()
print("ok", flush=True)
"""


def test_locked_blocks_on_two_hosts_lose_no_increment(hosts):
    src, a, b = hosts
    # Made on the file server, where the disk is local: the shared store is
    # asked for (on a mount it is the default).
    with tastypy.Tracker(src / "t", storage="shared") as tracker:
        tracker.add("k")
    with tastypy.POD(src / "p", storage="shared") as pod:
        pod["n"] = 0
    per_mount, rounds = 2, 30
    procs = [
        spawn_python(ADDER, mount / "t", mount / "p", rounds)
        for mount in (a, b)
        for _ in range(per_mount)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err
    with tastypy.Tracker(src / "t") as tracker:
        assert tracker.tries("k") == 2 * per_mount * rounds
    with tastypy.POD(src / "p") as pod:
        assert pod["n"] == 2 * per_mount * rounds
