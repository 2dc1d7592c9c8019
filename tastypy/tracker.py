"""ProgressTracker: a POD of task records, with tries, counters and crash-safe try loops.

Every value is a task record, a dict holding at least ``_done``, ``_tries``
and ``_aborted``; users attach anything else. :meth:`ProgressTracker.try_it`
counts a try and writes it to the journal (no fsync) before it returns, so a
task that kills its own process still has its try counted, and everything
marked done before it is still done. See ``docs/tracker.md`` and
``docs/survival.md``.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import orjson

from tastypy import _exit
from tastypy.codec import DUMP_OPTIONS, _has_nonfinite, check_key, dumps
from tastypy.errors import (
    DuplicateKeyError,
    InvalidArgumentError,
    InvalidValueError,
)
from tastypy.pod import _CHANGED, _MISSING, PersistentOrderedDict, _Setter
from tastypy.storage import journal
from tastypy.storage.tail import TailAppender

__all__ = ["ProgressTracker", "Tracker", "Task"]

log = logging.getLogger("tastypy")

_LINE_OPTIONS: Final = DUMP_OPTIONS | orjson.OPT_APPEND_NEWLINE

#: The fields every record has, with the value of a task never tried.
_DEFAULTS: Final = (("_done", False), ("_tries", 0), ("_aborted", False))

#: With a huge ``sync_at``, an ordinary sync (no fsync) still runs after
#: this many quick writes, to confirm they went to the live journal.
_CONFIRM_AT: Final = 10_000

#: Seconds between two lines of the plain progress display.
_PLAIN_INTERVAL: Final = 2.0

# A record's share of the counters, as bits: done, tried (at least once),
# aborted. Counters are sums of these over the records.
_DONE: Final = 1
_TRIED: Final = 2
_ABORTED: Final = 4


def _contrib(rec: Any) -> int:
    """The counter bits of one record (0 for anything that is not a record)."""
    try:
        return (
            (_DONE if rec["_done"] else 0)
            | (_TRIED if rec["_tries"] > 0 else 0)
            | (_ABORTED if rec["_aborted"] else 0)
        )
    except (KeyError, TypeError, IndexError):
        return _contrib_lenient(rec)


def _contrib_lenient(rec: Any) -> int:
    # A record damaged by hand or by a change in place: count what is there.
    if type(rec) is not dict:
        return 0
    tries = rec.get("_tries")
    tried = type(tries) in (int, float, bool) and tries > 0
    return (
        (_DONE if rec.get("_done") else 0)
        | (_TRIED if tried else 0)
        | (_ABORTED if rec.get("_aborted") else 0)
    )


def _check_max_tries(max_tries: Any) -> int:
    if max_tries is None:
        return 0
    if type(max_tries) is not int or max_tries < 0:
        raise InvalidArgumentError(
            f"max_tries must be a non-negative int (0 or None: no limit), got {max_tries!r}."
        )
    return max_tries


def _now() -> str:
    """The time now, UTC, ISO 8601 to the millisecond (sorts as text)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _check_record(key: Any, value: Any) -> None:
    """Refuse what cannot be a task record; fill in the fields it lacks."""
    if type(value) is not dict:
        raise InvalidValueError(
            f"the value for key {key!r} must be a dict (a task record), got "
            f"{type(value).__name__} ({value!r:.60}). Store results inside the record: "
            f"tracker[{key!r}]['result'] = ..."
        )
    tries = value.get("_tries", 0)
    if type(tries) is not int or tries < 0:
        raise InvalidValueError(
            f"the record for key {key!r} has _tries={tries!r}; it must be a non-negative int."
        )
    for field in ("_done", "_aborted"):
        flag = value.get(field, False)
        if type(flag) is not bool:
            raise InvalidValueError(
                f"the record for key {key!r} has {field}={flag!r}; it must be True or False."
            )
    if len(value) < 3 or "_done" not in value or "_tries" not in value or "_aborted" not in value:
        for field, default in _DEFAULTS:
            value.setdefault(field, default)


