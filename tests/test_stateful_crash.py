"""A Hypothesis state machine of the POD against a model, with crashes.

Besides sets, deletes, nested changes, syncs, reverts, reopens and
compactions, a rule crashes the "process" at a named fault point of a sync
or of a compaction: the fault hook raises an exception no code of ours
catches (as a SIGKILL would leave things), the handle is abandoned without
any clean-up sync, and a fresh handle opens the directory. It must hold
either everything up to the last sync or also the batch being written —
never half of it — and a later writer must carry on from there. The
real-process version of each point is in test_crash_points.py.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule
from test_pod import _SETTINGS, PODMachine, on_disk

from tastypy import POD, _exit
from tastypy._faults import POINTS


class SimulatedCrash(BaseException):
    """Raised by the fault hook; like a kill, nothing of ours handles it."""


#: Points of one sync, and whether the batch is on disk when they fire.
SYNC_POINTS = {
    "before-truncate": False,
    "after-truncate": False,
    "before-write": False,
    "mid-write": False,
    "after-write": True,
    "after-fsync": True,
}
COMPACT_POINTS = tuple(p for p in POINTS if p.startswith(("compact-", "snapshot-", "manifest-")))


def crash_at(point: str):
    def hook(at: str) -> None:
        if at == point:
            raise SimulatedCrash(point)

    return hook


class CrashingPODMachine(PODMachine):
    def _abandon(self) -> None:
        # The process is gone: no exit sync, no __del__ sync, its lock freed.
        pod = self.pod
        pod._closed = True
        _exit.unregister(pod)
        pod._store._lock.close()

    def _reopen_after_crash(self) -> dict:
        self._abandon()
        self.pod = POD(self.dir / "p", sync_at=self.SYNC_AT)
        return dict(self.pod.copy())

    @rule(point=st.sampled_from(sorted(SYNC_POINTS)))
    def crash_during_sync(self, point):
        self.pod._store.fault = crash_at(point)
        try:
            self.pod.sync()
        except SimulatedCrash:
            crashed = True
        else:
            crashed = False  # nothing to write: the point was never reached
        after = copy.deepcopy(self.model)
        if crashed:
            found = self._reopen_after_crash()
            if point == "before-truncate" or point == "after-truncate":
                # Only reached when a torn tail was there to cut: before.
                assert found == self.synced
            else:
                assert found == (after if SYNC_POINTS[point] else self.synced)
            self.model = copy.deepcopy(found)
        else:
            self.pod._store.fault = lambda at: None
        self.synced = copy.deepcopy(self.model)
        assert on_disk(self.dir / "p") == self.model

    @precondition(lambda self: len(self.model) > 0)
    @rule(point=st.sampled_from(COMPACT_POINTS))
    def crash_during_compaction(self, point):
        self.pod.sync()
        self.synced = copy.deepcopy(self.model)
        self.pod._store.fault = crash_at(point)
        try:
            self.pod.compact()
        except SimulatedCrash:
            # Compaction never changes the content: old or new generation,
            # a fresh handle reads what the last sync wrote.
            assert self._reopen_after_crash() == self.synced
        else:
            self.pod._store.fault = lambda at: None
        assert on_disk(self.dir / "p") == self.synced


CrashingPODMachine.TestCase.settings = _SETTINGS
test_pod_with_crashes_against_a_model = CrashingPODMachine.TestCase


@pytest.mark.parametrize("point", sorted(SYNC_POINTS))
def test_every_sync_point_is_known_to_the_fault_module(point):
    assert point in POINTS
