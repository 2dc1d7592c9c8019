"""Workers on two hosts share a tracker or a POD on a filesystem whose
clients cache what they know of a file: GlusterFS mounted twice with its
stock options, and two bindfs mounts with their default FUSE caches (an
attribute cache of one second). A client may answer ``fstat`` with a size
another client has since appended past, so a store that trusts it appends
over another host's batch (issue 10).

The rigs and the workers are in ``tests/sharedfs.py`` and
``tests/sharedfs_work.py``. Needs root, GlusterFS (server and client) and
bindfs (``.ci/run`` installs them); fails, never skips, when a rig cannot be
set up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
import sharedfs
from sharedfs_work import run_pod, run_tracker

#: The issue's scenario: 600 tasks, four workers.
TASKS = 600
#: Each test runs its scenario this many times, each on a new tracker or
#: POD. On the store that trusts a cached size, one run went wrong on
#: GlusterFS in about half the runs (in the others the workers of one mount
#: waited at the lock until the other's were done), a POD run in about one
#: in three there and one in ten on bindfs: three rounds catch it more often.
ROUNDS = 3
#: Rounds of the tracker scenario on a parted tracker (a part's store is the
#: same store, tested above; these check the layer over it).
PARTED_ROUNDS = 2


@pytest.fixture(scope="session")
def glusterfs(tmp_path_factory: pytest.TempPathFactory):
    """One GlusterFS volume for the session, mounted twice (setting up takes seconds)."""
    try:
        with sharedfs.glusterfs_rig(tmp_path_factory.mktemp("glusterfs")) as rig:
            yield rig
    except sharedfs.RigError as exc:
        pytest.fail(str(exc))


@pytest.fixture(params=["glusterfs", "bindfs-defaults"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """A new directory on the rig, as (host a's path, host b's path)."""
    fixture = "glusterfs" if request.param == "glusterfs" else "_bindfs_defaults"
    rig = request.getfixturevalue(fixture)
    return rig.subdir(re.sub(r"\W", "_", request.node.name))


@pytest.fixture
def _bindfs_defaults(tmp_path: Path):
    try:
        with sharedfs.bindfs_rig(tmp_path / "bindfs", coherent=False) as rig:
            yield rig
    except sharedfs.RigError as exc:
        pytest.fail(str(exc))


def rounds(shared: tuple[Path, Path], tmp_path: Path, count: int = ROUNDS) -> Iterator[tuple]:
    """(name, the round's directory as host a and b see it, a local directory for logs)."""
    for i in range(count):
        name = f"round{i}"
        (shared[0] / name).mkdir()
        (tmp_path / name).mkdir()
        yield name, (shared[0] / name, shared[1] / name), tmp_path / name


def test_workers_on_two_hosts_run_every_task_once_and_leave_files_that_parse(shared, tmp_path):
    for name, dirs, logs in rounds(shared, tmp_path):
        outcome = run_tracker(dirs, logs, tasks=TASKS)
        assert outcome.ok, f"{name}:\n{outcome.report()}"
        assert outcome.killed_mid_run, "every worker finished first: nothing was killed"


def test_workers_on_two_hosts_run_every_task_of_a_parted_tracker_once(shared, tmp_path):
    # The same on a tracker in 4 parts (each part a store with its own lock
    # and journal, and summaries beside them), and `tastypy check` on it.
    for name, dirs, logs in rounds(shared, tmp_path, PARTED_ROUNDS):
        outcome = run_tracker(dirs, logs, tasks=TASKS, shards=4)
        assert outcome.ok, f"{name}:\n{outcome.report()}"
        assert outcome.killed_mid_run, "every worker finished first: nothing was killed"
        assert "4 parts, 4 written" in outcome.check_output


def test_pod_writers_on_two_hosts_lose_no_key_of_a_finished_sync(shared, tmp_path):
    for name, dirs, logs in rounds(shared, tmp_path):
        outcome = run_pod(dirs, logs, keys=300, batches=100)
        assert outcome.ok, f"{name}:\n{outcome.report()}"
        assert outcome.killed_mid_run, "every worker finished first: nothing was killed"