class ProgressTracker(PersistentOrderedDict):
    """A POD whose values are task records, for jobs that must resume after a crash.

    ``max_tries`` (0 or None: no limit) is how many times a task is tried
    before it counts as failed. The rest is as for
    :class:`~tastypy.PersistentOrderedDict`; the positional call of tastypy
    0.0.3, ``Tracker(path, max_tries, init, gzipped, file_size, sync_at,
    clone)``, is accepted.

    Example::

        >>> from tastypy import Tracker
        >>> tracker = Tracker(tmp_path / "my.tracker", max_tries=3)
        >>> for name in ["a", "b", "c"]:
        ...     if not tracker.try_it(name):
        ...         continue
        ...     tracker.mark_done(name)
        ...     tracker[name]["result"] = name.upper()
        >>> tracker.num_done(), tracker["b"]
        (3, {'_done': True, '_tries': 1, '_aborted': False, 'result': 'B'})
        >>> tracker.close()

    A missing key passed to :meth:`mark_done`, :meth:`tries` and the other
    per-key methods raises ``KeyError`` naming it; :meth:`try_it`,
    :meth:`should_do_add` and :meth:`should_try_add` add it, and
    :meth:`done` and :meth:`check` answer False.
    """

    _KIND = "tracker"

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_tries: int | None = 0,
        init: Mapping | Any = None,
        gzipped: bool = False,
        file_size: int = 1000,
        sync_at: int = 1000,
        clone: bool = True,
        *,
        lock: str = "auto",
        lock_timeout: float = 600.0,
    ):
        self._max_tries = _check_max_tries(max_tries)
        self._n_done = 0
        self._n_tried = 0
        self._n_aborted = 0
        # Records handed out by a read, with their counter bits at that
        # moment: the caller may change them in place, so they are counted
        # again (settled) before a counter is read.
        self._lent: dict = {}
        self._recount = False
        self._epoch = 0  # bumped by every full count
        # Tries written without fsync since the last durable sync.
        self._since_durable = 0
        # Keys written by the quick path since the store last confirmed that
        # its journal is still the live one (see _reload).
        self._unconfirmed: list = []
        self._rewrite = False
        self._tail: TailAppender | None = None
        super().__init__(
            path,
            init,
            gzipped,
            file_size,
            sync_at,
            clone,
            lock=lock,
            lock_timeout=lock_timeout,
        )
        self._tail = TailAppender(self._store)

    # -- settings ------------------------------------------------------------

    @property
    def max_tries(self) -> int:
        """How many tries a task gets (0: no limit). Settable."""
        return self._max_tries

    @max_tries.setter
    def max_tries(self, value: int | None) -> None:
        self._max_tries = _check_max_tries(value)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, {len(self._data)} tasks, {self.num_done()} done)"
        )

    # -- counters --------------------------------------------------------------

    def _shift(self, old: int, new: int) -> None:
        if old != new:
            self._n_done += (new & _DONE) - (old & _DONE)
            self._n_tried += ((new & _TRIED) - (old & _TRIED)) >> 1
            self._n_aborted += ((new & _ABORTED) - (old & _ABORTED)) >> 2

    def _count_all(self) -> None:
        self._lent.clear()
        self._recount = False
        self._epoch += 1
        values = self._data.values()
        try:
            done = sum(1 for r in values if r["_done"])
            tried = sum(1 for r in values if r["_tries"] > 0)
            aborted = sum(1 for r in values if r["_aborted"])
        except (KeyError, TypeError, IndexError):
            done = tried = aborted = 0
            for r in values:
                c = _contrib(r)
                done += c & _DONE
                tried += (c & _TRIED) >> 1
                aborted += (c & _ABORTED) >> 2
        self._n_done = done
        self._n_tried = tried
        self._n_aborted = aborted

    def _settle(self) -> None:
        """Count again the records handed out since the last time."""
        if self._recount:
            self._count_all()
            return
        lent = self._lent
        if lent:
            data = self._data
            for key, c in list(lent.items()):
                self._shift(c, _contrib(data.get(key)))
            lent.clear()

    def _settle_key(self, key: Any, rec: Any) -> None:
        self._shift(self._lent.pop(key), _contrib(rec))

    # -- hooks of the POD ------------------------------------------------------

    def _loaded(self) -> None:
        self._count_all()

    def _replaced(self, key: Any, old: Any, new: Any) -> None:
        lent = self._lent
        if key in lent:
            c_old = lent.pop(key)
        else:
            c_old = 0 if old is _MISSING else _contrib(old)
        self._shift(c_old, 0 if new is _MISSING else _contrib(new))

    def _reload(self, ours: set) -> None:
        # Another process compacted the POD since we last looked. What the
        # quick path wrote since the store last confirmed the live journal is
        # normally in the new snapshot; but if that compaction died after
        # switching the manifest and before deleting the old journal, it went
        # to a dead file. Keep those keys as unsynced changes, so they are
        # written again into the live generation instead of being lost.
        keys = self._unconfirmed
        if keys:
            self._unconfirmed = []
            self._rewrite = True
            data = self._data
            dirty = self._dirty
            for key in dict.fromkeys(keys):
                if key in data:
                    dirty[key] = _CHANGED
                else:
                    self._pending += b"[%b]\n" % dumps(key)
                    self._pending_keys.append(key)
        super()._reload(ours)

    def _sync(self, durable: bool = True) -> None:
        store = self._store
        confirmed = len(self._unconfirmed)
        generation = store.generation
        pos = store.journal_pos
        super()._sync(durable)
        # The sync read the manifest and found our generation (or reloaded
        # and kept the unconfirmed keys as changes): those writes are safe.
        del self._unconfirmed[:confirmed]
        if self._rewrite:
            # Keys a reload put back as changes: write them now, not later
            # (this may be the last sync before close).
            self._rewrite = False
            super()._sync(durable)
        if durable:
            tail = self._tail
            if (
                self._since_durable
                and tail is not None
                and store.generation == generation
                and store.journal_pos == pos
            ):
                # Nothing appended, so no fsync happened: make the quick
                # path's writes durable now.
                tail.fsync()
            self._since_durable = 0

    def _exit_sync(self) -> None:
        if not self._closed and (self._dirty or self._pending or self._since_durable):
            self.sync()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._tail is not None:
                self._tail.close()

    def __del__(self) -> None:
        super().__del__()
        tail = getattr(self, "_tail", None)
        if tail is not None:
            tail.close()

    # -- the mapping -------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        lent = self._lent
        if key not in lent:
            lent[key] = _contrib(value)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        t = type(key)
        if t is not str and t is not int:
            check_key(key)
        _check_record(key, value)
        data = self._data
        lent = self._lent
        if key in lent:
            c_old = lent.pop(key)
        else:
            old = data.get(key, _MISSING)
            c_old = 0 if old is _MISSING else _contrib(old)
        epoch = self._epoch
        self._shift(c_old, 0)
        try:
            super().__setitem__(key, value)
        finally:
            # Count what is there now: the new record, or the old one if the
            # assignment was refused. A full count meanwhile did it already.
            if self._epoch == epoch:
                cur = data.get(key, _MISSING)
                self._shift(0, 0 if cur is _MISSING else _contrib(cur))

    def __delitem__(self, key: Any) -> None:
        data = self._data
        if key not in data:
            raise KeyError(key)
        lent = self._lent
        c_old = lent.pop(key) if key in lent else _contrib(data[key])
        epoch = self._epoch
        self._shift(c_old, 0)
        try:
            super().__delitem__(key)
        finally:
            if self._epoch == epoch:
                cur = data.get(key, _MISSING)
                self._shift(0, 0 if cur is _MISSING else _contrib(cur))

    @property
    def set(self) -> _TrackerSetter:
        """Deep assignment that marks the top key dirty: ``tracker.set[k]['result'] = v``."""
        return _TrackerSetter(self)

    def mark_dirty(self, key: Any) -> None:
        if key in self._data and key not in self._lent:
            # Changed through a reference we never handed out: we cannot
            # know what it was before, so count everything again once.
            self._recount = True
        super().mark_dirty(key)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Merge records into the tracker, as tastypy 0.0.3 did.

        Each value is a dict merged into the key's record (``dict.update``);
        a key not there yet is added first. So ``tracker.update({"a":
        {"_done": True}})`` marks ``a`` done and keeps its tries. Everything
        is checked before anything changes. ``tracker.update(key)``, with one
        existing key, syncs that key (see :meth:`sync_key`).
        """
        if len(args) == 1 and not kwargs and type(args[0]) in (str, int):
            if args[0] in self._data:
                self.sync_key(args[0])
                return
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 positional argument, got {len(args)}")
        items: list = []
        for arg in args:
            if isinstance(arg, Mapping):
                items.extend(arg.items())
            elif hasattr(arg, "keys"):
                items.extend((k, arg[k]) for k in arg.keys())
            else:
                items.extend(arg)
        items.extend(kwargs.items())
        merged = []
        data = self._data
        for key, value in items:
            t = type(key)
            if t is not str and t is not int:
                check_key(key)
            if not isinstance(value, Mapping):
                raise InvalidValueError(
                    f"tracker.update merges dicts into records; the value for key {key!r} is "
                    f"a {type(value).__name__} ({value!r:.60})."
                )
            old = data.get(key)
            record = dict(old) if type(old) is dict else dict(_DEFAULTS)
            record.update(value)
            _check_record(key, record)
            merged.append((key, record))
        with self.holding():
            for key, record in merged:
                self[key] = record

    # -- records -----------------------------------------------------------------

    def _missing(self, key: Any) -> KeyError:
        return KeyError(
            f"{key!r} is not in the tracker {self.path}; add it first with "
            f"tracker.add({key!r}) (try_it adds it by itself)"
        )

    def _rec(self, key: Any) -> dict:
        """The record of ``key`` for a method to change in place."""
        try:
            rec = self._data[key]
        except KeyError:
            raise self._missing(key) from None
        if self._closed:
            self._refuse_closed()
        if key in self._lent:
            self._settle_key(key, rec)
        if (
            type(rec) is not dict
            or "_tries" not in rec
            or "_done" not in rec
            or ("_aborted" not in rec)
        ):
            rec = self._repair(key, rec)
        return rec

    def _repair(self, key: Any, rec: Any) -> dict:
        """A record damaged in place or by hand: fill in missing fields."""
        if type(rec) is not dict:
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
        self._touch(key)
        return rec

    def _touch(self, key: Any) -> None:
        """Note that a method changed the record of ``key`` in place."""
        dirty = self._dirty
        dirty[key] = _CHANGED
        if len(dirty) + len(self._pending_keys) >= self.sync_at and not self._held:
            self.sync()

    def add(self, key: Any) -> None:
        """Add a task not done, never tried, not aborted.

        Raises :class:`~tastypy.DuplicateKeyError` if ``key`` is there already.
        """
        if key in self._data:
            raise DuplicateKeyError(
                f"{key!r} is already in the tracker {self.path}; use add_if_absent to skip "
                "keys that are there."
            )
        self[key] = dict(_DEFAULTS)

    def add_if_absent(self, key: Any) -> None:
        """Like :meth:`add`, but a key already there is left alone."""
        if key not in self._data:
            self[key] = dict(_DEFAULTS)

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
                self[key] = dict(_DEFAULTS)

    def add_many_if_absent(self, keys: Iterable) -> None:
        """Add every key that is not there yet."""
        data = self._data
        with self.holding():
            for key in keys:
                if key not in data:
                    self[key] = dict(_DEFAULTS)

    def mark_done(self, key: Any) -> None:
        """Mark the task done. It is written at the next try, sync or exit."""
        rec = self._rec(key)
        if not rec["_done"]:
            rec["_done"] = True
            self._n_done += 1
            self._touch(key)

    def mark_not_done(self, key: Any) -> None:
        """Mark the task not done."""
        rec = self._rec(key)
        if rec["_done"]:
            rec["_done"] = False
            self._n_done -= 1
            self._touch(key)

    def increment_tries(self, key: Any) -> None:
        """Count one more try (without the checks and the write of :meth:`try_it`)."""
        rec = self._rec(key)
        tries = rec["_tries"]
        rec["_tries"] = tries + 1
        if not tries:
            self._n_tried += 1
        self._touch(key)

    def decrement_tries(self, key: Any) -> None:
        """Count one try less; a task never tried is refused."""
        rec = self._rec(key)
        tries = rec["_tries"]
        if tries <= 0:
            raise InvalidArgumentError(
                f"{key!r} has 0 tries; tries cannot go below 0 (see reset_tries)."
            )
        rec["_tries"] = tries - 1
        if tries == 1:
            self._n_tried -= 1
        self._touch(key)

    def reset_tries(self, key: Any) -> None:
        """Set the task's tries back to 0."""
        rec = self._rec(key)
        if rec["_tries"]:
            rec["_tries"] = 0
            self._n_tried -= 1
            self._touch(key)

    def tries(self, key: Any) -> int:
        """How many times the task was tried."""
        return self._rec(key)["_tries"]

    def abort(self, key: Any) -> None:
        """Mark the task aborted: it is skipped unless ``allow_aborted=True``."""
        rec = self._rec(key)
        if not rec["_aborted"]:
            rec["_aborted"] = True
            self._n_aborted += 1
            self._touch(key)

    def unabort(self, key: Any) -> None:
        """Mark the task not aborted."""
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
        rec = self._data.get(key)
        return type(rec) is dict and bool(rec.get("_done"))

    def check(self, key: Any) -> bool:
        """Whether the task is done (False if it is not there), as in the 0.0.3 manual."""
        return self.done(key)

    # -- deciding what to do ---------------------------------------------------------

    def _runnable(self, rec: Any, allow_aborted: bool) -> bool:
        if type(rec) is not dict or rec.get("_done"):
            return False
        if rec.get("_aborted") and not allow_aborted:
            return False
        max_tries = self._max_tries
        if not max_tries:
            return True
        tries = rec.get("_tries", 0)
        # A count damaged in place is not a task to hand out; try_it says why.
        return type(tries) is int and tries < max_tries

    def should_do(self, key: Any, allow_aborted: bool = False) -> bool:
        """True if the task is not done, not aborted (unless ``allow_aborted``)
        and tried fewer than ``max_tries`` times."""
        return self._runnable(self._rec(key), allow_aborted)

    def should_do_add(self, key: Any, allow_aborted: bool = False) -> bool:
        """Like :meth:`should_do`, adding the key first if it is not there."""
        self.add_if_absent(key)
        return self.should_do(key, allow_aborted)

    def should_try(self, key: Any, allow_aborted: bool = False) -> bool:
        """Like :meth:`should_do`, and if True, count a try (as :meth:`try_it`)."""
        return self._try(key, False, allow_aborted)

    def should_try_add(self, key: Any, allow_aborted: bool = False) -> bool:
        """Like :meth:`should_try`, adding the key first if it is not there."""
        return self._try(key, True, allow_aborted)

    def try_it(self, key: Any) -> bool:
        """Decide whether to run a task now, and if so count the try.

        Adds ``key`` if it is not there. Returns False if the task is done,
        aborted, or was tried ``max_tries`` times; otherwise counts one try
        and returns True. Before returning True it writes every unsynced
        change to the journal (without fsync), so if the task then kills the
        process, its try is counted and everything marked done before it
        stays done.
        """
        return self._try(key, True, False)

    def _try(self, key: Any, add: bool, allow_aborted: bool, started: str | None = None) -> bool:
        """The one place that decides whether ``key`` is tried now and counts the try."""
        if self._closed:
            self._refuse_closed()
        data = self._data
        rec = data.get(key)
        if rec is None:
            if not add:
                raise self._missing(key)
            t = type(key)
            if t is not str and t is not int:
                check_key(key)
            rec = {"_done": False, "_tries": 1, "_aborted": False}
            data[key] = rec
            self._n_tried += 1
        else:
            if key in self._lent:
                self._settle_key(key, rec)
            try:
                if rec["_done"] or (rec["_aborted"] and not allow_aborted):
                    return False
                tries = rec["_tries"]
                max_tries = self._max_tries
                if max_tries and tries >= max_tries:
                    return False
                rec["_tries"] = tries + 1
            except (KeyError, TypeError):
                self._repair(key, rec)
                return self._try(key, add, allow_aborted, started)
            if not tries:
                self._n_tried += 1
        if started is not None:
            rec["_started"] = started
            rec.pop("_ended", None)
        self._dirty[key] = _CHANGED
        self._write_try()
        return True

    def _write_try(self) -> None:
        """Get every unsynced change onto disk before a task runs.

        Without fsync, except every ``sync_at`` tries: a write survives the
        death of the process; only a power loss needs the fsync.
        """
        if self._held:
            return
        self._since_durable += 1
        if self._since_durable >= self.sync_at:
            self._sync(True)
        elif len(self._unconfirmed) >= _CONFIRM_AT or not self._quick_write():
            self._sync(False)

    def _quick_write(self) -> bool:
        """Append the unsynced changes through the tail appender; False if the
        ordinary sync must do it (see :mod:`tastypy.storage.tail`)."""
        tail = self._tail
        if tail is None or not tail.enabled:
            return False
        with self._sync_lock:
            # A SIGTERM handler (it syncs) must wait until the lock file is
            # released again.
            main = _exit.enter()
            try:
                data = self._data
                dirty = self._dirty
                pending = self._pending
                n_bytes = len(pending)
                if n_bytes:
                    n_keys = len(self._pending_keys)
                    lines = [bytes(pending[:n_bytes])]
                    count = lines[0].count(b"\n")
                else:
                    lines = []
                    count = 0
                handled = list(dirty.items())
                for key, marker in handled:
                    value = data.get(key, _MISSING)
                    if value is _MISSING:
                        continue
                    try:
                        line = dumps((key, value), option=_LINE_OPTIONS)
                    except TypeError:
                        return False  # the ordinary sync names the key
                    if b"null" in line and _has_nonfinite(value):
                        return False
                    if marker is _CHANGED or hash(line) != marker:
                        lines.append(line)
                        count += 1
                if count:
                    if self._store.gzipped:
                        batch = journal.frame(b"".join(lines), count, True)
                    else:
                        lines.append(b'{"sync":%d}\n' % count)
                        batch = b"".join(lines)
                    if not tail.append(batch, count):
                        return False
                    unconfirmed = self._unconfirmed
                    if n_bytes:
                        unconfirmed.extend(self._pending_keys[:n_keys])
                        del pending[:n_bytes]
                        del self._pending_keys[:n_keys]
                    for key, marker in handled:
                        unconfirmed.append(key)
                        if dirty.get(key, _MISSING) is marker:
                            del dirty[key]
                else:
                    for key, marker in handled:
                        if dirty.get(key, _MISSING) is marker:
                            del dirty[key]
                return True
            finally:
                if main:
                    _exit.leave()

    # -- iterating -------------------------------------------------------------------

    def todo_keys(self, allow_aborted: bool = False) -> Iterator:
        """The keys of tasks to do: not done, not aborted (unless
        ``allow_aborted``), tried fewer than ``max_tries`` times. In order."""
        data = self._data
        for key in list(data):
            if self._runnable(data.get(key), allow_aborted):
                yield key

    def todo_items(self, allow_aborted: bool = False) -> Iterator[tuple]:
        """``(key, record)`` for each of :meth:`todo_keys`."""
        for key in self.todo_keys(allow_aborted):
            yield key, self[key]

    def todo_values(self, allow_aborted: bool = False) -> Iterator[dict]:
        """The record of each of :meth:`todo_keys`."""
        for key in self.todo_keys(allow_aborted):
            yield self[key]

    def try_keys(self, allow_aborted: bool = False) -> Iterator:
        """Like :meth:`todo_keys`, counting a try (as :meth:`try_it`) for each key yielded."""
        data = self._data
        for key in list(data):
            if key in data and self._try(key, False, allow_aborted):
                yield key

    def try_items(self, allow_aborted: bool = False) -> Iterator[tuple]:
        """``(key, record)`` for each of :meth:`try_keys`."""
        for key in self.try_keys(allow_aborted):
            yield key, self[key]

    def try_values(self, allow_aborted: bool = False) -> Iterator[dict]:
        """The record of each of :meth:`try_keys`."""
        for key in self.try_keys(allow_aborted):
            yield self[key]

    def aborted_keys(self) -> Iterator:
        """The keys of aborted tasks, in order."""
        data = self._data
        for key in list(data):
            rec = data.get(key)
            if type(rec) is dict and rec.get("_aborted"):
                yield key

    def aborted_items(self) -> Iterator[tuple]:
        """``(key, record)`` for each aborted task."""
        for key in self.aborted_keys():
            yield key, self[key]

    def aborted_values(self) -> Iterator[dict]:
        """The record of each aborted task."""
        for key in self.aborted_keys():
            yield self[key]

    # -- counting --------------------------------------------------------------------

    def num_done(self) -> int:
        """How many tasks are done (``len(tracker)`` is how many there are)."""
        self._settle()
        return self._n_done

    def num_tried(self) -> int:
        """How many tasks were tried at least once."""
        self._settle()
        return self._n_tried

    def num_aborted(self) -> int:
        """How many tasks are aborted."""
        self._settle()
        return self._n_aborted

    def _fraction(self, n: int) -> float:
        total = len(self._data)
        return n / total if total else 0.0

    def fraction_done(self) -> float:
        """Done tasks as a fraction of all (0.0 when there are none)."""
        return self._fraction(self.num_done())

    def fraction_tried(self) -> float:
        """Tasks tried at least once, as a fraction of all (0.0 when there are none)."""
        return self._fraction(self.num_tried())

    def fraction_aborted(self) -> float:
        """Aborted tasks as a fraction of all (0.0 when there are none)."""
        return self._fraction(self.num_aborted())

    @staticmethod
    def percent(fraction: float, decimals: int = 2) -> str:
        """``fraction`` as a percentage string: ``percent(0.347) == '34.70 %'``."""
        return f"{100 * fraction:.{decimals}f} %"

    def percent_done(self, decimals: int = 2) -> str:
        """The share of done tasks, e.g. ``'34.70 %'``."""
        return self.percent(self.fraction_done(), decimals)

    def percent_not_done(self, decimals: int = 2) -> str:
        """The share of tasks not done, e.g. ``'65.30 %'``."""
        return self.percent(1 - self.fraction_done() if self._data else 0.0, decimals)

    def percent_tried(self, decimals: int = 2) -> str:
        """The share of tasks tried at least once."""
        return self.percent(self.fraction_tried(), decimals)

    def percent_not_tried(self, decimals: int = 2) -> str:
        """The share of tasks never tried."""
        return self.percent(1 - self.fraction_tried() if self._data else 0.0, decimals)

    def percent_aborted(self, decimals: int = 2) -> str:
        """The share of aborted tasks."""
        return self.percent(self.fraction_aborted(), decimals)

    def percent_not_aborted(self, decimals: int = 2) -> str:
        """The share of tasks not aborted."""
        return self.percent(1 - self.fraction_aborted() if self._data else 0.0, decimals)

    def stats(self) -> dict:
        """Where the job stands, as a plain dict.

        Every task is in exactly one of ``done``, ``aborted`` (and not
        done), ``failed`` (tried ``max_tries`` times without success),
        ``in_progress`` (an attempt started by :meth:`attempts` that has not
        ended: running now, or cut short by a crash) and ``todo`` (the
        rest: still to try). ``tries`` maps a number of tries to how many
        tasks have it.
        """
        max_tries = self._max_tries
        done = aborted = failed = running = 0
        tries_hist: dict = {}
        for rec in self._data.values():
            if type(rec) is not dict:
                continue
            tries = rec.get("_tries", 0)
            tries_hist[tries] = tries_hist.get(tries, 0) + 1
            if rec.get("_done"):
                done += 1
            elif rec.get("_aborted"):
                aborted += 1
            elif max_tries and type(tries) is int and tries >= max_tries:
                failed += 1
            elif "_started" in rec and "_ended" not in rec:
                running += 1
        total = len(self._data)
        return {
            "total": total,
            "done": done,
            "todo": total - done - aborted - failed - running,
            "failed": failed,
            "aborted": aborted,
            "in_progress": running,
            "tries": dict(sorted(tries_hist.items(), key=lambda kv: (str(type(kv[0])), kv[0]))),
        }

    # -- running tasks ---------------------------------------------------------------

    def attempts(
        self,
        keys: Iterable | None = None,
        *,
        reraise: bool = False,
        progress: bool | str = False,
        allow_aborted: bool = False,
    ) -> Iterator[Task]:
        """One :class:`Task` for each task to try now, each try counted as by :meth:`try_it`.

        ``keys`` (default: every key) is read whole first and the keys not
        there yet are added. Use each task as a context manager::

            for task in tracker.attempts(keys, progress=True):
                with task:
                    task["result"] = work(task.key)

        A body that ends normally marks the task done. One that raises an
        exception records it in the task's ``_error`` (type, message,
        traceback, time) and leaves the task not done; the loop then moves
        on, or with ``reraise=True`` the exception propagates. Ctrl-C
        (``KeyboardInterrupt``) gives the try back and propagates. Start and
        end times go to ``_started`` and ``_ended``.

        ``progress=True`` shows done / total, rate and ETA on stderr, with
        ``tqdm`` if it is installed (``pip install tastypy[progress]``),
        else as a plain line every few seconds (``progress="plain"`` forces
        that).
        """
        if keys is None:
            order = list(self._data)
        else:
            order = list(keys)
            self.add_many_if_absent(order)
        bar = _Progress(self, progress) if progress else None
        data = self._data
        try:
            for key in order:
                if key not in data or not self._try(key, False, allow_aborted, _now()):
                    continue
                task = Task(self, key, True, reraise)
                yield task
                if bar is not None:
                    bar.update(task)
        finally:
            if bar is not None:
                bar.close()

    def attempt(self, key: Any, *, reraise: bool = True, allow_aborted: bool = False) -> Task:
        """One attempt at ``key`` (added if absent), as a context manager.

        The returned :class:`Task` is false, and its block records nothing,
        when the task is not to be tried (done, aborted, out of tries)::

            with tracker.attempt("job-7") as task:
                if task:
                    task["result"] = work()

        Unlike :meth:`attempts`, an exception is re-raised by default.
        """
        self.add_if_absent(key)
        active = self._try(key, False, allow_aborted, _now())
        return Task(self, key, active, reraise)

    def _ended(self, key: Any, exc: BaseException | None) -> None:
        rec = self._data.get(key)
        if type(rec) is not dict:
            return  # deleted meanwhile
        rec = self._rec(key)
        now = _now()
        if exc is None:
            if not rec["_done"]:
                rec["_done"] = True
                self._n_done += 1
            rec.pop("_error", None)
        elif isinstance(exc, Exception):
            kind = type(exc)
            name = kind.__qualname__
            if kind.__module__ not in ("builtins", "__main__"):
                name = f"{kind.__module__}.{name}"
            rec["_error"] = {
                "type": name,
                "message": str(exc),
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                "time": now,
            }
        else:
            # Ctrl-C or an exit: not the task's fault, so the try is given back.
            tries = rec["_tries"]
            if tries > 0:
                rec["_tries"] = tries - 1
                if tries == 1:
                    self._n_tried -= 1
        rec["_ended"] = now
        self._touch(key)


