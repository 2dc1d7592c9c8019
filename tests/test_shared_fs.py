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

import pytest
import sharedfs
from sharedfs_work import run_pod, run_tracker

#: The issue's scenario: 600 tasks, four workers.
TASKS = 600
#: POD writers: rounds of the scenario, each on a new POD. On the store that
#: trusts a cached size, a round loses keys or crashes a writer in about one
#: run in three on GlusterFS and one in ten on bindfs: three rounds catch it
#: more often, for a few seconds.
POD_ROUNDS = 3


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


def _logs(tmp_path: Path, name: str = "logs") -> Path:
    logs = tmp_path / name
    logs.mkdir()
    return logs


def test_workers_on_two_hosts_run_every_task_once_and_leave_files_that_parse(shared, tmp_path):
    outcome = run_tracker(shared, _logs(tmp_path), tasks=TASKS)
    assert outcome.ok, outcome.report()
    assert outcome.killed_mid_run, "the worker to kill finished first: nothing was tested"


def test_pod_writers_on_two_hosts_lose_no_key_of_a_finished_sync(shared, tmp_path):
    for round_ in range(POD_ROUNDS):
        name = f"round{round_}"
        (shared[0] / name).mkdir()
        dirs = (shared[0] / name, shared[1] / name)
        outcome = run_pod(dirs, _logs(tmp_path, name), keys=300, batches=100)
        assert outcome.ok, f"{name}:\n{outcome.report()}"
        assert outcome.killed_mid_run, "the worker to kill finished first: nothing was tested"
