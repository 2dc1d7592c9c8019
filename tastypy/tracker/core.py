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

The class is put together from one mixin per responsibility (see the
package's docstring); this module holds what ties them together: opening and
closing, the settings, the hooks of the POD, and the mapping.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from tastypy import records
from tastypy._args import check_path
from tastypy.codec import check_key
from tastypy.errors import InvalidValueError
from tastypy.pod import _MISSING, DEFAULT_FILE_SIZE, DEFAULT_SYNC_AT, PersistentOrderedDict, _Setter
from tastypy.tracker import _common, heartbeat, settings
from tastypy.tracker._common import _DEFAULTS, _check_span, _nothing
from tastypy.tracker.attempts import AttemptsMixin
from tastypy.tracker.backlog import BacklogMixin
from tastypy.tracker.compat import CompatMixin
from tastypy.tracker.counters import CountersMixin, _contrib
from tastypy.tracker.fetching import FetchMixin
from tastypy.tracker.leases import LeasesMixin
from tastypy.tracker.marks import MarksMixin
from tastypy.tracker.merging import MergingMixin
from tastypy.tracker.settings import DEFAULT_LEASE, check_max_tries
from tastypy.tracker.taskfiles import TaskFilesMixin
from tastypy.tracker.transact import TransactMixin, _Writer
from tastypy.tracker.trying import TryingMixin

__all__ = ["DEFAULT_LEASE", "ProgressTracker", "Tracker"]


def _check_record(key: Any, value: Any) -> None:
    """Refuse what cannot be a task record; fill in the fields it lacks."""
    if not records.is_record(value):
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


class ProgressTracker(
    FetchMixin,
    TaskFilesMixin,
    CompatMixin,
    AttemptsMixin,
    LeasesMixin,
    TryingMixin,
    MarksMixin,
    CountersMixin,
    TransactMixin,
    MergingMixin,
    BacklogMixin,
    PersistentOrderedDict,
):
    """A POD whose values are task records, for jobs that must resume after a crash.

    ``max_tries`` (0: no limit) is how many times a task is tried before it
    counts as failed; ``lease`` how many seconds a task stays leased to the
    process that claimed it, renewed by the process's heartbeat while it
    lives; ``redo_after`` (seconds; 0: never) makes a done task due again
    that long after it was done (``_done_at``), for loops that keep things
    fresh (``docs/recipes/freshness-loop.md``). All three are stored with
    the tracker (``tracker.json``): left out (None), they are the stored
    ones (else no limit, two minutes, no redo); a value given that differs
    is stored, and the change logged. The rest is
    as for :class:`~tastypy.PersistentOrderedDict`; the positional call of
    tastypy 0.0.3, ``Tracker(path, max_tries, init, gzipped, file_size,
    sync_at, clone)``, is accepted.

    Example::

        >>> from tastypy import Tracker
        >>> tracker = Tracker(tmp_path / "my.tracker", max_tries=3)
        >>> for name in ["a", "b", "c"]:
        ...     if not tracker.try_it(name):
        ...         continue
        ...     tracker.mark_done(name)
        ...     tracker[name]["result"] = name.upper()
        >>> tracker.num_done(), tracker["b"]["result"], sorted(tracker["b"])
        (3, 'B', ['_aborted', '_done', '_done_at', '_tries', 'result'])
        >>> tracker.close()

    A missing key passed to :meth:`mark_done`, :meth:`tries` and the other
    per-key methods raises ``KeyError`` naming it; :meth:`try_it`,
    :meth:`should_do_add` and :meth:`should_try_add` add it, and
    :meth:`done` and :meth:`check` answer False.
    """

    _KIND = "tracker"

    # Each handle's own (see PersistentOrderedDict.__slots__): its settings,
    # the leases it granted (ended when it closes, renewed by the
    # heartbeat), not those of another handle on the same state, and the
    # tasks it handed out whose block has not begun (their tries given back
    # when it closes).
    __slots__ = ("_max_tries", "_lease", "_granted", "_unstarted", "_beat_failed")

    def __new__(cls, path: Any = None, *args: Any, shards: int | None = None, **kwargs: Any) -> Any:
        # A tracker split into parts (made with shards=, or found on disk) is
        # a layer over trackers like this one: see tastypy/parts.py.
        if cls is ProgressTracker and path is not None:
            from tastypy.storage import parts

            if shards is not None or parts.is_parted(check_path(path)):
                from tastypy.parts import PartedTracker

                return PartedTracker(path, *args, shards=shards, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_tries: int | None = None,
        init: Mapping | Any = None,
        gzipped: bool = False,
        file_size: int = DEFAULT_FILE_SIZE,
        sync_at: int = DEFAULT_SYNC_AT,
        clone: bool = True,
        *,
        lock: str = "auto",
        lock_timeout: float = 600.0,
        lease: float | None = None,
        storage: str | None = None,
        shards: None = None,  # not None: __new__ made a PartedTracker instead
        redo_after: float | None = None,
    ):
        # Checked before anything is opened; the stored ones are read after.
        self._max_tries = 0 if max_tries is None else check_max_tries(max_tries)
        self._lease = DEFAULT_LEASE if lease is None else _check_span(lease, "lease")
        self._redo_after = 0.0 if redo_after is None else settings.check_redo_after(redo_after)
        self._init_backlog()
        self._init_marks()
        self._init_leases()
        self._init_transact()
        # Bumped whenever changes of other processes are taken in.
        self._absorbed = 0
        self._init_counters()
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
        try:
            self._max_tries, self._lease, self._redo_after = settings.resolve(
                self.path, max_tries, lease, self._locked, redo_after
            )
        except BaseException:
            self.close()
            raise
        heartbeat.watch(self)

    # -- settings ------------------------------------------------------------

    @property
    def max_tries(self) -> int:
        """How many tries a task gets (0: no limit). Settable, for this
        object only (what is stored changes when the tracker is opened
        with another value)."""
        return self._max_tries

    @max_tries.setter
    def max_tries(self, value: int | None) -> None:
        self._max_tries = 0 if value is None else check_max_tries(value)

    @property
    def lease(self) -> float:
        """Seconds a claimed task stays leased to this process (default two
        minutes), unless a call says otherwise; the heartbeat renews it
        while this process lives. Settable, for this object only."""
        return self._lease

    @lease.setter
    def lease(self, value: float) -> None:
        self._lease = _check_span(value, "lease")

    @property
    def redo_after(self) -> float:
        """Seconds after which a done task is due again (0: done stays
        done): :meth:`claim`, :meth:`try_it`, :meth:`todo_keys` and
        :meth:`run` then take it again, least recently done first.
        Settable, for this object and the other handles on its state
        (``clone=True``, ``docs/compat.md``): the claim queue they share is
        built by it."""
        return self._redo_after

    @redo_after.setter
    def redo_after(self, value: float | None) -> None:
        self._redo_after = 0.0 if value is None else settings.check_redo_after(value)
        # Built by the old rule (done tasks' bumps left out of the index).
        self._lease_index = None
        self._queue = []
        self._queue_pos = 0

    def _redo(self, now: float) -> float | None:
        """The run rule's ``redo`` at ``now`` (:func:`records.may_run`):
        tasks done at or before it are due again; None without redo_after."""
        after = self._redo_after
        return now - after if after else None

    @property
    def holder(self) -> str:
        """How lease records name this process: ``"host:pid"``."""
        return _common._me

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, {len(self._data)} tasks, {self.num_done()} done)"
        )

    # -- hooks of the POD ------------------------------------------------------

    def _loaded(self) -> None:
        self._absorbed = getattr(self, "_absorbed", 0) + 1
        self._count_all()
        self._lease_index = None
        self._queue = []
        self._queue_pos = 0

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

    def _sync(self, durable: bool = True, compact: bool = False) -> None:
        # The tracker's transaction, which takes in what others wrote
        # before it encodes what to write, as records added here need
        # (they give way to others' records, see _add_new).
        if self._closed:
            self._refuse_closed()
        self._transact(_nothing, (), durable, compact, write=True)

    def _exit_sync(self) -> None:
        if self._closed:
            return
        try:
            self._release_held()
        finally:
            if self._unsynced() or self._since_durable:
                with self._leaving_backlog():
                    self.sync()

    def close(self) -> None:
        heartbeat.unwatch(self)
        if not self._closed:
            self._release_held()
        if self._closed or len(self._handles) > 1:
            # Other handles go on with the state: its backlog stays.
            super().close()
            return
        with self._leaving_backlog():
            super().close()

    def _forget_parents_changes(self) -> None:
        super()._forget_parents_changes()
        self._added = {}
        self._since_durable = 0
        self._undo = None
        self._writer = _Writer(None)

    def _forked_handle(self) -> None:
        # The parent's leases name the parent, whose heartbeat renews them
        # and whose close ends them; the child's own are granted anew.
        self._granted = {}
        self._unstarted = {}
        self._beat_failed = False

    def _dropped(self) -> None:
        if sys is None or sys.is_finalizing():
            # The interpreter is being torn down (builtins such as open may
            # be gone, and this module's globals with them): the exit sync
            # has run already, and a second try could only add a confusing
            # error to the one it logged.
            self._closed = True
        elif not getattr(self, "_closed", True):
            # Dropped without close(): nobody can end its leases any more.
            self._release_held()
        super()._dropped()

    # -- the mapping -------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if type(value) is dict:
            value = self._hand_out(key, value)
        lent = self._lent
        if key not in lent:
            lent[key] = _contrib(value)
        return value

    def _hand_out(self, key: Any, rec: dict) -> records.Record:
        """The record of ``key`` as a :class:`~tastypy.records.Record`, which
        checks what is assigned into it at that line: it takes the plain
        dict's place (once per record read) wherever the tracker holds it."""
        with self._sync_lock:
            data = self._d
            if data.get(key) is not rec:
                return rec  # replaced by another thread meanwhile
            out = records.Record(key, rec)
            data[key] = out
            if self._added.get(key) is rec:
                self._added[key] = out
        return out

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

    def _assign(self, key: Any, value: Any, data: dict) -> None:
        """A checked key's record (see :meth:`__setitem__`) into ``data``."""
        if type(value) is records.Record:
            value = dict(value)  # a record read from a tracker: not shared
        super()._assign(key, value, data)

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
        is checked before anything changes. Several mappings (or iterables
        of pairs) are merged in turn, keyword arguments last, as in 0.0.3.
        ``tracker.update(key)``, with one existing key, syncs that key (see
        :meth:`sync_key`).
        """
        if len(args) == 1 and not kwargs and type(args[0]) in (str, int):
            if args[0] in self._data:
                self.sync_key(args[0])
                return
        items: list = []
        for arg in args:
            if isinstance(arg, Mapping):
                items.extend(arg.items())
            elif hasattr(arg, "keys"):
                items.extend((k, arg[k]) for k in arg.keys())
            else:
                items.extend(arg)
        items.extend(kwargs.items())
        merged: dict = {}  # a key in several mappings: merged in turn
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
            old = merged.get(key, data.get(key))
            record = dict(old) if records.is_record(old) else dict(_DEFAULTS)
            record.update(value)
            if record.get("_done") is True and "_lease_until" not in value:
                # Marked done through the merge: its lease ends, as with mark_done.
                record.pop("_lease_until", None)
                record.pop("_holder", None)
            if (
                record.get("_done") is True
                and "_done_at" not in value
                and not (records.is_record(old) and old.get("_done"))
            ):
                record["_done_at"] = self._done_now()
            _check_record(key, record)
            merged[key] = record
        with self.holding():
            for key, record in merged.items():
                self[key] = record


Tracker = ProgressTracker


class _TrackerSetter(_Setter):
    """``tracker.set[k]``: counted again, like a read, before it is changed."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        pod = self._pod
        if key in pod._data and key not in pod._lent:
            pod._lent[key] = _contrib(pod._data[key])
        return super().__getitem__(key)