Tracker = ProgressTracker


class Task:
    """One attempt at one task, from :meth:`ProgressTracker.attempts` or
    :meth:`~ProgressTracker.attempt`. Use it as a context manager; it is
    true when the task is to be run."""

    __slots__ = ("tracker", "key", "_active", "_reraise", "outcome")

    def __init__(self, tracker: ProgressTracker, key: Any, active: bool, reraise: bool):
        self.tracker = tracker
        self.key = key
        self._active = active
        self._reraise = reraise
        #: None until the block ends; then "done", "failed" or "interrupted".
        self.outcome: str | None = None

    def __bool__(self) -> bool:
        return self._active

    def __repr__(self) -> str:
        state = self.outcome or ("to run" if self._active else "skipped")
        return f"<Task {self.key!r}: {state}>"

    @property
    def record(self) -> dict:
        """The task's record in the tracker (changes to it are saved)."""
        return self.tracker[self.key]

    def __getitem__(self, field: str) -> Any:
        return self.tracker[self.key][field]

    def __setitem__(self, field: str, value: Any) -> None:
        self.tracker[self.key][field] = value

    def __enter__(self) -> Task:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if not self._active or self.outcome is not None:
            return False
        if exc is None:
            self.outcome = "done"
        elif isinstance(exc, Exception):
            self.outcome = "failed"
        else:
            self.outcome = "interrupted"
        self.tracker._ended(self.key, exc)
        return self.outcome == "failed" and not self._reraise


