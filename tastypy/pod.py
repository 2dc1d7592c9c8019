"""PersistentOrderedDict: a dict kept in sync with a directory of JSON lines."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import ItemsView, Iterator, KeysView, Mapping, MutableMapping, ValuesView
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final

from tastypy import _exit
from tastypy._args import check_flag, check_path
from tastypy.clones import CloneMixin
from tastypy.codec import (
    LINE_OPTIONS,
    _has_nonfinite,
    check_key,
    dumps,
    raise_for,
    record_line,
)
from tastypy.errors import (
    CalledClosedTrackerError,
    InvalidArgumentError,
    InvalidValueError,
    KindMismatchError,
)
from tastypy.locking import LockingMixin
from tastypy.pod_compat import PODCompatMixin
from tastypy.storage import DELETED, Store, journal

__all__ = ["PersistentOrderedDict", "POD", "DEFAULT_FILE_SIZE", "DEFAULT_SYNC_AT"]

#: The defaults of ``file_size`` (accepted, no effect) and ``sync_at``, under
#: the names tastypy 0.0.3 exported them by.
DEFAULT_FILE_SIZE: Final = 1000
DEFAULT_SYNC_AT: Final = 1000

log = logging.getLogger("tastypy")


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


# How a sync finds what to write. Assignments and deletions append their
# record line to ``_pending`` at once (assignment has to encode the value to
# validate it anyway), so a sync mostly writes one buffer. Keys whose value
# may have changed in place (handed out by a read) sit in ``_dirty`` with the
# hash of their record's bytes when handed out; the sync encodes them again
# and writes only those whose bytes changed. ``_CHANGED`` equals no hash.
# (Hashes, not the bytes: orjson's bytes are over-allocated, ~4 KiB each.)
_CHANGED: Final = _Marker("changed")
_MISSING: Final = _Marker("missing")

#: Values of these types cannot be mutated through a reference, so reading
#: them does not need to mark the key dirty.
_IMMUTABLE: Final = frozenset({str, int, float, bool, type(None)})

#: orjson's bytes are over-allocated (~4 KiB each, whatever their length): a
#: batch of record lines past this many keeps exact-size copies instead
#: (300k lines kept as they came held 1.2 GB, and took 3x longer to make).
_COMPACT_AFTER: Final = 32


class PersistentOrderedDict(CloneMixin, LockingMixin, PODCompatMixin, MutableMapping):
    """A dict that lives in the directory ``path`` as human-readable JSON lines.

    It is a full :class:`~collections.abc.MutableMapping` that keeps insertion
    order. Keys are ``str``, ``int`` or (nested) tuples of those; values are
    what JSON holds. Changes are written to disk every ``sync_at`` changed
    keys, on :meth:`sync`, on :meth:`close`, and when the process exits
    (normally, by an exception, Ctrl-C or SIGTERM).

    Example::

        >>> from tastypy import POD
        >>> pod = POD(tmp_path / "my.pod")
        >>> pod["foo"] = {"bar": 1}
        >>> pod["foo"]["baz"] = 2     # nested mutation: persisted too
        >>> pod.sync()
        >>> POD(tmp_path / "my.pod")["foo"]
        {'bar': 1, 'baz': 2}

    The positional call of tastypy 0.0.3 is accepted:
    ``POD(path, init, gzipped, file_size, sync_at, clone)``. ``init`` only
    fills keys that are not stored yet; ``file_size`` has no effect. With
    ``clone=True`` (0.0.3's default), a POD opened again on a path this
    process holds open shares that one's memory (``docs/compat.md``).
    """

    _KIND = "pod"

    # Each handle's own; everything else is in ``__dict__``, which the
    # handles of one state share (clone=True, see tastypy/clones.py).
    __slots__ = ("_closed", "_held", "sync_at", "_lock_blocks")

    def __init__(
        self,
        path: str | os.PathLike[str],
        init: Mapping | Any = None,
        gzipped: bool = False,
        file_size: int = DEFAULT_FILE_SIZE,
        sync_at: int = DEFAULT_SYNC_AT,
        clone: bool = True,
        *,
        lock: str = "auto",
        lock_timeout: float = 600.0,
        storage: str | None = None,
    ):
        path = check_path(path)
        gzipped = check_flag(gzipped, "gzipped")
        check_flag(clone, "clone")
        if type(sync_at) is not int or sync_at <= 0:
            raise InvalidArgumentError(
                f"sync_at must be a positive int (how many changed keys trigger a sync), "
                f"got {sync_at!r}. Use hold() to suspend syncing instead."
            )
        if type(file_size) is not int or file_size <= 0:
            raise InvalidArgumentError(
                f"file_size must be a positive int, got {file_size!r} (it is accepted for "
                "code written for tastypy 0.0.3 and has no effect)."
            )
        self.sync_at = sync_at
        self._held = False
        self._closed = True
        self._lock_blocks = None
        self._open_or_join(path, (gzipped, lock, lock_timeout, storage), clone)
        _exit.register(self)
        if init:
            items = init.items() if isinstance(init, Mapping) else init
            with self.holding():
                for key, value in items:
                    if key not in self._data:
                        self[key] = value

    def _open(self, path: str, options: tuple) -> None:
        """Open the directory: a state of this handle's own."""
        gzipped, lock, lock_timeout, storage = options
        self._options = options
        self._handles = {id(self)}
        self._data: dict = {}
        self._dirty: dict = {}
        self._pending = bytearray()
        self._pending_keys: list = []
        self._sync_lock = threading.RLock()
        self._store = Store(
            path,
            kind=self._KIND,
            gzipped=gzipped,
            lock=lock,
            lock_timeout=lock_timeout,
            storage=storage,
        )
        try:
            with self._sync_lock, self._store.locked():
                self._data = self._store.load()
                self._store.mixed = False
        except BaseException:
            self._store.close()
            raise
        self._loaded()

    # -- identity ----------------------------------------------------------

    @property
    def path(self) -> str:
        """The directory holding this POD."""
        return self._store.path

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run, as for a file."""
        return self._closed

    @property
    def sync_lock(self) -> AbstractContextManager[Any]:
        """The re-entrant lock every sync of this object holds (the exit sync
        too). Threads that share the object hold it around a change made in
        several steps, so that no other thread's sync writes it half made;
        it does not stop another thread changing the object meanwhile."""
        return self._sync_lock

    @property
    def set(self) -> _Setter:
        """Deep assignment that marks the top key dirty: ``pod.set[k1][k2] = v``."""
        return _Setter(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {len(self._data)} keys)"

    # -- hooks for subclasses ------------------------------------------------

    def _loaded(self) -> None:
        """Called after ``_data`` was replaced wholesale (open, revert, reload)."""

    def _replaced(self, key: Any, old: Any, new: Any) -> None:
        """Called when another process's change to ``key`` was taken in."""

    # -- the mapping -------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        value = self._data[key]
        if type(value) not in _IMMUTABLE:
            dirty = self._dirty
            if key not in dirty:
                if len(dirty) + len(self._pending_keys) + 1 >= self.sync_at and not self._held:
                    # Sync before remembering this read, not after: a sync
                    # would forget it, and the change the caller is about to
                    # make in place would never be written.
                    self.sync()
                    dirty = self._dirty
                    value = self._data[key]  # the sync may have taken in a newer one
                try:
                    dirty[key] = hash(dumps((key, value), option=LINE_OPTIONS))
                except TypeError:
                    dirty[key] = _CHANGED
        return value

    def _assign(self, key: Any, value: Any, data: dict | None = None) -> None:
        """``pod[key] = value`` (``__setitem__`` is this method: one call per
        assignment, not two). A subclass that checked the key already passes
        ``data``, the dict that ``_data`` is."""
        if data is None:
            t = type(key)
            if t is not str and t is not int:
                check_key(key)
            data = self._data
        if self._closed:
            self._refuse_closed()
        try:
            line = dumps((key, value), option=LINE_OPTIONS)
        except TypeError:
            raise_for(key, value)  # the error that names the key and the type
            raise
        if b"null" in line and _has_nonfinite(value):
            raise_for(key, value)
        old = data.get(key, _MISSING)
        # Changed: a new key or another value first (the common cases, each
        # one test), then what compares equal but is written differently
        # (``1`` and ``True``, ``1`` and ``1.0``, nested alike). ``old is
        # value`` for a dict or list: the stored object itself, maybe changed
        # in place since the last sync, so its bytes on disk are unknown.
        changed = (
            old is _MISSING
            or old != value
            or type(old) is not type(value)
            or (old is value and type(value) not in _IMMUTABLE)
            or dumps((key, old), option=LINE_OPTIONS) != line
        )
        # The value goes in before its line: a sync running in another thread
        # meanwhile then writes either the new value or nothing for this key.
        data[key] = value
        if changed:
            self._pending += line
            self._pending_keys.append(key)
            dirty = self._dirty
            if key in dirty:
                # The line above is the newer state; a read-time hash of the
                # value replaced would write it again, or hide a change.
                dirty.pop(key, None)
        if len(self._pending_keys) + len(self._dirty) >= self.sync_at and not self._held:
            self.sync()

    __setitem__ = _assign

    def __delitem__(self, key: Any) -> None:
        if self._closed:
            self._refuse_closed()
        del self._data[key]
        self._dirty.pop(key, None)
        self._pending += b"[%b]\n" % dumps(key)
        self._pending_keys.append(key)
        if len(self._pending_keys) + len(self._dirty) >= self.sync_at and not self._held:
            self.sync()

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator:
        # A snapshot: a sync triggered inside the loop may take in keys that
        # other processes added, which must not break the iteration.
        return iter(list(self._data))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PersistentOrderedDict):
            return self._data == other._data
        if type(other) is dict:
            return self._data == other
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __reversed__(self) -> Iterator:
        return iter(list(reversed(self._data)))

    def popitem(self) -> tuple:
        """Remove and return the last inserted ``(key, value)``, like ``dict.popitem``."""
        try:
            key = next(reversed(self._data))
        except StopIteration:
            raise KeyError("popitem(): the POD is empty") from None
        value = self._data[key]
        del self[key]
        return key, value

    __hash__ = None  # type: ignore[assignment]

    def keys(self) -> KeysView:
        return KeysView(self)

    def values(self) -> ValuesView:
        return _ValuesView(self)

    def items(self) -> ItemsView:
        return _ItemsView(self)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """Like ``dict.setdefault``; a change made through what it returns is
        saved, also when ``default`` was just stored."""
        if key not in self._data:
            self[key] = default
        return self[key]

    def update(self, *mappings: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Like ``dict.update``, taking several mappings (or iterables of
        pairs) as 0.0.3 did: the ones further right win, keyword arguments
        last. ``pod.update(key)`` with one existing key, as in the 0.0.3
        manual, syncs that key instead (see :meth:`sync_key`)."""
        if len(mappings) == 1 and not kwargs and type(mappings[0]) in (str, int):
            if mappings[0] in self._data:
                self.sync_key(mappings[0])
                return
        for mapping in mappings:
            super().update(mapping)
        if kwargs:
            super().update(kwargs)

    def clear(self) -> None:
        with self.holding():
            for key in list(self._data):
                del self[key]

    def to_dict(self) -> dict:
        """A plain ``dict`` with the same items (values are not copied)."""
        return dict(self._data)

    copy = to_dict

    # -- dirty tracking ------------------------------------------------------

    def mark_dirty(self, key: Any) -> None:
        """Have ``key`` written at the next sync (after changing its value
        through a reference the POD cannot see)."""
        if key not in self._data:
            raise KeyError(key)
        self._dirty[key] = _CHANGED
        if len(self._pending_keys) + len(self._dirty) >= self.sync_at and not self._held:
            self.sync()

    def dirty(self) -> set:
        """The set of keys that may differ from disk."""
        return set(self._dirty) | set(self._pending_keys)

    def _num_dirty(self) -> int:
        return len(self._dirty) + len(self._pending_keys)

    def _unsynced(self) -> bool:
        """Whether anything waits to be written."""
        return bool(self._dirty or self._pending)

    # -- sync policy -----------------------------------------------------------

    def hold(self) -> None:
        """Suspend automatic syncing (it still happens at exit and on sync())."""
        self._held = True

    def unhold(self) -> None:
        """Resume automatic syncing, and sync now if enough keys are dirty."""
        self._held = False
        if self._num_dirty() >= self.sync_at:
            self.sync()

    @contextmanager
    def holding(self) -> Iterator[PersistentOrderedDict]:
        """``with pod.holding():`` holds syncing for the block, then syncs."""
        was_held = self._held
        self._held = True
        try:
            yield self
        finally:
            self._held = was_held
            if not was_held and self._unsynced():
                self.sync()

    # -- syncing -----------------------------------------------------------------

    def sync(self) -> None:
        """Write every changed key to disk now, as one atomic batch.

        Changes other processes synced meanwhile are taken in first; for a
        key changed on both sides, this sync wins (it is the later one).
        """
        self._sync()

    def sync_key(self, key: Any) -> None:
        """Write ``key`` (its value or its deletion) to disk now.

        Other pending changes are written in the same batch: one batch is
        as cheap as a single record, and keeps the order of changes.
        """
        if key in self._data and key not in self._dirty:
            self._dirty[key] = _CHANGED
        self._sync()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold this POD's sync lock and the directory lock.

        A SIGTERM or a Ctrl-C that arrives inside, or while they are taken
        (the handlers run in the main thread, between two lines of ours), is
        put off until both are released: the SIGTERM handler syncs, and must
        neither interleave with a half-done write nor wait for a lock this
        thread already holds; a Ctrl-C must not leave a lock held.
        """
        with _exit.put_off(), self._sync_lock, self._store.locked():
            yield

    def _sync(self, durable: bool = True, compact: bool = False) -> None:
        """Write every unsynced change in one transaction of the store (see
        :meth:`Store.transaction`), after taking in what others synced."""
        if self._closed:
            self._refuse_closed()
        writer = _Writer(self)
        # A SIGTERM handler (it syncs) and a Ctrl-C wait until the locks are
        # released (see tastypy._exit).
        main = _exit.enter()
        try:
            with self._sync_lock:
                self._store.transaction(writer, durable, compact)
        finally:
            if main:
                _exit.leave()
        if writer.bad:
            key, exc = writer.bad[0]
            raise InvalidValueError(
                f"could not sync key {key!r}: {exc}. Its value was changed in place into "
                f"something JSON cannot hold; set pod[{key!r}] to a JSON value. Every other key "
                "was synced."
            )

    def _take_in(self, changes: list, ours: set) -> None:
        """Apply other processes' synced changes, except where ours win."""
        data = self._data
        dirty = self._dirty
        for key, value in changes:
            if key in ours:
                continue
            marker = dirty.get(key)
            if marker is not None:
                if key not in data or not self._read_unchanged(key, data[key], marker):
                    continue
                del dirty[key]
            old = data.get(key, _MISSING)
            if value is DELETED:
                if old is _MISSING:
                    continue
                del data[key]
                self._replaced(key, old, _MISSING)
            else:
                data[key] = value
                self._replaced(key, old, value)

    def _reload(self, ours: set) -> None:
        """Load the disk afresh (a compaction ran elsewhere), keeping local
        changes. Refused if the compaction made the directory another kind's
        (``convert_to_tracker`` elsewhere): our records would not fit it."""
        kind = self._store._manifest().get("kind")
        if kind != self._KIND:
            raise KindMismatchError(
                f"{self.path} was made a {kind!r} by another process (convert_to_tracker) "
                f"while open here as a {self._KIND!r}; nothing was written. Open it again "
                "with " + ("tastypy.Tracker" if kind == "tracker" else "tastypy.POD") + "."
            )
        local = self._data
        data = self._store.load()
        # A dict, not a set: keys new here are put back in the order they came.
        mine = dict.fromkeys(self._pending_keys)
        mine.update(dict.fromkeys(k for k in ours if k not in mine))
        unchanged = []
        for key, marker in list(self._dirty.items()):
            if key in local:
                if self._read_unchanged(key, local[key], marker):
                    unchanged.append((key, marker))
                    continue
                mine[key] = None
        for key in mine:
            value = local.get(key, _MISSING)
            if value is _MISSING:
                data.pop(key, None)
            else:
                data[key] = self._kept(key, value, data.get(key, _MISSING))
        # Values read here but not changed are now the ones on disk.
        dirty = self._dirty
        for key, marker in unchanged:
            if dirty.get(key, _MISSING) is marker:
                del dirty[key]
        self._data = data
        self._loaded()

    def _read_unchanged(self, key: Any, value: Any, marker: Any) -> bool:
        """Whether ``value`` is as it was when a read marked ``key`` dirty
        (``marker``: the hash of its line then): read, not changed."""
        if type(marker) is not int:
            return False
        try:
            return hash(dumps((key, value), option=LINE_OPTIONS)) == marker
        except TypeError:
            return False

    def _kept(self, key: Any, local: Any, disk: Any) -> Any:
        """What a reload keeps for ``key``, changed here (``local``, not yet
        written) and on disk (``disk``, or ``_MISSING``): ours, the later write."""
        return local

    def _dirty_records(
        self, data: dict, bad: list | None = None, marks: Any = None
    ) -> tuple | None:
        """The record lines of the keys changed here (a value read but whose
        JSON did not change is not written again): ``(lines, keys written,
        handled)``, ``handled`` being the dirty marks they cover. A value
        JSON cannot hold makes it return None, or with ``bad``, is listed
        there as ``(key, error)`` and left out. ``marks``: ``(key, mark)``
        pairs to write instead of the dirty marks."""
        handled = []
        lines = []
        written = []
        for key, marker in list(self._dirty.items()) if marks is None else marks:
            value = data.get(key, _MISSING)
            if value is not _MISSING:
                try:
                    line = record_line(key, value)
                except (TypeError, ValueError) as exc:
                    if bad is None:
                        return None
                    bad.append((key, exc))
                    continue
                if marker is _CHANGED or hash(line) != marker:
                    if len(lines) >= _COMPACT_AFTER:
                        line = memoryview(line).tobytes()
                    lines.append(line)
                    written.append(key)
            handled.append((key, marker))
        return lines, written, handled

    def _live_count(self) -> int:
        """How many keys the POD holds, for the compaction's arithmetic."""
        return len(self._data)

    def _as_on_disk(self, bad: list) -> dict | None:
        """After a sync, under the lock: a copy of the data, if it is what
        the files hold (nothing left unwritten), for a compaction; else None."""
        if bad or self._unsynced():
            return None
        return dict(self._data)

    def refresh(self) -> None:
        """Take in what other processes synced since we last looked.

        Reads only what was appended since (or everything, after a
        compaction). Local unsynced changes are kept.
        """
        if self._closed:
            self._refuse_closed()
        with self._locked():
            self._take_in_new()

    def _take_in_new(self) -> None:
        """Under the lock: take in what others synced since we last looked."""
        changes = self._store.read_new()
        if changes is None:
            self._reload(set())
        elif changes:
            self._take_in(changes, set(self._pending_keys))

    def revert(self) -> None:
        """Drop every unsynced change: memory becomes what is on disk now."""
        if self._closed:
            self._refuse_closed()
        with self._locked():
            data = self._store.load()
            self._store.mixed = False
            self._dirty = {}
            self._pending = bytearray()
            self._pending_keys = []
            self._data = data
        self._loaded()

    def compact(self) -> None:
        """Sync, then fold the journal into a fresh snapshot now, in one
        transaction: what others synced before is taken in first (the
        compaction folds it in, and this object reads on from the new
        generation's start)."""
        self._sync(True, compact=True)

    # -- lifetime ----------------------------------------------------------------

    def close(self) -> None:
        """Sync and stop tracking this POD. Further writes raise an error.
        Other handles on the same state (``clone=True``) stay open."""
        if self._closed:
            return
        try:
            self.sync()
        finally:
            self._closed = True
            # Reads of a closed POD still work; they must not try to sync.
            self._held = True
            _exit.unregister(self)
            if self._let_go() and not self._store.held:  # else at the end of locked()
                self._store.close()

    def __enter__(self) -> PersistentOrderedDict:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _exit_sync(self) -> None:
        if not self._closed and self._unsynced():
            self.sync()

    def __del__(self) -> None:
        # Run whenever the garbage collector gets to it: a Ctrl-C raised in
        # here would be printed and dropped (see tastypy._exit).
        try:
            main = _exit.enter()
        except Exception:  # at interpreter shutdown, its globals may be gone
            main = False
        try:
            self._dropped()
        finally:
            if main:
                _exit.leave(quiet=True)

    def _dropped(self) -> None:
        """What ``__del__`` does: sync what the user did not, unless closed."""
        closed = getattr(self, "_closed", True)
        try:
            last = closed or self._let_go()
        except Exception:  # at interpreter shutdown, the registry may be torn down
            return
        try:
            if not closed and last and self._unsynced():
                self.sync()
        except Exception:
            log.exception("tastypy: could not sync %s when it was garbage-collected", self)
        try:
            store = getattr(self, "_store", None)
            if store is not None and last and not self.__dict__.get("_handles"):
                store.close()
        except Exception:  # at interpreter shutdown, os may be half torn down
            pass

    def _refuse_closed(self) -> None:
        raise CalledClosedTrackerError(
            f"{self!r} is closed; open it again with {type(self).__name__}(path) to change it."
        )


POD = PersistentOrderedDict
_exit.finalizers.add(PersistentOrderedDict.__del__.__code__)


class _Writer:
    """A POD's sync, as :meth:`Store.transaction` asks it (:class:`Writer`):
    others' changes taken in, except where ours win, then every unsynced
    change written."""

    __slots__ = ("pod", "batch", "bad")

    def __init__(self, pod: PersistentOrderedDict):
        self.pod = pod
        self.batch: tuple = ()
        self.bad: list = []

    def take_in(self, new: tuple | None) -> None:
        pod = self.pod
        # Ours: lines queued to be written (by this sync, or by the next if
        # another thread adds them meanwhile: they win either way).
        ours = set(pod._pending_keys)
        if new is None:
            pod._reload(ours)
            return
        text, consumed, first_line = new
        changes = journal.as_changes(journal.parse(text, pod._store.journal_path, first_line))
        pod._store.took(consumed, len(changes))
        pod._take_in(changes, ours)

    def decide(self) -> tuple:
        pod = self.pod
        n_bytes = len(pod._pending)
        n_keys = len(pod._pending_keys)
        bad = self.bad = []
        lines, _, handled = pod._dirty_records(pod._data, bad)
        body = pod._pending[:n_bytes]
        body += b"".join(lines)
        self.batch = (n_bytes, n_keys, handled)
        # Counted from the bytes: another thread may be between adding its
        # line and its key, and the commit count must match the lines.
        return body, body.count(b"\n")

    def undo(self) -> None:
        """Nothing was decided: what was not written stays unsynced."""

    def written(self) -> None:
        # Forget what this sync covered. Threads may have added more
        # meanwhile; that stays for the next sync.
        pod = self.pod
        n_bytes, n_keys, handled = self.batch
        del pod._pending[:n_bytes]
        del pod._pending_keys[:n_keys]
        dirty = pod._dirty
        for key, marker in handled:
            if dirty.get(key, _MISSING) is marker:
                del dirty[key]

    def live_count(self) -> int:
        return self.pod._live_count()

    def as_on_disk(self) -> dict | None:
        return self.pod._as_on_disk(self.bad)


class _ValuesView(ValuesView):
    __slots__ = ()

    def __iter__(self) -> Iterator:
        pod = self._mapping
        for key in pod:
            try:
                yield pod[key]
            except KeyError:  # taken out by another process, in a sync meanwhile
                continue


class _ItemsView(ItemsView):
    __slots__ = ()

    def __iter__(self) -> Iterator:
        pod = self._mapping
        for key in pod:
            try:
                yield key, pod[key]
            except KeyError:  # taken out by another process, in a sync meanwhile
                continue


class _Setter:
    """``pod.set[k]`` returns a handle whose changes mark ``k`` dirty."""

    __slots__ = ("_pod",)

    def __init__(self, pod: PersistentOrderedDict):
        self._pod = pod

    def __getitem__(self, key: Any) -> _Deep:
        if key not in self._pod._data:
            raise KeyError(key)
        return _Deep(self._pod, key, ())

    def __setitem__(self, key: Any, value: Any) -> None:
        self._pod[key] = value


class _Deep:
    """A path into the value of one top-level key."""

    __slots__ = ("_pod", "_top", "_path")

    def __init__(self, pod: PersistentOrderedDict, top: Any, path: tuple):
        self._pod = pod
        self._top = top
        self._path = path

    def _target(self) -> Any:
        value = self._pod._data[self._top]
        for part in self._path:
            value = value[part]
        return value

    def _touched(self) -> None:
        self._pod.mark_dirty(self._top)

    def __getitem__(self, key: Any) -> _Deep:
        self._target()[key]  # raise KeyError/IndexError now, where it belongs
        return _Deep(self._pod, self._top, self._path + (key,))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._target()[key] = value
        self._touched()

    def __delitem__(self, key: Any) -> None:
        del self._target()[key]
        self._touched()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target(), name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            self._touched()
            return result

        return call

    def __iadd__(self, other: Any) -> Any:
        target = self._target()
        target += other
        return target

    def __add__(self, other: Any) -> Any:
        return self._target() + other

    def __isub__(self, other: Any) -> Any:
        target = self._target()
        target -= other
        return target

    def __sub__(self, other: Any) -> Any:
        return self._target() - other

    def __imul__(self, other: Any) -> Any:
        target = self._target()
        target *= other
        return target

    def __eq__(self, other: object) -> bool:
        return self._target() == other

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self._target())

    def __iter__(self) -> Iterator:
        return iter(self._target())

    def __contains__(self, item: object) -> bool:
        return item in self._target()

    def __repr__(self) -> str:
        return repr(self._target())
