"""A randomized soak: a writer doing random sets, deletes, nested mutations,
syncs and compactions is SIGKILLed at random instants, over and over.

After every kill the POD is reopened and compared with a replay of the same
operations: it must equal the state after the last sync the writer saw
complete, or after the one it was in the middle of. Never anything else, and
always in insertion order.

One test kills a few dozen writers, another a few hundred (both run by
default: about three minutes together). ``TASTYPY_SOAK_KILLS=N`` sets the count
of the short one.
"""

from __future__ import annotations

import os
import random
import time

from crashkit import assert_clean, read_pod, soak_steps, spawn_child, states_after_syncs

import tastypy
from tastypy import _faults

STEPS_PER_RUN = 5000

WRITER = """
import os, sys
import tastypy
from crashkit import apply_op, soak_steps

path, seed, side = sys.argv[1], sys.argv[2], sys.argv[3]
pod = tastypy.POD(path, sync_at=10**9)
steps = soak_steps(seed, dict(pod.items()), int(sys.argv[4]))
log = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
print("ready", flush=True)
done = 0
for step in steps:
    if step[0] == "sync":
        pod.sync()
    elif step[0] == "compact":
        pod.compact()
    else:
        apply_op(pod, step)
        continue
    done += 1
    os.write(log, b"%d\\n" % done)
# Not a crash, but the end of the steps: leave without the exit sync, which
# would write the changes made after the last step's sync.
os._exit(0)
"""


def last_logged(side) -> int:
    try:
        lines = side.read_bytes().split()
    except FileNotFoundError:
        return 0
    return int(lines[-1]) if lines else 0


#: Points every run passes many times: a writer armed at one of them dies
#: there, mid-run, with no timer needed.
_SYNC_POINTS = ("before-write", "mid-write", "after-write", "after-fsync")


def _fault_for(run: int, rng: random.Random) -> tuple[str | None, bool]:
    """The fault armed in the writer, and whether a timer must kill it.

    One writer in three is only SIGKILLed by the timer; one also splits each
    batch in two writes (an armed hook that never fires), so the timer may
    land inside a batch; one is killed at a random hit of a fault point
    (with the timer as a backstop for points a run may not reach).
    """
    if run % 3 == 0:
        return None, True
    if run % 3 == 1:
        return "compact-after-delete:999999999", True
    point = rng.choice(_faults.POINTS)
    if point in _SYNC_POINTS:
        return f"{point}:{rng.randrange(1, 60)}", False
    if point in ("before-truncate", "after-truncate"):
        return point, True
    return f"{point}:{rng.randrange(1, 3)}", True


def soak(tmp_path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "pod"
    tastypy.POD(path).close()
    state: dict = {}
    for run in range(kills):
        run_seed = f"{seed}-{run}"
        side = tmp_path / f"synced-{run}.txt"
        fault, timer = _fault_for(run, rng)
        proc = spawn_child(WRITER, path, run_seed, side, STEPS_PER_RUN, fault=fault)
        # The writer says when its steps are ready; the kill lands in the run.
        assert proc.stdout.readline() == "ready\n", proc.communicate()[1]
        if timer:
            time.sleep(rng.uniform(0.0, 0.4))
            proc.kill()
        _, stderr = proc.communicate()
        if timer:
            assert proc.returncode in (0, -9), stderr
        else:
            assert proc.returncode == -9, stderr

        synced = last_logged(side)
        items = read_pod(path)
        steps = soak_steps(run_seed, state, STEPS_PER_RUN)
        allowed = states_after_syncs(steps, state, {synced, synced + 1})
        assert any(items == list(s.items()) for s in allowed.values()), (
            f"run {run_seed} ({fault}): after the kill the POD matches neither the state "
            f"after sync {synced} nor after the next one"
        )
        state = dict(items)
        if run % 10 == 9:
            report = tastypy.check(path)
            assert report.ok, str(report)
    with tastypy.POD(path) as pod:
        pod["after the soak"] = True
    assert read_pod(path) == [*state.items(), ("after the soak", True)]
    assert_clean(path)


def test_soak_random_kills(tmp_path):
    soak(tmp_path, int(os.environ.get("TASTYPY_SOAK_KILLS", "30")), seed=20260501)


def test_soak_random_kills_long(tmp_path):
    soak(tmp_path, 300, seed=1)