class _TrackerSetter(_Setter):
    """``tracker.set[k]``: counted again, like a read, before it is changed."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        pod = self._pod
        if key in pod._data and key not in pod._lent:
            pod._lent[key] = _contrib(pod._data[key])
        return super().__getitem__(key)


class _Progress:
    """Done / total, rate and ETA on stderr: tqdm if installed, else a plain line."""

    def __init__(self, tracker: ProgressTracker, mode: bool | str):
        self.tracker = tracker
        self.failed = 0
        self.start_done = tracker.num_done()
        self.start = time.monotonic()
        self.last = self.start
        self.bar = None
        if mode is True or mode == "tqdm":
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=len(tracker),
                    initial=self.start_done,
                    unit="task",
                    desc="done",
                    file=sys.stderr,
                    dynamic_ncols=True,
                    smoothing=0.05,
                    mininterval=0.25,
                )

    def update(self, task: Task) -> None:
        if task.outcome == "failed":
            self.failed += 1
        done = self.tracker.num_done()
        bar = self.bar
        if bar is not None:
            if bar.total != len(self.tracker):
                bar.total = len(self.tracker)
            if done != bar.n:
                bar.update(done - bar.n)
            if task.outcome == "failed":
                bar.set_postfix(failed_tries=self.failed, refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= _PLAIN_INTERVAL:
            self.last = now
            self._line(done, now)

    def _line(self, done: int, now: float) -> None:
        total = len(self.tracker)
        elapsed = now - self.start
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        left = total - done
        eta = f"{datetime.timedelta(seconds=round(left / rate))}" if rate > 0 else "?"
        share = 100 * done / total if total else 100.0
        sys.stderr.write(
            f"tastypy: {done:,}/{total:,} done ({share:.1f} %), {self.failed:,} failed "
            f"tries this pass, {rate:,.0f} tasks/s, ETA {eta}\n"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.tracker.num_done() - self.bar.n)
            self.bar.close()
        else:
            self._line(self.tracker.num_done(), time.monotonic())
