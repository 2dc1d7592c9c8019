""":meth:`try_it`: whether one task runs now, decided under the lock on
what every process wrote, the try counted and the task leased to this
process in the same write. Its routes, fastest first: the lean one
(:meth:`_try_alone`), the quick write, the appender's session, the
ordinary transaction.
"""

from __future__ import annotations

from typing import Any

from tastypy import _exit, records
from tastypy._identity import holder_gone
from tastypy.codec import check_key, record_line
from tastypy.pod import _CHANGED, _MISSING
from tastypy.storage.tail import TailAppender
from tastypy.tracker import _common
from tastypy.tracker._common import _CONFIRM_AT, _check_span, _time, _until
from tastypy.tracker.transact import _framed


class _Ordinary(Exception):
    """The quick path cannot write this: the ordinary path must."""


class TryingMixin:
    """:meth:`try_it` and its routes: one task claimed, its try counted."""

    # -- deciding whether a task runs now, and claiming it -------------------------

    def try_it(self, key: Any, *, lease: float | None = None) -> bool:
        """Claim a task for this process now, and if so count the try.

        Adds ``key`` if it is not there. Returns False if the task is done,
        aborted, was tried ``max_tries`` times, or is leased to another
        process; otherwise counts one try, leases the task to this process
        for ``lease`` seconds (default: the tracker's :attr:`lease`, one
        hour) and returns True. The check, the try and the lease are decided
        under the directory lock after taking in what other processes wrote,
        so two processes never both get True for one task while its lease
        runs. :meth:`mark_done` (or an attempt that records an error) ends
        the lease.

        Before returning True it writes every unsynced change to the journal
        (without fsync), so if the task then kills the process, its try is
        counted and everything marked done before it stays done.
        """
        if lease is None and not self._held:
            granted = self._try_alone(key)
            if granted is not None:
                return granted
        return self._try(key, True, False, None, lease)

    def _try_alone(self, key: Any) -> bool | None:
        """:meth:`try_it` in its most common case, written out lean: a
        task never tried or tried and left without a lease, decided on what
        this process knows of it (others' records of it taken in first),
        written with the changes waiting before it in one append, under the
        lock, after whatever others appended meanwhile unless that mentions
        a key written (then what this process knew still holds). The
        decision and the write are made in one hold of the sync lock: a
        thread must not grant on what it knew before another thread took in
        another process's claim. What others appended goes to the backlog.
        None, with nothing changed, in any other case: then :meth:`_try`
        decides (a W7 or W5 loop spends most of its time here; see
        ``docs/benchmarks.md``)."""
        tail = self._tail
        if (
            tail is None
            or not tail.enabled
            or self._closed
            or self._pending
            or self._added
            or self._since_durable + 1 >= self.sync_at
            or len(self._unconfirmed) >= _CONFIRM_AT
        ):
            return None
        t = type(key)
        if t is not str and t is not int:
            return None
        with self._sync_lock:
            main = _exit.enter()
            try:
                if self._backlog:
                    self._take_key(key, (key,))
                rec = self._d.get(key)
                if rec is not None:
                    if not records.may_run(rec, self._max_tries):
                        return False if records.complete(rec) else None
                    if (
                        key in self._lent
                        or key in self._dirty
                        or "_lease_until" in rec
                        or "_holder" in rec
                        or not records.complete(rec)
                    ):
                        return None
                return self._claim_alone(tail, key, rec)
            finally:
                if main:
                    _exit.leave()

    def _claim_alone(self, tail: TailAppender, key: Any, rec: dict | None) -> bool | None:
        """The write of :meth:`_try_alone` (the caller holds the sync lock)."""
        data = self._d
        dirty = self._dirty
        waiting = self._dirty_records(data)
        if waiting is None:
            return None  # a value JSON cannot hold: the ordinary sync names it
        lines, written_keys, handled = waiting
        count = len(lines)
        written_keys.append(key)
        until = _time() + (self._clock_offset + self._lease)
        if rec is None:
            tries = 0
            claimed = {"_done": False, "_tries": 1, "_aborted": False, "_lease_until": until}
            claimed["_holder"] = _common._me
        else:
            # Changed in place, and taken back if it is not written.
            tries = rec["_tries"]
            rec["_tries"] = tries + 1
            rec["_lease_until"] = until
            rec["_holder"] = _common._me
            claimed = None
        written = False
        try:
            try:
                lines.append(record_line(key, rec if claimed is None else claimed))
            except (TypeError, ValueError):
                return None  # the ordinary sync names it
            count += 1
            batch = _framed(lines, count, self._store.gzipped)
            chunk = tail.append_after(batch, count, written_keys)
            written = chunk is not None
        finally:
            if not written and claimed is None:
                rec["_tries"] = tries  # type: ignore[index]
                del rec["_lease_until"]  # type: ignore[union-attr]
                del rec["_holder"]  # type: ignore[union-attr]
        if not written:
            self._contended = True
            return None
        # Written: now it holds here too.
        if claimed is not None:
            data[key] = claimed
        if not tries:
            self._n_tried += 1
        self._since_durable += 1
        self._granted[key] = until
        if self._lease_index is not None:
            self._lease_index[key] = None
        unconfirmed = self._unconfirmed
        for other, marker in handled:
            unconfirmed.append(other)
            if dirty.get(other, _MISSING) is marker:
                del dirty[other]
        unconfirmed.append(key)
        self._took_chunk(tail, chunk, written_keys)
        return True

    def _try(
        self,
        key: Any,
        add: bool,
        allow_aborted: bool,
        started: str | None = None,
        lease: float | None = None,
    ) -> bool:
        """The one place that decides whether ``key`` is tried now and counts
        the try. Under the sync lock from the first look at the record to
        the write: see :meth:`_try_alone`."""
        if self._closed:
            self._refuse_closed()
        span = self._lease if lease is None else _check_span(lease, "lease")
        with self._sync_lock:
            if self._backlog:
                self._take_key(key, (key,))
            rec = self._d.get(key)
            if rec is None:
                if not add:
                    raise self._missing(key)
                t = type(key)
                if t is not str and t is not int:
                    check_key(key)
            elif not self._may_run(key, rec, allow_aborted):
                # What this process knows already says no: no need to ask the disk.
                return False
            return self._try_locked(key, add, allow_aborted, started, span)

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
        return records.may_run(rec, self._max_tries, allow_aborted, now, _common._me, holder_gone)

    def _try_locked(
        self, key: Any, add: bool, allow_aborted: bool, started: str | None, span: float
    ) -> bool:
        """:meth:`_try`'s routes, the sync lock held: the quick write on what
        this process knows, else the session, else the ordinary transaction."""

        def decide() -> bool:
            return self._decide_try(key, add, allow_aborted, started, span)

        tail = self._tail
        if (
            self._held
            or tail is None
            or not tail.enabled
            or self._since_durable + 1 >= self.sync_at
            or len(self._unconfirmed) >= _CONFIRM_AT
        ):
            return self._transact(decide, (key,))
        self._since_durable += 1
        main = _exit.enter()
        try:
            granted = self._try_quick(tail, key, allow_aborted, started, span)
            if granted is not None:
                return granted
            # The full path: take in what others wrote, then what came
            # meanwhile under the lock, then decide.
            done, granted = self._session(tail, decide, (key,))
            if done:
                return granted
        except _Ordinary:
            pass
        finally:
            if main:
                _exit.leave()
        return self._transact(decide, (key,), durable=False)

    def _try_quick(
        self, tail: TailAppender, key: Any, allow_aborted: bool, started: str | None, span: float
    ) -> bool | None:
        """Grant ``key`` on what this process knows (after taking in what
        others wrote, if they write too) and append it with every change
        waiting; the appender writes only if nothing others appended since
        mentions a key written, which keeps the decision right. None, with
        nothing changed, when the session must decide; raises
        :class:`_Ordinary` when the ordinary path must write."""
        if self._added:
            return None  # adds yield first to others' records: the session takes those in
        if self._contended:
            self._catch_up((key,))
        data = self._d
        rec = data.get(key)
        new = rec is None
        if new:
            rec = data[key] = {"_done": False, "_tries": 0, "_aborted": False}
        elif not records.complete(rec):
            return None
        elif not self._may_run(key, rec, allow_aborted):
            return False
        undo = self._undo = []
        written = False
        try:
            self._grant(key, rec, _until(self._clock_offset, span), started, new)
            written = self._quick_write(tail, key)
        finally:
            self._undo = None
            if not written:
                # Taken back whole, the dirty mark too: a stale copy left
                # marked would be written over what others write meanwhile.
                self._rollback(undo)
        if written:
            return True
        if written is None:
            raise _Ordinary
        self._contended = True
        return None

    def _decide_try(
        self, key: Any, add: bool, allow_aborted: bool, started: str | None, span: float
    ) -> bool:
        """try_it's decision, on what this process knows (under the lock: on
        what is on disk)."""
        data = self._known(key)
        rec = data.get(key)
        new = rec is None
        if new:
            if not add:
                return False  # deleted by another process meanwhile
            rec = data[key] = {"_done": False, "_tries": 0, "_aborted": False}
        elif not self._may_run(key, rec, allow_aborted):
            return False
        self._grant(key, rec, _until(self._clock_offset, span), started, new)
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
