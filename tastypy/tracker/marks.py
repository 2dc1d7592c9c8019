"""Adding tasks and marking them: :meth:`add` and its kin, which yield to
others' records until written, and the per-key marks (:meth:`mark_done`,
:meth:`abort`, :meth:`tries`...), on records repaired if damaged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tastypy import records
from tastypy.codec import check_key
from tastypy.errors import DuplicateKeyError, InvalidValueError
from tastypy.pod import _CHANGED
from tastypy.tracker import _common
from tastypy.tracker._common import _DEFAULTS, _gone_memo
from tastypy.tracker.counters import _contrib
from tastypy.tracker.leases import _key_list


class MarksMixin:
    """Adding tasks, and marking them done, aborted, tried."""

    def _init_marks(self) -> None:
        """Start with no record added."""
        # Records added here (add, add_if_absent, add_many...) and not yet
        # written, by key: until written, each yields to any record of its
        # key another process writes (see _add_new).
        self._added: dict = {}

    # -- a record to change ------------------------------------------------------

    def _missing(self, key: Any) -> KeyError:
        return KeyError(
            f"{key!r} is not in the tracker {self.path}; add it first with "
            f"tracker.add({key!r}) (try_it adds it by itself)"
        )

    def _rec(self, key: Any) -> dict:
        """The record of ``key`` for a method to change in place."""
        try:
            rec = self._known(key)[key]
        except KeyError:
            raise self._missing(key) from None
        if self._closed:
            self._refuse_closed()
        if key in self._lent:
            self._settle_key(key, rec)
        if (
            not records.is_record(rec)
            or "_tries" not in rec
            or "_done" not in rec
            or ("_aborted" not in rec)
        ):
            rec = self._repair(key, rec)
        return rec

    def _repair(self, key: Any, rec: Any) -> dict:
        """A record damaged in place or by hand: fill in missing fields."""
        if not records.is_record(rec):
            raise InvalidValueError(
                f"the value of key {key!r} in {self.path} is not a task record but "
                f"{type(rec).__name__} ({rec!r:.60}); set tracker[{key!r}] = {{}} to reset it."
            )
        c_old = _contrib(rec)
        for field, default in _DEFAULTS:
            rec.setdefault(field, default)
        tries = rec["_tries"]
        if type(tries) is not int or tries < 0:
            raise InvalidValueError(
                f"the record of key {key!r} in {self.path} has _tries={tries!r}; set "
                f"tracker[{key!r}]['_tries'] to a non-negative int."
            )
        self._shift(c_old, _contrib(rec))
        # Marked, not _touch-ed: this may run inside a write that holds the
        # lock, where a sync must not start.
        self._dirty[key] = _CHANGED
        return rec

    def _touch(self, key: Any) -> None:
        """Note that a method changed the record of ``key`` in place."""
        dirty = self._dirty
        dirty[key] = _CHANGED
        if len(dirty) + len(self._pending_keys) >= self.sync_at and not self._held:
            self.sync()

    # -- adding tasks -----------------------------------------------------------

    def add(self, key: Any) -> None:
        """Add a task not done, never tried, not aborted.

        Raises :class:`~tastypy.DuplicateKeyError` if ``key`` is there already.
        """
        if key in self._data:
            raise DuplicateKeyError(
                f"{key!r} is already in the tracker {self.path}; use add_if_absent to skip "
                "keys that are there."
            )
        self._add_new(key)

    def add_if_absent(self, key: Any) -> None:
        """Like :meth:`add`, but a key already there is left alone."""
        if key not in self._data:
            self._add_new(key)

    def _add_new(self, key: Any) -> None:
        """Add a record not done, never tried, not aborted for ``key``, which
        is not here. It is written like any change, but until then it yields
        to any record of ``key`` another process writes (taken in before
        every write of this process): workers that add the same keys at
        once add each only once, and never over another's claim or done
        mark. A record changed here since it was added no longer yields."""
        if self._closed:
            self._refuse_closed()
        t = type(key)
        if t is not str and t is not int:
            check_key(key)
        rec = {"_done": False, "_tries": 0, "_aborted": False}
        # Not a dirty mark: written from _added (see _dirty_records), so a
        # million adds leave no million deleted entries in _dirty, which
        # every later write would walk.
        self._d[key] = rec
        self._added[key] = rec
        if len(self._added) + len(self._dirty) >= self.sync_at and not self._held:
            self.sync()

    def _unsynced(self) -> bool:
        return bool(self._dirty or self._pending or self._added)

    def _num_dirty(self) -> int:
        return len(self._dirty) + len(self._pending_keys) + len(self._added)

    def dirty(self) -> set:
        return super().dirty() | set(self._added)

    def add_many(self, keys: Iterable) -> None:
        """Add every key; if any is there already (or repeated), raise
        :class:`~tastypy.DuplicateKeyError` and add none."""
        keys = list(keys)
        seen: set = set()
        data = self._data
        for key in keys:
            if key in data or key in seen:
                raise DuplicateKeyError(
                    f"{key!r} is already in the tracker {self.path}"
                    + (" (twice in the keys given)" if key in seen else "")
                    + "; nothing was added. Use add_many_if_absent to skip such keys."
                )
            seen.add(key)
        with self.holding():
            for key in keys:
                self._add_new(key)

    def add_many_if_absent(self, keys: Iterable) -> None:
        """Add every key that is not there yet."""
        data = self._data
        with self.holding():
            for key in keys:
                if key not in data:
                    self._add_new(key)

    # -- marks --------------------------------------------------------------------

    def _done_now(self) -> float:
        """The time to record in ``_done_at``: now, on the lease clock (this
        host's, corrected to the shared filesystem's), to the millisecond
        (cut, not rounded: ``round(t, 3)`` costs three times as much)."""
        return int(self._clock() * 1000) / 1000

    def mark_done(self, key: Any) -> None:
        """Mark the task done now: ``_done_at`` (seconds since the epoch)
        records when, also for a task done before (doloop's ``did``: it
        was updated again). Its lease ends (unless another worker took the
        task over after this one's lease ran out: that lease stays). It is
        written at the next try, sync or exit."""
        # Under the sync lock: another thread taking in a newer record of
        # the task meanwhile would leave the done mark on a copy dropped.
        with self._sync_lock:
            if self._backlog:
                self._take_key(key)
            rec = self._d.get(key)
            if type(rec) is not dict or "_done" not in rec or self._closed or key in self._lent:
                rec = self._rec(key)
            lost = False
            if "_lease_until" in rec and not self._end_lease(key, rec):
                # Taken over while this process ran late: say so, once.
                lost = self._granted.pop(key, None) is not None
            if not rec["_done"]:
                rec["_done"] = True
                self._n_done += 1
            rec["_done_at"] = self._done_now()
            dirty = self._dirty
            dirty[key] = _CHANGED
            if lost:
                self._warn_lost(key, rec.get("_holder"))
        if len(dirty) + len(self._pending_keys) >= self.sync_at and not self._held:
            self.sync()

    def retry(self, keys: Iterable) -> list:
        """Give tasks their tries back, so that they run again: each one's
        ``_tries`` goes back to 0 (its ``_error``, the last error, stays
        until it runs). For failed tasks (``tracker.retry(tracker.failed_keys())``,
        ``tastypy retry PATH --failed``) after the cause is fixed. Done and
        aborted tasks, tasks never tried and tasks another live process
        holds now are left alone. Decided under the lock after taking in
        what others wrote. Returns the keys given back; raises ``KeyError``,
        changing nothing, if a key is not in the tracker."""
        keys = _key_list(keys)

        def decide() -> list:
            data = self._data
            for key in keys:
                if key not in data:
                    raise self._missing(key)
            now = self._clock()
            gone = _gone_memo()
            given = []
            for key in keys:
                rec = data.get(key)
                if (
                    not records.complete(rec)
                    or rec["_done"]
                    or rec["_aborted"]
                    or not rec["_tries"]
                    or records.lease_runs(rec, _common._me, now, gone)
                ):
                    continue
                if key in self._lent:
                    self._settle_key(key, rec)
                c_old = _contrib(rec)
                rec["_tries"] = 0
                self._shift(c_old, _contrib(rec))
                self._dirty[key] = _CHANGED
                given.append(key)
            self._requeue(given, at_head=False)
            return given

        return self._transact(decide)

    def mark_not_done(self, key: Any) -> None:
        """Mark the task not done, as if it never was: its ``_done_at`` goes
        too (a task due again with ``redo_after`` keeps it while it runs)."""
        with self._sync_lock:  # see mark_done
            rec = self._rec(key)
            if rec["_done"] or "_done_at" in rec:
                if rec["_done"]:
                    rec["_done"] = False
                    self._n_done -= 1
                rec.pop("_done_at", None)
                self._touch(key)

    def tries(self, key: Any) -> int:
        """How many times the task was tried."""
        return self._rec(key)["_tries"]

    def abort(self, key: Any) -> None:
        """Mark the task aborted: it is skipped unless ``allow_aborted=True``."""
        with self._sync_lock:  # see mark_done
            rec = self._rec(key)
            if not rec["_aborted"]:
                rec["_aborted"] = True
                self._n_aborted += 1
                self._touch(key)

    def unabort(self, key: Any) -> None:
        """Mark the task not aborted."""
        with self._sync_lock:  # see mark_done
            rec = self._rec(key)
            if rec["_aborted"]:
                rec["_aborted"] = False
                self._n_aborted -= 1
                self._touch(key)

    def aborted(self, key: Any) -> bool:
        """Whether the task was aborted (``KeyError`` if it is not there)."""
        return bool(self._rec(key)["_aborted"])

    def done(self, key: Any) -> bool:
        """Whether the task is done; False for a key that is not there."""
        rec = self._known(key).get(key)
        return records.is_record(rec) and bool(rec.get("_done"))
