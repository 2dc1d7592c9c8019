"""Workers on two "hosts" share one tracker: two bindfs mounts of one
directory, whose flocks do not see each other (``tests/test_two_hosts.py``
says why that stands for two NFS clients). With ``lock="auto"`` a tracker
opened through a FUSE mount takes the soft lock, and claims made through
one mount exclude claims made through the other.

Needs bindfs and FUSE (``.ci/run`` installs them); fails, never skips,
when it cannot mount.
"""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest
from conftest import child_env, spawn_python
from test_tracker_processes import CLAIMER, WORKER, make_tracker, runs_in
from test_two_hosts import hosts  # noqa: F401  (the fixture)

from tastypy import Tracker


def start(path, out, start_at, n, *, lease=3600, until_done=False, fresh=False, env=None):
    args = (path, out, start_at, lease, n, int(until_done), 0) + (1,) * fresh
    proc = spawn_python(WORKER, *args, env=env, stdin=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def finish(procs) -> None:
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]


def test_the_automatic_lock_is_the_soft_one_on_both_mounts(hosts):  # noqa: F811
    src, a, b = hosts
    for mount in (a, b):
        with Tracker(mount / "jobs.tracker") as tracker:
            mode = tracker._store._lock.mode
            assert mode == "soft", (
                f"lock='auto' chose {mode!r} on the FUSE mount {mount}: claims through two "
                "mounts would not exclude each other"
            )


def make_parted(path, n: int, shards: int | None) -> list[str]:
    """A tracker of ``n`` tasks, in ``shards`` parts if given (each part a
    store with its own soft lock), made through one mount."""
    if not shards:
        return make_tracker(path, n)
    keys = [f"k{i:05d}" for i in range(n)]
    with Tracker(path, shards=shards) as tracker:
        tracker.add_many(keys)
        assert tracker.parts == shards
    return keys


@pytest.mark.parametrize(
    "fresh, shards",
    [(False, None), (True, None), (False, 4)],
    ids=["made-before", "made-by-the-workers", "in-4-parts"],
)
def test_workers_on_two_hosts_run_every_task_exactly_once(hosts, tmp_path, fresh, shards):  # noqa: F811
    # made-by-the-workers: no tracker yet; all open it at once, through
    # both mounts, and add every key if absent before running them.
    # in-4-parts: the workers open by path a tracker made in 4 parts.
    src, a, b = hosts
    n = 400
    keys = [f"k{i:05d}" for i in range(n)] if fresh else make_parted(a / "jobs.tracker", n, shards)
    procs = []
    try:
        for i, mount in enumerate((a, b, a, b)):
            out = tmp_path / f"{mount.name}-{i}.txt"
            procs.append(start(mount / "jobs.tracker", out, i * n // 4, n, fresh=fresh))
        finish(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=60)
    runs = runs_in(sorted(tmp_path.glob("host-*.txt")))
    counts = Counter(key for key, _ in runs)
    assert sorted(counts) == keys, "some task never ran"
    assert [k for k, c in counts.items() if c > 1] == [], "some task ran on both hosts"
    ran_on = {
        path.name.split("-")[1] for path in tmp_path.glob("host-*.txt") if path.stat().st_size
    }
    assert ran_on == {"a", "b"}, "one host did all the work: the test proves nothing"
    with Tracker(b / "jobs.tracker") as tracker:
        assert tracker.num_done() == n
        assert all(tracker.tries(k) == 1 for k in keys)
        assert getattr(tracker, "parts", None) == shards or not shards


@pytest.mark.parametrize("shards", [None, 3], ids=["one-store", "in-3-parts"])
def test_a_worker_killed_on_one_host_is_taken_over_on_the_other(hosts, tmp_path, shards):  # noqa: F811
    src, a, b = hosts
    n = 60
    make_parted(a / "jobs.tracker", n, shards)
    env = child_env(TASTYPY_HOST="host-a")
    claimer = spawn_python(CLAIMER, a / "jobs.tracker", tmp_path / "claimed.txt", 4, 2.0, env=env)
    try:
        assert claimer.stdout.readline().strip() == "ready", claimer.stderr.read()
    finally:
        claimer.kill()
        claimer.communicate(timeout=60)
    claimed = dict(line.split() for line in (tmp_path / "claimed.txt").read_text().splitlines())
    worker = start(b / "jobs.tracker", tmp_path / "b.txt", 0, n, until_done=True)
    finish([worker])
    runs = runs_in([tmp_path / "b.txt"])
    assert sorted(key for key, _ in runs) == [f"k{i:05d}" for i in range(n)]
    for key, when in runs:
        if key in claimed:
            assert when >= float(claimed[key]) - 0.01, "taken before the lease ended"
    with Tracker(b / "jobs.tracker") as tracker:
        assert all(tracker.tries(key) == 2 for key in claimed)
