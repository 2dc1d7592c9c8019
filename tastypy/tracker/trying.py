""":meth:`try_it`: whether one task runs now, decided in one transaction on
what every process wrote, the try counted and the task leased to this
process in the same write.
"""

from __future__ import annotations

from typing import Any

from tastypy import records
from tastypy._identity import holder_gone
from tastypy.codec import check_key
from tastypy.pod import _CHANGED, _MISSING
from tastypy.tracker import _common
from tastypy.tracker._common import _check_span, _time


class TryingMixin:
    """:meth:`try_it`: one task claimed, its try counted."""

    def try_it(self, key: Any, *, lease: float | None = None) -> bool:
        """Claim a task for this process now, and if so count the try.

        Adds ``key`` if it is not there. Returns False if the task is done,
        aborted, was tried ``max_tries`` times, or is leased to another
        process; otherwise counts one try, leases the task to this process
        for ``lease`` seconds (default: the tracker's :attr:`lease`, two
        minutes, renewed by the heartbeat) and returns True. With
        :attr:`redo_after`, a task done that long ago (by its ``_done_at``)
        is to do again: True starts a new round (not done, one try). The
        check, the try and the lease are decided under the directory lock
        after taking in what other processes wrote,
        so two processes never both get True for one task while its lease
        runs. :meth:`mark_done` (or an attempt that records an error) ends
        the lease.

        Before returning True it writes every unsynced change to the journal
        (without fsync), so if the task then kills the process, its try is
        counted and everything marked done before it stays done.
        """
        return self._try(key, True, False, None, lease)

    def _try(
        self,
        key: Any,
        add: bool,
        allow_aborted: bool,
        started: str | None = None,
        lease: float | None = None,
    ) -> bool:
        """The one place that decides whether ``key`` is tried now and counts
        the try: a transaction (:meth:`_transact`) whose decision is
        :meth:`_decide_try`, always on what is on disk: what this process
        knew of the task may be stale (another process since ended the lease
        it saw, or gave tries back with ``tastypy retry``). Granted or not,
        the try writes every change made before it: a worker whose tries
        are all refused (the rest of the tasks done by others) must still
        write its last done mark, before that task's lease runs out."""
        if self._closed:
            self._refuse_closed()
        span = self._lease if lease is None else _check_span(lease, "lease")
        if key not in self._d:
            if not add:
                # Perhaps added by another process (the decision takes in
                # its record of the key anyway).
                if self._backlog:
                    self._take_key(key, (key,))
                if key not in self._d:
                    raise self._missing(key)
            t = type(key)
            if t is not str and t is not int:
                check_key(key)
        return self._transact(
            self._decide_try, (key,), args=(key, add, allow_aborted, started, span)
        )

    def _may_run(self, key: Any, rec: Any, allow_aborted: bool, now: float | None = None) -> bool:
        """The run rule (:func:`records.may_run`) for ``key``'s record as this
        process knows it, leases included, a damaged record repaired first
        (or refused with an error saying what is wrong)."""
        if key in self._lent:
            self._settle_key(key, rec)
        if not records.complete(rec):
            rec = self._repair(key, rec)
        if now is None:
            now = self._clock()
        redo = now - self._redo_after if self._redo_after else None
        return records.may_run(
            rec, self._max_tries, allow_aborted, now, _common._me, holder_gone, redo
        )

    def _decide_try(
        self, key: Any, add: bool, allow_aborted: bool, started: str | None, span: float
    ) -> bool:
        """try_it's decision, on what this process knows (under the lock: on
        what is on disk)."""
        data = self._d
        if self._backlog or self._stale:
            data = self._known(key)
        rec = data.get(key)
        new = rec is None
        if new:
            if not add:
                return False  # deleted by another process meanwhile
            rec = data[key] = {"_done": False, "_tries": 0, "_aborted": False}
        elif not self._may_run(key, rec, allow_aborted):
            return False
        self._grant(key, rec, _time() + self._clock_offset + span, started, new)
        return True

    def _grant(self, key: Any, rec: dict, until: float, started: str | None, new: bool) -> None:
        """Count a try of ``key`` and lease it to this process until ``until``."""
        dirty = self._dirty
        granted = self._granted
        undo = self._undo
        if undo is not None:
            saved = None if new else rec.copy()
            undo.append((key, rec, saved, dirty.get(key, _MISSING), granted.get(key, _MISSING)))
        tries = rec["_tries"]
        if rec["_done"]:
            # Due again (redo_after): a new round, not done until it ends
            # well, its tries counted afresh; _done_at stays (when last done).
            rec["_done"] = False
            self._n_done -= 1
            if tries:
                self._n_tried -= 1
            tries = 0
        rec["_tries"] = tries + 1
        if not tries:
            self._n_tried += 1
        rec["_lease_until"] = until
        rec["_holder"] = _common._me
        granted[key] = until
        if started is not None:
            rec["_started"] = started
            rec.pop("_ended", None)
        dirty[key] = _CHANGED
        index = self._lease_index
        if index is not None:
            index[key] = None
