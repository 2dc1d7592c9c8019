"""ProgressTracker: a POD of task records, with tries, counters and crash-safe try loops.

Every value is a task record, a dict holding at least ``_done``, ``_tries``
and ``_aborted``; users attach anything else. :meth:`ProgressTracker.try_it`
claims a task for this process: under the directory lock, after taking in
what other processes wrote, it checks that the task is still to do and not
leased by another process, counts the try, leases the task to this process
and writes all that to the journal (no fsync) before it returns. So any
number of processes on any number of hosts can share one tracker and run
every task once, a task that kills its own process still has its try
counted, and everything marked done before it is still done. See
``docs/tracker.md``, ``docs/leases.md`` and ``docs/survival.md``.
"""

from __future__ import annotations

import datetime
import gc
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, NamedTuple

import orjson

from tastypy import _exit, _identity, records
from tastypy._identity import holder_gone
from tastypy.codec import check_key, dumps, record_line
from tastypy.errors import (
    CorruptFileError,
    DuplicateKeyError,
    InvalidArgumentError,
    InvalidValueError,
)
from tastypy.pod import _CHANGED, _MISSING, _RACE_RETRIES, PersistentOrderedDict, _Setter
from tastypy.storage import DELETED, journal
from tastypy.storage.store import CommitRaced
from tastypy.storage.tail import TailAppender, file_time

__all__ = ["ProgressTracker", "Tracker", "Task", "LeaseInfo", "DEFAULT_LEASE"]

log = logging.getLogger("tastypy")


_DEFAULTS: Final = records.DEFAULTS


#: With a huge ``sync_at``, an ordinary sync (no fsync) still runs after
#: this many quick writes, to confirm they went to the live journal.
_CONFIRM_AT: Final = 10_000

#: Seconds between two lines of the plain progress display.
_PLAIN_INTERVAL: Final = 2.0

#: Seconds a task stays leased to the process that claimed it, unless the
#: tracker (``lease=``) or the call says otherwise: doloop's ``lock_for``.
DEFAULT_LEASE: Final = 3600.0

#: Seconds between two measures of how far this host's clock is from the
#: filesystem's (on filesystems shared by hosts), and the offset above which
#: a warning says so.
_CLOCK_EVERY: Final = 30.0
_CLOCK_WARN: Final = 5.0
_CLOCK_SAMPLES: Final = 5

#: ``claim`` passes this as the keys it decides on: it may take any key.
_ANY: Final = object()

#: Keys of others' records kept filed, not taken in, at most (a line each:
#: some 200 bytes); past that they are taken in.
_BACKLOG_MAX: Final = 250_000

#: No key changed here: all of others' changes are taken in.
_NOT_OURS: Final = frozenset()

#: The commit lines of small batches, made once.
_COMMITS: Final = tuple(journal.commit_line(n) for n in range(64))

_time = time.time

#: Who holds the leases this process takes: ``host:pid/kernel``
#: (:mod:`tastypy._identity`).
_me = _identity.me().holder


def _after_fork() -> None:
    global _me
    _me = _identity.me().holder


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _gone_memo() -> Callable[[Any], bool]:
    """:func:`holder_gone`, asked once per holder (a pass over many records)."""
    seen: dict = {}

    def gone(holder: Any) -> bool:
        if type(holder) is not str:
            return False
        known = seen.get(holder)
        if known is None:
            known = seen[holder] = holder_gone(holder)
        return known

    return gone


def _framed(lines: list, count: int, gzipped: bool) -> bytes:
    """One batch for the appender: ``count`` record ``lines`` (the list is
    extended) and their commit line."""
    if gzipped:
        return journal.frame(b"".join(lines), count, True)
    lines.append(_COMMITS[count] if count < 64 else journal.commit_line(count))
    return b"".join(lines)


def _until(offset: float, span: float) -> float:
    """``span`` seconds from now on the lease clock, as epoch seconds."""
    return _time() + offset + span


def _nothing() -> None:
    return None


class _Ordinary(Exception):
    """The quick path cannot write this: the ordinary path must."""


def _check_span(value: Any, name: str, negative: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (value <= 0 and not negative)
    ):
        what = "a finite number of seconds" if negative else "a number of seconds > 0"
        raise InvalidArgumentError(f"{name} must be {what}, got {value!r}.")
    return float(value)


def _key_list(keys: Any) -> list:
    """``keys`` as a list; one str or int key is accepted alone."""
    if type(keys) in (str, int):
        return [keys]
    try:
        return list(keys)
    except TypeError:
        raise InvalidArgumentError(
            f"expected a list of keys, got {type(keys).__name__} ({keys!r:.60})"
        ) from None


class LeaseInfo(NamedTuple):
    """Where one task stands, as :meth:`ProgressTracker.lease_info` reports it."""

    #: Whether the task is done.
    done: bool
    #: How many times it was tried.
    tries: int
    #: Who holds (or last held) its lease: ``"host:pid"``, or None.
    holder: str | None
    #: Seconds until its lease expires (negative: expired that long ago;
    #: None: no lease).
    lease_left: float | None


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

    def __new__(cls, path: Any = None, *args: Any, shards: int | None = None, **kwargs: Any) -> Any:
        # A tracker split into parts (made with shards=, or found on disk) is
        # a layer over trackers like this one: see tastypy/parts.py.
        if cls is ProgressTracker and path is not None:
            from tastypy.storage import parts

            if shards is not None or parts.is_parted(os.fspath(path)):
                from tastypy.parts import PartedTracker

                return PartedTracker(path, *args, shards=shards, **kwargs)
        return super().__new__(cls)

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
        lease: float | None = DEFAULT_LEASE,
        storage: str | None = None,
        shards: None = None,  # not None: __new__ made a PartedTracker instead
    ):
        self._max_tries = _check_max_tries(max_tries)
        self._lease = DEFAULT_LEASE if lease is None else _check_span(lease, "lease")
        # Others' records read and not yet taken in (see _data): the bytes of
        # the last line of each key, by the key's UTF-8 bytes.
        self._backlog: dict = {}
        # Set at close when the backlog was left aside: a read loads afresh.
        self._stale = False
        self._closing = False
        # Records added here (add, add_if_absent, add_many...) and not yet
        # written, by key: until written, each yields to any record of its
        # key another process writes (see _add_new).
        self._added: dict = {}
        # Keys whose record may hold a lease or a bump (a superset, checked
        # when used); None until claim() first needs it.
        self._lease_index: dict | None = None
        # claim()'s order of tasks never tried, then tried before; consumed
        # from _queue_pos and built again when used up.
        self._queue: list = []
        self._queue_pos = 0
        # Grants made by the decision running now, to take back if its write fails.
        self._undo: list | None = None
        # Bumped whenever changes of other processes are taken in.
        self._absorbed = 0
        # The leases this object granted and has not ended, by key: the
        # lease's end it wrote. At close and exit it ends those still in
        # the records as it wrote them, and no others: another tracker
        # object of this process runs its own tasks, under the same holder
        # name (a task one object took again carries the other's lease end).
        self._granted: dict = {}
        # Whether others wrote at our last quick write: then claims take in
        # what is new before deciding, rather than deciding first.
        self._contended = False
        # This host's clock + offset = the filesystem's clock (see _clock).
        self._clock_offset = 0.0
        self._clock_samples: list = []
        self._clock_next = 0.0
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
            storage=storage,
        )
        self._tail = TailAppender(self._store)

    # -- others' records, taken in when needed -------------------------------

    # With many processes, each reads every record the others write: a
    # claim and a done mark per task. Parsing them and taking them in cost
    # ~2.5 µs each, so N processes spent most of their time on the N - 1
    # others' records. Instead, batches read while claiming are only split
    # into lines and filed by key (the backlog, ~0.4 µs a line); a claim
    # looks up its key there, and everything else reads ``_data``, which
    # takes the backlog in first. So a worker that only claims and marks
    # done never parses what the others did.

    @property
    def _data(self) -> dict:
        if (self._backlog or self._stale) and not self._closing:
            self._take_backlog()
        return self._d

    @_data.setter
    def _data(self, value: dict) -> None:
        # A load: it holds everything the backlog held.
        self._d = value
        self._backlog = {}

    def _take_backlog(self) -> None:
        # Under the sync lock, like every change to the backlog: a read in
        # one thread must not take it in while another thread is between
        # filing what it read and dropping what it wrote over.
        with self._sync_lock:
            if self._backlog:
                self._flush_backlog()
            elif self._stale:
                self._load_stale()

    def _file(self, chunk: bytes) -> int | None:
        """File the committed batches ``chunk`` (others') into the backlog:
        how many records they hold; None, with nothing filed, if they are
        not all plain records of keys written without escapes (then the
        caller parses them)."""
        if b"\\" in chunk or chunk[-1:] != b"\n":
            return None
        lines = chunk.split(b"\n")
        lines.pop()
        records = [line for line in lines if line[:2] == b'["']
        commits = [line for line in lines if line[:8] == b'{"sync":']
        if len(records) + len(commits) != len(lines):
            return None
        try:
            if sum([int(line[8:-1]) for line in commits]) != len(records):
                return None
        except ValueError:
            return None
        self._backlog.update(zip([line[2 : line.index(b'"', 2)] for line in records], records))
        return len(records)

    def _known(self, key: Any) -> dict:
        """The data, with whatever others wrote of ``key`` taken in."""
        if self._closing:
            return self._d
        if self._stale:
            self._load_stale()
        elif self._backlog:
            self._take_key(key)
        return self._d

    def _flush_backlog(self, claims: Any = ()) -> None:
        """Take in the backlog (see :meth:`_absorb` for ``claims``)."""
        with self._sync_lock:
            self._flush_backlog_locked(claims)

    def _flush_backlog_locked(self, claims: Any) -> None:
        lines = self._backlog
        self._backlog = {}
        text = b"[" + b",".join(lines.values()) + b"]"
        paused = gc.isenabled()
        if paused:
            gc.disable()  # see tail.changes_of
        try:
            try:
                items = orjson.loads(text)
            except ValueError:
                items = None
            changes = []
            if items is not None:
                append = changes.append
                for item in items:
                    if type(item) is not list or type(item[0]) is not str or len(item) > 2:
                        changes = None
                        break
                    append((item[0], item[1] if len(item) == 2 else DELETED))
        finally:
            if paused:
                gc.enable()
        if changes is None:
            # Not what was filed as records: load the files, which names a
            # damaged line.
            self._reload_merging(claims)
        else:
            self._absorb(changes, claims)

    def _take_in_text(self, new: tuple, claims: Any) -> None:
        """Others' committed batches read by the store (``(text, bytes
        consumed, first line)``, see :meth:`Store.read_new_text`): filed
        into the backlog, or parsed and taken in."""
        text, consumed, first_line = new
        store = self._store
        filed = self._file(text)
        if filed is None:
            records = journal.parse(text, store.journal_path, first_line)
            store.took(consumed, len(records))
            self._absorb(journal.as_changes(records), claims)
        else:
            store.took(consumed, filed)
            if claims is _ANY:
                self._flush_backlog(claims)
            else:
                for key in claims:
                    self._take_key(key, claims)

    def _take_key(self, key: Any, claims: Any = ()) -> None:
        """Take in others' last record of ``key`` if the backlog holds one
        (only that one: the others wait)."""
        if type(key) is not str:
            return
        with self._sync_lock:
            self._take_key_locked(key, claims)

    def _take_key_locked(self, key: str, claims: Any) -> None:
        kb = key.encode()
        line = self._backlog.pop(kb, None)
        if line is None:
            return
        try:
            item = orjson.loads(line)
        except ValueError:
            item = None
        if type(item) is not list or item[0] != key or not 0 < len(item) < 3:
            self._backlog[kb] = line
            self._flush_backlog(claims)  # which reloads, naming the damage
            return
        change = [(key, item[1] if len(item) == 2 else DELETED)]
        if key in self._dirty or self._pending_keys:
            self._absorb(change, claims)  # ours may win, or merge
        else:
            self._take_in(change, _NOT_OURS)

    def _live_count(self) -> int:
        # Those held, and at most one per key waiting in the backlog
        # (counting some twice only puts a compaction off).
        return len(self._d) + len(self._backlog)

    def _as_on_disk(self, bad: list) -> dict | None:
        if self._backlog or self._stale:
            return None  # others' records are not all in memory
        return super()._as_on_disk(bad)

    def _drop_written(self, keys: Iterable) -> None:
        """Records of ``keys`` were just written after everything in the
        backlog: theirs there would only be undone."""
        backlog = self._backlog
        for key in keys:
            if type(key) is str:
                backlog.pop(key.encode(), None)

    def _load_stale(self) -> None:
        """A read after close, whose backlog was left aside: load afresh."""
        self._stale = False
        self._data = self._store.load()
        self._dirty = {}
        self._added = {}
        self._pending = bytearray()
        self._pending_keys = []
        self._loaded()

    # -- settings ------------------------------------------------------------

    @property
    def max_tries(self) -> int:
        """How many tries a task gets (0: no limit). Settable."""
        return self._max_tries

    @max_tries.setter
    def max_tries(self, value: int | None) -> None:
        self._max_tries = _check_max_tries(value)

    @property
    def lease(self) -> float:
        """Seconds a claimed task stays leased to this process (default one
        hour), unless a call says otherwise. Settable."""
        return self._lease

    @lease.setter
    def lease(self, value: float) -> None:
        self._lease = _check_span(value, "lease")

    @property
    def holder(self) -> str:
        """How lease records name this process: ``"host:pid"``."""
        return _me

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
        if (self._backlog or self._stale) and not self._closing:
            self._take_backlog()
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
        self._absorbed = getattr(self, "_absorbed", 0) + 1
        self._count_all()
        self._lease_index = None
        self._queue = []
        self._queue_pos = 0

    def _take_in(self, changes: list, ours: set) -> None:
        """The POD's, for records: other processes' changes, with the
        counters kept; a record this process changed too is merged with
        theirs (:meth:`_take_in_ours`). With many processes, each takes in
        everything the others write, so this is written out for speed."""
        self._absorbed += 1
        if self._added:
            self._yield_adds(changes, ours)
        data = self._data
        dirty = self._dirty
        lent = self._lent
        index = self._lease_index
        get = data.get
        done = tried = aborted = 0
        slow = []
        for key, value in changes:
            if (
                key in ours
                or value is DELETED
                or (dirty and key in dirty)
                or (lent and key in lent)
                or type(value) is not dict
            ):
                slow.append((key, value))
                continue
            old = get(key)
            data[key] = value
            try:
                if old is not None:
                    if old["_done"]:
                        done -= 1
                    if old["_tries"] > 0:
                        tried -= 1
                    if old["_aborted"]:
                        aborted -= 1
                if value["_done"]:
                    done += 1
                if value["_tries"] > 0:
                    tried += 1
                if value["_aborted"]:
                    aborted += 1
            except (KeyError, TypeError, IndexError):
                # Not a plain record (damaged by hand): count everything
                # again; the keys after this one add to that count.
                self._count_all()
                done = tried = aborted = 0
            if index is not None and "_lease_until" in value:
                index[key] = None
        self._n_done += done
        self._n_tried += tried
        self._n_aborted += aborted
        if slow:
            self._take_in_ours(slow, ours)

    def _replaced(self, key: Any, old: Any, new: Any) -> None:
        lent = self._lent
        if key in lent:
            c_old = lent.pop(key)
        else:
            c_old = 0 if old is _MISSING else _contrib(old)
        self._shift(c_old, 0 if new is _MISSING else _contrib(new))
        if type(new) is dict and "_lease_until" in new:
            index = self._lease_index
            if index is not None:
                index[key] = None

    def _reload(self, ours: set) -> None:
        # The files were replaced since we last looked. What the quick path
        # wrote since the store last confirmed the live journal is in the
        # new generation when the old journal ends with a seal: a compaction
        # or a repair took it in under the lock, then sealed it. Writing
        # those keys again would then undo what others wrote of them since,
        # from our older copies. Without a seal, the journal was deleted or
        # moved by something else, and the quick writes went to a dead file:
        # keep those keys as unsynced changes, written again into the live
        # generation instead of being lost.
        keys = self._unconfirmed
        if keys:
            self._unconfirmed = []
        tail = self._tail
        if keys and (tail is None or not tail.sealed()):
            data = self._data
            dirty = self._dirty
            for key in dict.fromkeys(keys):
                if key in data:
                    dirty[key] = _CHANGED
                else:
                    self._pending += b"[%b]\n" % dumps(key)
                    self._pending_keys.append(key)
        # Records added here and not yet written: as added, they yield to
        # the disk's record of their key; changed since, they win; either
        # way they are kept where the disk has none.
        added = self._added
        adds = [(k, rec) for k, rec in added.items() if self._d.get(k) is rec]
        pending = set(self._pending_keys) if adds else set()
        for key, _ in adds:
            ours.discard(key)  # the POD's reload keeps ours over the disk's
        super()._reload(ours)
        data = self._d
        for key, rec in adds:
            old = data.get(key, _MISSING)
            if old is rec:
                continue
            if old is not _MISSING and records.as_added(rec, key in pending):
                del added[key]  # yields
                self._dirty.pop(key, None)
                continue
            data[key] = rec
            self._shift(0 if old is _MISSING else _contrib(old), _contrib(rec))

    def _sync(self, durable: bool = True) -> None:
        # The tracker's own ordinary write, not the POD's: it takes in what
        # others wrote before it encodes what to write, which records added
        # here need (they give way to others' records, see _add_new).
        if self._closed:
            self._refuse_closed()
        self._transact_ordinary(_nothing, (), durable)

    def _exit_sync(self) -> None:
        if self._closed:
            return
        try:
            self._release_held()
        finally:
            if self._unsynced() or self._since_durable:
                with self._leaving_backlog():
                    self.sync()

    @contextmanager
    def _leaving_backlog(self) -> Iterator[None]:
        """For the last sync (close, exit): others' records in the backlog
        are not taken in (with many processes that would parse everything
        the others did, only to throw it away), except those of the keys
        this process writes, which are merged with its changes (see
        :meth:`_take_ours`). A read afterwards loads afresh."""
        if not self._backlog or self._closing:
            yield
            return
        self._closing = True
        try:
            yield
        finally:
            self._closing = False
            self._backlog = {}
            self._stale = True

    def _release_held(self) -> None:
        """End the leases this object granted and still holds (at exit, close
        and garbage collection); their tries stay counted: the tasks were
        handed out. Not those of another tracker object of this process."""
        try:
            if self._granted:
                self._release(list(self._granted), True, self._granted)
        except Exception:
            log.exception("tastypy: could not release the leases held in %s", self.path)

    def close(self) -> None:
        try:
            if not self._closed:
                self._release_held()
            with self._leaving_backlog():
                super().close()
        finally:
            if self._tail is not None:
                self._tail.close()

    def __del__(self) -> None:
        # Dropped without close(): nobody can end its leases any more.
        if not getattr(self, "_closed", True) and getattr(self, "_tail", None) is not None:
            self._release_held()
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
        if not (
            # A whole record of the usual shape passes without a call (W1).
            type(value) is dict
            and type(value.get("_done")) is bool
            and type(value.get("_aborted")) is bool
            and type(value.get("_tries")) is int
            and value["_tries"] >= 0
        ):
            _check_record(key, value)
        data = self._d if not (self._backlog or self._stale) else self._data
        lent = self._lent
        if key in lent:
            c_old = lent.pop(key)
        else:
            old = data.get(key, _MISSING)
            c_old = 0 if old is _MISSING else _contrib(old)
        epoch = self._epoch
        try:
            self._assign(key, value, data)
        finally:
            # Count what is there now: the new record, or the old one if the
            # assignment was refused (a sync that failed after it left the
            # new one). A full count meanwhile did it already.
            if self._epoch == epoch:
                cur = data.get(key, _MISSING)
                c_new = 0 if cur is _MISSING else _contrib(cur)
                if c_new != c_old:
                    self._shift(c_old, c_new)
        if "_lease_until" in value and self._lease_index is not None:
            self._lease_index[key] = None

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
            if record.get("_done") is True and "_lease_until" not in value:
                # Marked done through the merge: its lease ends, as with mark_done.
                record.pop("_lease_until", None)
                record.pop("_holder", None)
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
            rec = self._known(key)[key]
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

    def _yield_adds(self, changes: list, ours: set | None = None) -> None:
        """Other processes' ``changes``, about to be taken in: a record added
        here and not yet written, still as added (read maybe, not changed),
        gives way to theirs. (Not one deleted here before it was added: the
        deletion is written too.)"""
        added = self._added
        data = self._d
        dirty = self._dirty
        pending = set(self._pending_keys)
        for key, _ in changes:
            rec = added.get(key)
            if rec is not None and data.get(key) is rec and records.as_added(rec, key in pending):
                del added[key]
                dirty.pop(key, None)  # a read's mark
                if ours and key in ours:
                    ours.discard(key)

    def _unsynced(self) -> bool:
        return bool(self._dirty or self._pending or self._added)

    def _num_dirty(self) -> int:
        return len(self._dirty) + len(self._pending_keys) + len(self._added)

    def dirty(self) -> set:
        return super().dirty() | set(self._added)

    def _settle_adds(self) -> None:
        """Before writing records added here, under the lock, after reading
        what others wrote: take in the backlog, so that others' records of
        those keys win over the adds (see :meth:`_yield_adds`)."""
        if self._backlog:
            self._flush_backlog()

    def _dirty_records(
        self, data: dict, bad: list | None = None, marks: Any = None
    ) -> tuple | None:
        if self._backlog:
            self._take_ours()
        # The records added here and not yet written go first, each marked
        # by its record (which no hash equals, so it is written; and which
        # _prune_added recognises after the write).
        added = self._added
        if added:
            marks = [*added.items(), *self._dirty.items()]
        return super()._dirty_records(data, bad, marks)

    def _take_ours(self) -> None:
        """Before this process writes its changes (under the sync lock):
        others' records of the same keys, filed in the backlog, are taken in
        first and merged with ours. Left there, ours would be written over
        them unmerged, and the write would drop them as older."""
        backlog = self._backlog
        keys = [
            key
            for key in (*self._dirty, *self._pending_keys, *self._added)
            if type(key) is str and key.encode() in backlog
        ]
        for key in keys:
            self._take_key_locked(key, ())

    def _prune_added(self, handled: list) -> None:
        """After a write: forget the adds it covered (added again since: kept)."""
        added = self._added
        for key, marker in handled:
            if added.get(key) is marker:
                del added[key]

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

    def mark_done(self, key: Any) -> None:
        """Mark the task done, and end its lease (unless another worker took
        the task over after this one's lease ran out: that lease stays). It
        is written at the next try, sync or exit."""
        # Under the sync lock: another thread taking in a newer record of
        # the task meanwhile would leave the done mark on a copy dropped.
        with self._sync_lock:
            if self._backlog:
                self._take_key(key)
            rec = self._d.get(key)
            if type(rec) is not dict or "_done" not in rec or self._closed or key in self._lent:
                rec = self._rec(key)
            changed = "_lease_until" in rec and self._end_lease(key, rec)
            if not rec["_done"]:
                rec["_done"] = True
                self._n_done += 1
            elif not changed:
                return
            dirty = self._dirty
            dirty[key] = _CHANGED
        if len(dirty) + len(self._pending_keys) >= self.sync_at and not self._held:
            self.sync()

    def _end_lease(self, key: Any, rec: dict) -> bool:
        """End the lease in ``rec`` as the task's outcome is recorded; but not
        another live holder's (this one's ran out and the task was taken
        over): False then, with ``rec`` unchanged."""
        holder = rec.get("_holder")
        if (
            holder != _me
            and holder is not None
            and records.lease_runs(rec, _me, self._clock(), holder_gone)
        ):
            return False
        rec.pop("_lease_until", None)
        rec.pop("_holder", None)
        if holder == _me:
            self._granted.pop(key, None)
        return True

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
        rec = self._known(key).get(key)
        return type(rec) is dict and bool(rec.get("_done"))

    def check(self, key: Any) -> bool:
        """Whether the task is done (False if it is not there), as in the 0.0.3 manual."""
        return self.done(key)

    # -- deciding what to do ---------------------------------------------------------

    def should_do(self, key: Any, allow_aborted: bool = False) -> bool:
        """True if the task is not done, not aborted (unless ``allow_aborted``)
        and tried fewer than ``max_tries`` times."""
        return records.may_run(self._rec(key), self._max_tries, allow_aborted)

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
            claimed["_holder"] = _me
        else:
            # Changed in place, and taken back if it is not written.
            tries = rec["_tries"]
            rec["_tries"] = tries + 1
            rec["_lease_until"] = until
            rec["_holder"] = _me
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

    def _took_chunk(self, tail: TailAppender, chunk: bytes, written: list) -> None:
        """After a quick write: others' batches ``chunk``, before ours in the
        journal (none of them about a key we wrote), filed or taken in."""
        filed = None
        if chunk:
            self._contended = True
            filed = self._file(chunk)
            if filed is not None:
                self._store.journal_records += filed
        else:
            self._contended = False
        if self._backlog:
            self._drop_written(written)
            if len(self._backlog) > _BACKLOG_MAX:
                self._flush_backlog()  # memory stays bounded
        if chunk and filed is None:
            self._take_in(tail.records_of(chunk), set(written))

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
        return records.may_run(rec, self._max_tries, allow_aborted, now, _me, holder_gone)

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
        rec["_holder"] = _me
        granted[key] = until
        if started is not None:
            rec["_started"] = started
            rec.pop("_ended", None)
        dirty[key] = _CHANGED
        index = self._lease_index
        if index is not None:
            index[key] = None

    def _rollback(self, undo: list) -> None:
        """Take back the grants of a decision whose write failed."""
        data = self._data
        dirty = self._dirty
        granted = self._granted
        for key, rec, saved, marker, grant in reversed(undo):
            if grant is _MISSING:
                granted.pop(key, None)
            else:
                granted[key] = grant
            if saved is None:  # a record the grant created
                if data.get(key) is rec:
                    del data[key]
                self._shift(_contrib(rec), 0)
            else:
                c_now = _contrib(rec)
                rec.clear()
                rec.update(saved)
                self._shift(c_now, _contrib(rec))
            if marker is _MISSING:
                dirty.pop(key, None)
            else:
                dirty[key] = marker

    # -- writing under the lock --------------------------------------------------------

    def _clock(self) -> float:
        """Seconds since the epoch on the clock leases are judged by: this
        host's clock, corrected on shared filesystems by the offset to the
        filesystem's own clock (see ``docs/leases.md``)."""
        return _time() + self._clock_offset

    def _measure_clock(self) -> None:
        """After an append through the ordinary path: compare the journal's
        modification time, just set by the filesystem, with this host's clock."""
        now = time.monotonic()
        if now < self._clock_next:
            return
        self._clock_next = now + _CLOCK_EVERY
        mtime = file_time(self._store.journal_path)
        if mtime is None:
            return
        samples = self._clock_samples
        samples.append(mtime - _time())
        del samples[:-_CLOCK_SAMPLES]
        offset = sorted(samples)[len(samples) // 2]
        if abs(offset) > _CLOCK_WARN and abs(self._clock_offset) <= _CLOCK_WARN:
            log.warning(
                "tastypy: the clock of this host is %+.1f s off the clock of the filesystem "
                "holding %s; leases are judged by the filesystem's clock.",
                -offset,
                self.path,
            )
        self._clock_offset = offset

    def _transact(self, decide: Callable[[], Any], claims: Any = (), durable: bool | None = None):
        """Run ``decide()`` under the directory lock, after taking in what
        other processes wrote, then write every unsynced change (the
        decision's too) before the lock is released. Returns what
        ``decide`` returned.

        ``claims``: the keys ``decide`` may lease (``_ANY``: any). Without
        fsync, except every ``sync_at`` writes (or with ``durable=True``).
        Inside :meth:`hold`, decides on what this process knows and writes
        nothing.
        """
        if self._closed:
            self._refuse_closed()
        if self._held:
            return decide()
        if durable is None:
            self._since_durable += 1
            durable = self._since_durable >= self.sync_at
        if not durable and len(self._unconfirmed) < _CONFIRM_AT:
            tail = self._tail
            if tail is not None and tail.enabled:
                done, result = self._transact_quick(tail, decide, claims)
                if done:
                    return result
        for attempt in range(_RACE_RETRIES):
            try:
                return self._transact_ordinary(decide, claims, durable)
            except CommitRaced:
                # Another process committed first (the shared store): the
                # decision was taken back; take its commit in, decide again.
                if attempt == _RACE_RETRIES - 1:
                    raise
        raise AssertionError("the loop above returns or raises")

    def _transact_quick(self, tail: TailAppender, decide: Callable[[], Any], claims: Any):
        """The transaction through the tail appender; ``(False, None)``, with
        nothing decided, if the ordinary path must do it (see
        :mod:`tastypy.storage.tail`)."""
        with self._sync_lock:
            # A SIGTERM handler (it syncs) must wait until the lock file is
            # released again.
            main = _exit.enter()
            try:
                return self._session(tail, decide, claims)
            finally:
                if main:
                    _exit.leave()

    def _session(self, tail: TailAppender, decide: Callable[[], Any], claims: Any):
        """Take in what others wrote, then, under the lock, what came
        meanwhile; ``decide()`` and write. ``(True, what decide returned)``,
        or ``(False, None)`` with nothing decided or written when the
        ordinary path must do it. The caller holds ``_sync_lock``."""
        self._catch_up(claims)
        changes = tail.begin(lambda: self._catch_up(claims))
        if changes is None:
            return False, None
        undo = self._undo = []
        written = False
        try:
            if changes:
                self._absorb(changes, claims)
            else:
                self._contended = False
            if self._added:
                self._settle_adds()
            result = decide()
            written = self._write_session(tail)
        finally:
            self._undo = None
            tail.end()
            if not written:
                self._rollback(undo)
        if written:
            return True, result
        return False, None

    def _quick_write(self, tail: TailAppender, key: Any) -> bool | None:
        """Append every unsynced change, after what others wrote since the
        store last looked if none of it mentions ``key`` (the task being
        claimed) or another key written (ours would go over theirs
        unmerged), then file that (the appender takes and gives back the
        lock). True if written (or nothing to write); False, with nothing
        written, if that cannot be (a key mentioned, the journal changed,
        the lock stayed busy, the write failed); None if a value JSON cannot
        hold is waiting (the ordinary sync names it).

        The hot path of a try loop: :meth:`_batch` and :meth:`_written`
        written out in one."""
        data = self._d
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
        waiting = self._dirty_records(data)
        if waiting is None:
            return None
        more, written, handled = waiting
        lines += more
        count += len(more)
        if not count:
            return True
        if n_bytes:
            written += self._pending_keys[:n_keys]
        written.append(key)
        chunk = tail.append_after(_framed(lines, count, self._store.gzipped), count, written)
        if chunk is None:
            return False
        unconfirmed = self._unconfirmed
        if n_bytes:
            unconfirmed.extend(self._pending_keys[:n_keys])
            del pending[:n_bytes]
            del self._pending_keys[:n_keys]
        for other, marker in handled:
            unconfirmed.append(other)
            if dirty.get(other, _MISSING) is marker:
                del dirty[other]
        self._took_chunk(tail, chunk, written)
        return True

    def _batch(self) -> tuple | None:
        """Every unsynced change as one framed batch for the appender:
        ``(batch, count, n_bytes, n_keys, handled)``; None if a value JSON
        cannot hold is waiting."""
        data = self._data
        pending = self._pending
        n_bytes = len(pending)
        n_keys = len(self._pending_keys)
        body = pending[:n_bytes]
        records = self._dirty_records(data)
        if records is None:
            return None
        lines, _, handled = records
        count = body.count(b"\n") + len(lines)
        if count:
            return (
                _framed([body, *lines], count, self._store.gzipped),
                count,
                n_bytes,
                n_keys,
                handled,
            )
        return body, count, n_bytes, n_keys, handled

    def _written(self, n_bytes: int, n_keys: int, handled: list) -> None:
        """A quick write went through: forget what it covered (changes other
        threads made meanwhile stay), and remember its keys until the store
        confirms that the journal is still the live one."""
        unconfirmed = self._unconfirmed
        dirty = self._dirty
        if n_bytes:
            unconfirmed.extend(self._pending_keys[:n_keys])
            del self._pending[:n_bytes]
            del self._pending_keys[:n_keys]
        for key, marker in handled:
            unconfirmed.append(key)
            if dirty.get(key, _MISSING) is marker:
                del dirty[key]
        if self._added:
            self._prune_added(handled)

    def _write_session(self, tail: TailAppender) -> bool | None:
        """Append every unsynced change inside the appender's session (the
        lock is held). True if written (or nothing to write); False, with
        nothing written, if the write failed; None if a value JSON cannot
        hold is waiting (the ordinary sync names it)."""
        batch = self._batch()
        if batch is None:
            return None
        body, count, n_bytes, n_keys, handled = batch
        if count and not tail.write(body, count):
            return False
        self._written(n_bytes, n_keys, handled)
        return True

    def _transact_ordinary(self, decide: Callable[[], Any], claims: Any, durable: bool):
        store = self._store
        bad: list = []
        if self._contended:
            with self._sync_lock:
                self._catch_up(claims)
        with self._locked():
            confirmed = len(self._unconfirmed)
            if self._tail is not None and self._tail.enabled:
                new = store.read_new_text()
                if new is None:
                    self._reload_merging(claims)
                elif new[0]:
                    self._take_in_text(new, claims)
                self._contended = new is None or bool(new[0])
            else:
                changes = store.read_new()
                if changes is None:
                    self._reload_merging(claims)
                elif changes:
                    self._absorb(changes, claims)
                self._contended = bool(changes)
            # Read under the lock, in our generation: earlier quick writes
            # went to the live journal.
            del self._unconfirmed[:confirmed]
            if self._added:
                self._settle_adds()
            undo = self._undo = []
            try:
                result = decide()
                batch = self._collect()
                count = batch[1]
                if count:
                    store.append(batch[0], count, durable)
            except BaseException:
                self._rollback(undo)
                raise
            finally:
                self._undo = None
            bad = batch[5]
            self._forget(batch)
            if durable:
                if not count and self._since_durable and self._tail is not None:
                    # Nothing appended, so no fsync happened: make the quick
                    # path's writes durable now.
                    self._tail.fsync()
                self._since_durable = 0
            if count and (self._tail is None or not self._tail.enabled):
                self._measure_clock()
            store.maybe_compact(self._live_count(), lambda: self._as_on_disk(bad))
        if bad:
            self._refuse_bad(bad)
        return result

    def _collect(self) -> tuple:
        """The unsynced changes as one batch body for the ordinary path:
        ``(body, count, n_bytes, n_keys, handled, bad, written)``. A value
        JSON cannot hold is left out and listed in ``bad``; ``written``: the
        keys of ``handled`` whose record is in the body."""
        data = self._d
        n_bytes = len(self._pending)
        n_keys = len(self._pending_keys)
        body = self._pending[:n_bytes]
        bad: list = []
        lines, written, handled = self._dirty_records(data, bad)
        body += b"".join(lines)
        return body, body.count(b"\n"), n_bytes, n_keys, handled, bad, written

    def _forget(self, batch: tuple) -> None:
        """Written: forget what the batch covered (changes made meanwhile by
        other threads stay for the next write)."""
        _, _, n_bytes, n_keys, handled, _, written = batch
        if self._backlog:
            # Others' records there came before ours in the journal: ours win.
            self._drop_written(written)
            self._drop_written(self._pending_keys[:n_keys])
        dirty = self._dirty
        for key, marker in handled:
            if dirty.get(key, _MISSING) is marker:
                del dirty[key]
        if self._added:
            self._prune_added(handled)
        if n_bytes:
            del self._pending[:n_bytes]
            del self._pending_keys[:n_keys]

    def _refuse_bad(self, bad: list) -> None:
        key, exc = bad[0]
        raise InvalidValueError(
            f"could not sync key {key!r}: {exc}. Its value was changed in place into "
            f"something JSON cannot hold; set tracker[{key!r}] to a JSON value. Every other "
            "key was synced."
        )

    def _catch_up(self, claims: Any) -> None:
        """Take in, without the directory lock, what other processes wrote
        since this process last looked (or load afresh after a compaction),
        so that the write that follows holds the lock only for what comes
        meanwhile: with many processes taking turns at the lock, the turns
        stay short. The caller holds ``_sync_lock``."""
        tail = self._tail
        if tail is not None and tail.enabled:
            chunk = tail.peek()
            if chunk is None:
                self._reload_merging(claims)
            elif chunk and not self._take_in_chunk(chunk, claims):
                self._reload_merging(claims)
            return
        changes = self._store.read_new()
        if changes is None:
            self._reload_merging(claims)
        elif changes:
            self._absorb(changes, claims)

    def _take_in_chunk(self, chunk: bytes, claims: Any, count: bool = True) -> bool:
        """Others' whole batches read by the tail: filed into the backlog
        (the records of ``claims`` taken in at once), or parsed and taken in;
        counted into the store's records unless ``count`` is False. False,
        with nothing taken in, if a line is damaged (loading names it)."""
        store = self._store
        records = store.journal_records
        filed = self._file(chunk)
        if filed is None:
            try:
                changes = self._tail.records_of(chunk)
            except CorruptFileError:
                return False
            if not count:
                store.journal_records = records
            self._absorb(changes, claims)
            return True
        if count:
            store.journal_records += filed
        if claims is _ANY or len(self._backlog) > _BACKLOG_MAX:
            self._flush_backlog(claims)
        else:
            for key in claims:
                self._take_key(key, claims)
        return True

    def _reload_merging(self, claims: Any) -> None:
        """Load the disk afresh (another process compacted), keeping this
        process's unsynced changes, merged with the disk's records of their
        keys (see :meth:`_kept`).

        When this process had read the old journal to its end, it holds the
        new snapshot already, and only takes in the new journal (see
        :meth:`TailAppender.follow`): with many processes, each would
        otherwise parse the whole tracker again after every compaction."""
        tail = self._tail
        if tail is not None and tail.enabled:
            texts = tail.follow()
            if texts is not None:
                # Every quick write went to the old journal before the
                # compaction took it in (each checked, under the lock,
                # that the journal was still the live one).
                self._unconfirmed.clear()
                rest, more = texts
                if (not rest or self._take_in_chunk(rest, claims, count=False)) and (
                    not more or self._take_in_chunk(more, claims)
                ):
                    return
        ours = set(self._pending_keys)
        ours.update(self._dirty)
        self._reload(ours)

    def _absorb(self, changes: list, claims: Any) -> None:
        """Take in other processes' changes (under the lock); a record this
        process changed too is merged with theirs (see :meth:`_take_in`).
        (``claims``: the keys being claimed, whose records are taken in
        now rather than filed; see :meth:`_take_in_text`.)"""
        if self._added:
            self._yield_adds(changes)
        ours = set(self._pending_keys)
        ours.update(self._dirty)
        self._take_in(changes, ours)

    def _take_in_ours(self, changes: list, ours: set) -> None:
        """Others' changes of keys this process read or changed (``ours``, or
        marked dirty), of keys lent, deletions, and values that are not
        plain records. A record read here and not changed since takes
        theirs, as any other key does; one changed here is merged with
        theirs (:meth:`_merge_in`). Where either side deleted the key, ours
        wins as before: a record changed here is written again, a deletion
        here is written."""
        data = self._d
        dirty = self._dirty
        pending = set(self._pending_keys)
        rest = []
        for key, value in changes:
            local = data.get(key, _MISSING)
            marker = dirty.get(key)
            if (
                marker is not None
                and key not in pending
                and local is not _MISSING
                and self._read_unchanged(key, local, marker)
            ):
                del dirty[key]  # read here, not changed
                marker = None
            if marker is None and key not in ours:
                rest.append((key, value))
            elif type(local) is dict and type(value) is dict:
                self._merge_in(key, local, value, pending)
        if rest:
            super()._take_in(rest, _NOT_OURS)

    def _merge_in(self, key: Any, local: dict, theirs: dict, pending: Any) -> None:
        """Another process wrote ``theirs`` for ``key``, which this process
        changed too (``local``, not yet written): ``local`` becomes the
        merge of the two (:func:`records.merge`, the one rule), written
        unless it is theirs (then nothing of ours is left to write:
        ``pending``, the keys whose lines wait to be written, still are)."""
        if key in self._lent:
            self._settle_key(key, local)
        merged = records.merge(local, theirs, _me, self._clock(), holder_gone)
        c_old = _contrib(local)
        local.clear()
        local.update(merged)
        self._shift(c_old, _contrib(local))
        if merged == theirs and key not in pending:
            self._dirty.pop(key, None)
            if self._added.get(key) is local:
                del self._added[key]
        else:
            self._dirty[key] = _CHANGED
        if "_lease_until" in local and self._lease_index is not None:
            self._lease_index[key] = None

    def _kept(self, key: Any, local: Any, disk: Any) -> Any:
        # A reload (another process replaced the files): as a take-in.
        if type(local) is dict and type(disk) is dict:
            self._merge_in(key, local, disk, self._pending_keys)
        return local

    # -- running through an executor --------------------------------------------------------

    def run(
        self,
        fn: Callable[[Any], Any],
        keys: Iterable | None = None,
        *,
        executor: Any = None,
        lease: float | None = None,
        chunksize: int = 1,
        max_pending: int | None = None,
        progress: bool | str = False,
        result_field: str | None = "result",
        allow_aborted: bool = False,
    ) -> dict:
        """Run ``fn(key)`` for every task not done, through ``executor``.

        ``executor`` is any :class:`concurrent.futures.Executor`
        (``ProcessPoolExecutor``, ``ThreadPoolExecutor``,
        ``mpi4py.futures.MPIPoolExecutor``, loky's) or a
        ``dask.distributed.Client``; None runs the tasks here, one after
        the other. ``keys`` (default: every task) are added if absent.

        Each worker opens this tracker by its path (once per process; so
        the workers must see the same filesystem), claims each task as
        :meth:`try_it` does, runs ``fn(key)``, and writes the outcome to
        the task's record before reporting back: done, with ``fn``'s return
        value (if not None, and JSON) in ``record[result_field]``; or
        failed, with the error in ``_error`` as :meth:`attempts` records it.
        So what was done survives a crash of this process, and calling
        ``run`` again does only what is left (tasks of a dead worker come
        back as their leases end, at once for a worker of this host).

        ``fn`` must be picklable for process pools (a module-level
        function). ``chunksize`` keys go to a worker at once (more for short
        tasks); at most ``max_pending`` chunks wait in the executor.
        ``progress=True`` shows progress as :meth:`attempts` does.

        Returns a summary: ``{"submitted", "done", "failed", "skipped",
        "left", "seconds", "errors"}``; ``skipped`` counts tasks a worker
        found no longer to do (done or claimed by another process
        meanwhile), ``left`` the tasks still not done among ``keys``, and
        ``errors`` maps up to 100 failed keys to ``"Type: message"``.

        Example::

            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(8) as pool:
                summary = tracker.run(work, executor=pool, progress=True)
        """
        from tastypy.executor import run_tasks

        if self._closed:
            self._refuse_closed()
        if lease is not None:
            _check_span(lease, "lease")
        return run_tasks(
            self,
            fn,
            keys,
            executor,
            lease=lease,
            chunksize=chunksize,
            max_pending=max_pending,
            progress=(lambda: _Progress(self, progress)) if progress else None,
            result_field=result_field,
            allow_aborted=allow_aborted,
            options=self._worker_options(),
        )

    def _worker_options(self) -> dict:
        """How a worker opens this tracker: with the same settings."""
        lock = self._store._lock
        return {
            "max_tries": self._max_tries,
            "lock": getattr(lock, "requested", "auto"),
            "lock_timeout": getattr(lock, "timeout", 600.0),
            "lease": self._lease,
            "sync_at": self.sync_at,
        }

    def flush(self) -> None:
        """Write every change not written yet to the journal now, without
        fsync, as :meth:`try_it` does before it returns True: the changes
        then survive this process's death (not a power loss; :meth:`sync`
        fsyncs)."""
        if self._unsynced():
            self._transact(_nothing)

    # -- claims and leases --------------------------------------------------------------

    def claim(self, n: int = 1, *, lease: float | None = None) -> list:
        """Lease up to ``n`` tasks to this process at once, and count a try of each.

        The keys come in doloop's order: first tasks whose lease expired or
        that were bumped (:meth:`bump`), earliest first; then tasks never
        tried, in insertion order; then tasks tried before, fewest tries
        first (among equals, the one whose last attempt ended longest ago).
        Tasks that are done, aborted, out of tries or leased to another
        process (or already to this one) are not handed out. Decided under
        the directory lock after taking in what other processes wrote, so no
        two processes get the same key while its lease runs::

            while keys := tracker.claim(100, lease=600):
                for key in keys:
                    tracker[key]["result"] = work(key)
                    tracker.mark_done(key)

        An empty list means there is nothing to claim now (tasks leased to
        others may come back when their leases expire). Give back what you
        will not run with :meth:`release`.
        """
        if type(n) is not int or n < 0:
            raise InvalidArgumentError(f"n must be an int >= 0 (how many tasks), got {n!r}.")
        span = self._lease if lease is None else _check_span(lease, "lease")
        if not n:
            return []
        return self._transact(lambda: self._decide_claim(n, span), _ANY)

    def _decide_claim(self, n: int, span: float) -> list:
        data = self._data
        now = self._clock()
        until = _until(self._clock_offset, span)
        granted: list = []
        gone = _gone_memo()
        max_tries = self._max_tries
        for key in self._candidates(now, gone):
            rec = data.get(key)
            if not records.complete(rec):
                continue  # a damaged record: try_it(key) says what is wrong
            if key in self._lent:
                self._settle_key(key, rec)
            # Not a task this process runs already either (me=NOBODY).
            if not records.may_run(rec, max_tries, False, now, records.NOBODY, gone):
                continue
            self._grant(key, rec, until, None, False)
            granted.append(key)
            if len(granted) >= n:
                break
        return granted

    def _candidates(self, now: float, gone: Callable[[Any], bool]) -> Iterator:
        """Keys in claim order; each is checked again by the caller."""
        data = self._data
        index = self._lease_index
        if index is None:
            index = self._lease_index = {
                k: None for k, r in data.items() if type(r) is dict and "_lease_until" in r
            }
        due = []
        for key in list(index):
            rec = data.get(key)
            until = rec.get("_lease_until") if type(rec) is dict else None
            if until is None or rec.get("_done"):
                del index[key]
                continue
            if type(until) not in (int, float) or records.lease_runs(
                rec, records.NOBODY, now, gone
            ):
                continue
            due.append((until, key))
        due.sort(key=lambda item: item[0])
        for _, key in due:
            yield key
        rebuilt = False
        while True:
            queue = self._queue
            while self._queue_pos < len(queue):
                key = queue[self._queue_pos]
                self._queue_pos += 1
                yield key
            if rebuilt:
                return
            rebuilt = True
            self._queue = self._build_queue()
            self._queue_pos = 0

    def _build_queue(self) -> list:
        """Tasks never tried (in order), then tasks tried before (fewest tries,
        then longest ago): what claim() hands out after bumped ones."""
        fresh = []
        tried = []
        max_tries = self._max_tries
        may_run = records.may_run
        for position, (key, rec) in enumerate(self._data.items()):
            if not may_run(rec, max_tries) or "_lease_until" in rec:
                continue  # expired or bumped ones come first, from the index
            tries = rec.get("_tries", 0)
            if not tries:
                fresh.append(key)
            else:
                ended = rec.get("_ended")
                tried.append((tries, ended if type(ended) is str else "", position, key))
        tried.sort(key=lambda item: item[:3])
        fresh.extend(item[3] for item in tried)
        return fresh

    def release(self, keys: Iterable, *, tried: bool = False) -> list:
        """End this process's leases of ``keys`` without marking them done.

        The tasks can be claimed again at once. Their try is given back,
        as if they had not been handed out (they were claimed but not run);
        with ``tried=True`` it stays counted (they ran and failed). Keys not
        leased to this process (done, released, never claimed here, or taken
        over by another process after the lease expired) are left alone.
        Returns the keys released. One str or int key may be given alone.
        """
        return self._release(_key_list(keys), tried, None)

    def _release(self, keys: list, tried: bool, grants: dict | None) -> list:
        """:meth:`release`; with ``grants`` (this object's, see ``_granted``),
        only the leases still as this object wrote them."""

        def decide() -> list:
            data = self._data
            released = []
            for key in keys:
                rec = data.get(key)
                if type(rec) is not dict or rec.get("_holder") != _me:
                    continue
                if grants is not None and rec.get("_lease_until") != grants.get(key):
                    grants.pop(key, None)  # taken again since, by another object
                    continue
                if key in self._lent:
                    self._settle_key(key, rec)
                c_old = _contrib(rec)
                rec.pop("_lease_until", None)
                del rec["_holder"]
                self._granted.pop(key, None)
                tries = rec.get("_tries")
                if not tried and type(tries) is int and tries > 0:
                    rec["_tries"] = tries - 1
                self._shift(c_old, _contrib(rec))
                self._dirty[key] = _CHANGED
                released.append(key)
            if released and self._queue_pos < len(self._queue):
                # Back in claim()'s queue (when it is not built again anyway):
                # never tried again at its head, tried ones at its end.
                if tried:
                    self._queue.extend(released)
                else:
                    self._queue = released + self._queue[self._queue_pos :]
                    self._queue_pos = 0
            return released

        return self._transact(decide)

    def renew(self, keys: Iterable, lease: float | None = None) -> list:
        """Extend this process's leases of ``keys``: they now end ``lease``
        seconds from now (default: the tracker's :attr:`lease`). For tasks
        that run longer than their lease. Returns the keys renewed; a key
        missing from it is no longer leased to this process (done,
        released, or taken over by another process after its lease
        expired). One str or int key may be given alone."""
        keys = _key_list(keys)
        span = self._lease if lease is None else _check_span(lease, "lease")

        def decide() -> list:
            data = self._data
            until = _until(self._clock_offset, span)
            renewed = []
            for key in keys:
                rec = data.get(key)
                if type(rec) is not dict or rec.get("_holder") != _me or rec.get("_done"):
                    continue
                rec["_lease_until"] = until
                if key in self._granted:
                    self._granted[key] = until
                self._dirty[key] = _CHANGED
                renewed.append(key)
            return renewed

        return self._transact(decide)

    def bump(self, keys: Iterable, lease: float = 0) -> None:
        """Move tasks ahead, as doloop's ``bump``: each task's lease now ends
        ``lease`` seconds from now, if that is earlier than it did (a bump
        never pushes a lease later). Tasks whose lease has ended go first in
        :meth:`claim`, earliest first, so ``lease=0`` puts them at the head
        of the queue and a negative lease before those; a positive lease
        keeps them from being claimed until then, and then first. A bump
        also cuts a running lease short (e.g. ``bump(keys)`` hands the tasks
        of a worker known to be dead back at once). Done tasks stay done.
        Raises ``KeyError`` if a key is not in the tracker.
        """
        keys = _key_list(keys)
        span = _check_span(lease, "lease", negative=True)
        data = self._data

        def decide() -> None:
            for key in keys:
                if key not in data:
                    raise self._missing(key)
            until = _until(self._clock_offset, span)
            index = self._lease_index
            for key in keys:
                rec = data.get(key)
                if type(rec) is not dict:
                    continue  # deleted by another process meanwhile
                current = rec.get("_lease_until")
                if type(current) in (int, float) and current <= until:
                    continue
                rec["_lease_until"] = until
                self._dirty[key] = _CHANGED
                if index is not None:
                    index[key] = None

        self._transact(decide)

    def lease_info(self, keys: Iterable | None = None) -> dict:
        """``{key: LeaseInfo(done, tries, holder, lease_left)}`` for ``keys``
        (default: every task that has a lease or a bump), after taking in
        what other processes wrote. ``lease_left`` is in seconds, negative
        once the lease has expired, None for a task without a lease.
        Raises ``KeyError`` for a key not in the tracker. (The manual's
        ``check(key)`` still answers whether one task is done.)"""
        if not self._closed:
            self.refresh()
        data = self._data
        if keys is None:
            keys = [k for k, r in data.items() if type(r) is dict and "_lease_until" in r]
        else:
            keys = _key_list(keys)
        now = self._clock()
        out = {}
        for key in keys:
            rec = data.get(key)
            if rec is None:
                raise self._missing(key)
            if type(rec) is not dict:
                rec = {}
            until = rec.get("_lease_until")
            left = round(until - now, 3) if type(until) in (int, float) else None
            tries = rec.get("_tries", 0)
            holder = rec.get("_holder")
            out[key] = LeaseInfo(
                bool(rec.get("_done")),
                tries if type(tries) is int else 0,
                holder if type(holder) is str else None,
                left,
            )
        return out

    # -- iterating -------------------------------------------------------------------

    def todo_keys(self, allow_aborted: bool = False, keys: Iterable | None = None) -> Iterator:
        """The keys of tasks to do: not done, not aborted (unless
        ``allow_aborted``), tried fewer than ``max_tries`` times. In order;
        with ``keys``, those of them (in their order; keys not here are not
        to do)."""
        data = self._data
        for key in list(data) if keys is None else list(keys):
            if records.may_run(data.get(key), self._max_tries, allow_aborted):
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

        Across those, among the tasks not done: ``leased`` counts the ones
        no other process may take now (leased to a process, or bumped into
        the future, see ``docs/leases.md``), ``expired`` the ones whose
        holder let its lease run out (or is known to have died) without
        ending it: left by a dead worker, or one that runs late. As this
        process knows them: :meth:`refresh` first to see what others wrote.
        """
        max_tries = self._max_tries
        done = aborted = failed = running = leased = expired = 0
        now = self._clock()
        gone = _gone_memo()
        tries_hist: dict = {}
        for rec in self._data.values():
            if type(rec) is not dict:
                continue
            tries = rec.get("_tries", 0)
            tries_hist[tries] = tries_hist.get(tries, 0) + 1
            if rec.get("_done"):
                done += 1
                continue
            if type(rec.get("_lease_until")) in (int, float):
                if records.lease_runs(rec, records.NOBODY, now, gone):
                    leased += 1
                elif rec.get("_holder") is not None:
                    expired += 1
            if rec.get("_aborted"):
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
            "leased": leased,
            "expired": expired,
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
        lease: float | None = None,
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
                if key not in data or not self._try(key, False, allow_aborted, _now(), lease):
                    continue
                task = Task(self, key, True, reraise)
                yield task
                if bar is not None:
                    bar.update(task)
        finally:
            if bar is not None:
                bar.close()

    def attempt(
        self,
        key: Any,
        *,
        reraise: bool = True,
        allow_aborted: bool = False,
        lease: float | None = None,
    ) -> Task:
        """One attempt at ``key`` (added if absent), as a context manager.

        The returned :class:`Task` is false, and its block records nothing,
        when the task is not to be tried (done, aborted, out of tries)::

            with tracker.attempt("job-7") as task:
                if task:
                    task["result"] = work()

        Unlike :meth:`attempts`, an exception is re-raised by default.
        """
        self.add_if_absent(key)
        active = self._try(key, True, allow_aborted, _now(), lease)
        return Task(self, key, active, reraise)

    def _ended(self, key: Any, exc: BaseException | None) -> None:
        rec = self._known(key).get(key)
        if type(rec) is not dict:
            return  # deleted meanwhile
        rec = self._rec(key)
        now = _now()
        # The attempt is over, whatever its outcome: so is its lease. Unless
        # the lease ran out and another worker runs the task now: then only
        # a success is recorded (the work is done); a failure or a try given
        # back is this late attempt's, not the running one's.
        if "_lease_until" in rec and not self._end_lease(key, rec) and exc is not None:
            log.info(
                "tastypy: the attempt at %r in %s ended after its lease, with the task "
                "taken over by %s; its outcome is not recorded",
                key,
                self.path,
                rec.get("_holder"),
            )
            return
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
        self.end(exc)
        return self.outcome == "failed" and not self._reraise

    def end(self, error: BaseException | None = None) -> str | None:
        """End the attempt as its ``with`` block does, for code that cannot
        use one: done if ``error`` is None; failed, with ``error`` recorded
        in ``_error``, for an :class:`Exception`; interrupted (the try given
        back) for anything else (Ctrl-C, an exit). The lease ends. Returns
        the outcome; a task not to run, or already ended, is left as it is::

            task = tracker.attempt(key)
            if task:
                try:
                    task["result"] = work(key)
                except Exception as exc:
                    task.end(exc)
                else:
                    task.end()
        """
        if not self._active or self.outcome is not None:
            return self.outcome
        if error is None:
            self.outcome = "done"
        elif isinstance(error, Exception):
            self.outcome = "failed"
        else:
            self.outcome = "interrupted"
        self.tracker._ended(self.key, error)
        return self.outcome


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
        self.done_here = 0
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

    def step(self, outcome: str) -> None:
        """One task of :meth:`ProgressTracker.run` ended (done here by a worker
        the tracker takes in only at the end: counted here)."""
        if outcome == "done":
            self.done_here += 1
        self._show(outcome, self.start_done + self.done_here)

    def update(self, task: Task) -> None:
        self._show(task.outcome, self.tracker.num_done())

    def _show(self, outcome: str | None, done: int) -> None:
        if outcome == "failed":
            self.failed += 1
        bar = self.bar
        if bar is not None:
            if bar.total != len(self.tracker):
                bar.total = len(self.tracker)
            if done != bar.n:
                bar.update(done - bar.n)
            if outcome == "failed":
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
        done = max(self.tracker.num_done(), self.start_done + self.done_here)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.close()
        else:
            self._line(done, time.monotonic())
