"""PersistentOrderedDict: a dict kept in sync with a directory of JSON lines."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import ItemsView, Iterator, KeysView, Mapping, MutableMapping, ValuesView
from contextlib import contextmanager
from typing import Any, Final

from tastypy import _exit
from tastypy.codec import DUMP_OPTIONS, _has_nonfinite, check_key, dumps, encode_value
from tastypy.errors import PersistentOrderedDictException
from tastypy.storage import DELETED, Store

__all__ = ["PersistentOrderedDict", "POD"]

log = logging.getLogger("tastypy")


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


# What the dirty table holds for a key, besides the bytes of its value as on
# disk (kept when the value may be unchanged, to skip rewriting it):
_NEW: Final = _Marker("new")  # not on disk; written if still present at sync
_GONE: Final = _Marker("gone")  # on disk and deleted here; re-set means re-insert
_CHANGED: Final = _Marker("changed")  # on disk and known to differ
_MISSING: Final = _Marker("missing")

#: Values of these types cannot be mutated through a reference, so reading
#: them does not need to mark the key dirty.
_IMMUTABLE: Final = frozenset({str, int, float, bool, type(None)})


class PersistentOrderedDict(MutableMapping):
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
    fills keys that are not stored yet. ``file_size`` and ``clone`` are kept
    for old code and have no effect (see ``docs/design.md``).
    """

    _KIND = "pod"

    def __init__(
        self,
        path: str | os.PathLike[str],
        init: Mapping | Any = None,
        gzipped: bool = False,
        file_size: int = 1000,
        sync_at: int = 1000,
        clone: bool = True,
        *,
        lock: str = "auto",
        lock_timeout: float = 600.0,
    ):
        if type(sync_at) is not int or sync_at <= 0:
            raise ValueError(
                f"sync_at must be a positive int (how many changed keys trigger a sync), "
                f"got {sync_at!r}. Use hold() to suspend syncing instead."
            )
        if type(file_size) is not int or file_size <= 0:
            raise ValueError(f"file_size must be a positive int, got {file_size!r}")
        self.sync_at = sync_at
        self._data: dict = {}
        self._dirty: dict = {}
        self._staged: dict = {}
        self._held = False
        self._closed = True
        self._sync_lock = threading.RLock()
        self._store = Store(
            path, kind=self._KIND, gzipped=bool(gzipped), lock=lock, lock_timeout=lock_timeout
        )
        with self._sync_lock, self._store.locked():
            self._data = self._store.load()
        self._closed = False
        self._loaded()
        _exit.register(self)
        if init:
            items = init.items() if isinstance(init, Mapping) else init
            with self.holding():
                for key, value in items:
                    if key not in self._data:
                        self[key] = value

    # -- identity ----------------------------------------------------------

    @property
    def path(self) -> str:
        """The directory holding this POD."""
        return self._store.path

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
                try:
                    dirty[key] = dumps(value, option=DUMP_OPTIONS)
                except TypeError:
                    dirty[key] = _CHANGED
                if len(dirty) >= self.sync_at and not self._held:
                    self.sync()
            elif self._staged:
                self._staged.pop(key, None)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        t = type(key)
        if t is not str and t is not int:
            check_key(key)
        if self._closed:
            self._refuse_closed()
        encoded = encode_value(key, value)
        data = self._data
        dirty = self._dirty
        if key not in dirty:
            old = data.get(key, _MISSING)
            if old is _MISSING:
                dirty[key] = _NEW
            elif type(old) is type(value) and old == value:
                dirty[key] = dumps(old, option=DUMP_OPTIONS)
            else:
                dirty[key] = _CHANGED
        self._staged[key] = encoded
        data[key] = value
        if len(dirty) >= self.sync_at and not self._held:
            self.sync()

    def __delitem__(self, key: Any) -> None:
        del self._data[key]
        self._staged.pop(key, None)
        dirty = self._dirty
        if dirty.get(key) is not _NEW:
            dirty[key] = _GONE
        if len(dirty) >= self.sync_at and not self._held:
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
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def keys(self) -> KeysView:
        return KeysView(self)

    def values(self) -> ValuesView:
        return ValuesView(self)

    def items(self) -> ItemsView:
        return ItemsView(self)

    def iterkeys(self) -> Iterator:
        """Same as ``iter(pod.keys())``; kept for code written for tastypy 0.0.3."""
        return iter(self.keys())

    def itervalues(self) -> Iterator:
        """Same as ``iter(pod.values())``; kept for code written for tastypy 0.0.3."""
        return iter(self.values())

    def iteritems(self) -> Iterator:
        """Same as ``iter(pod.items())``; kept for code written for tastypy 0.0.3."""
        return iter(self.items())

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Like ``dict.update``. ``pod.update(key)`` with one existing key, as in
        the 0.0.3 manual, syncs that key instead (see :meth:`sync_key`)."""
        if len(args) == 1 and not kwargs and type(args[0]) in (str, int):
            if args[0] in self._data:
                self.sync_key(args[0])
                return
        super().update(*args, **kwargs)

    def clear(self) -> None:
        with self.holding():
            for key in list(self._data):
                del self[key]

    def copy(self) -> dict:
        """A plain ``dict`` with the same items (values are not copied)."""
        return dict(self._data)

    def to_dict(self) -> dict:
        """A plain ``dict`` with the same items (values are not copied)."""
        return dict(self._data)

    # -- dirty tracking ------------------------------------------------------

    def mark_dirty(self, key: Any) -> None:
        """Have ``key`` written at the next sync (after changing its value
        through a reference the POD cannot see)."""
        if key not in self._data:
            raise KeyError(key)
        self._staged.pop(key, None)
        marker = self._dirty.get(key)
        if marker is None or type(marker) is bytes:
            self._dirty[key] = _CHANGED if marker is None else marker
        if len(self._dirty) >= self.sync_at and not self._held:
            self.sync()

    def dirty(self) -> set:
        """The set of keys that may differ from disk."""
        return set(self._dirty)

    # -- sync policy -----------------------------------------------------------

    def hold(self) -> None:
        """Suspend automatic syncing (it still happens at exit and on sync())."""
        self._held = True

    def unhold(self) -> None:
        """Resume automatic syncing, and sync now if enough keys are dirty."""
        self._held = False
        if len(self._dirty) >= self.sync_at:
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
            if not was_held and self._dirty:
                self.sync()

    # -- syncing -----------------------------------------------------------------

    def sync(self) -> None:
        """Write every changed key to disk now, as one atomic batch.

        Changes other processes synced meanwhile are taken in first; for a
        key changed on both sides, this sync wins (it is the later one).
        """
        self._sync(None)

    def sync_key(self, key: Any) -> None:
        """Write ``key`` (its value or its deletion) to disk now."""
        if key in self._data and key not in self._dirty:
            self._dirty[key] = _CHANGED
        self._sync([key])

    def _sync(self, only: list | None, durable: bool = True) -> None:
        if self._closed:
            self._refuse_closed()
        with self._sync_lock, self._store.locked():
            lines, popped, written, bad = self._collect(only)
            try:
                changes = self._store.read_new()
                if changes is None:
                    self._reload(written)
                else:
                    self._take_in(changes, written)
                self._store.append(lines, durable)
            except BaseException:
                for key, marker in popped:
                    self._dirty[key] = marker
                raise
            self._store.maybe_compact(len(self._data))
        if bad:
            key, exc = bad[0]
            raise TypeError(
                f"could not sync key {key!r}: {exc}. Its value was changed in place into "
                f"something JSON cannot hold; set pod[{key!r}] to a JSON value. Every other key "
                "was synced."
            )

    def _collect(self, only: list | None) -> tuple[list, list, dict, list]:
        """Pop the dirty keys and encode what changed, in the order dirtied."""
        dirty = self._dirty
        data = self._data
        staged = self._staged
        keys = list(dirty) if only is None else [k for k in only if k in dirty]
        lines: list[bytes] = []
        popped: list = []
        written: dict = {}
        bad: list = []
        append = lines.append
        for key in keys:
            marker = dirty.pop(key, _MISSING)
            if marker is _MISSING:
                continue
            value = data.get(key, _MISSING)
            if value is _MISSING:
                staged.pop(key, None)
                if marker is _NEW:
                    continue
                append(b"[%b]\n" % dumps(key))
                written[key] = DELETED
            else:
                encoded = staged.pop(key, None)
                if encoded is None:
                    try:
                        encoded = dumps(value, option=DUMP_OPTIONS)
                        if b"null" in encoded and _has_nonfinite(value):
                            raise ValueError("it holds NaN or infinity")
                    except (TypeError, ValueError) as exc:
                        dirty[key] = marker
                        bad.append((key, exc))
                        continue
                if encoded == marker:
                    continue
                kb = dumps(key)
                if marker is _GONE:
                    append(b"[%b]\n" % kb)
                append(b"[%b,%b]\n" % (kb, encoded))
                written[key] = value
            popped.append((key, marker))
        return lines, popped, written, bad

    def _take_in(self, changes: list, written: dict) -> None:
        """Apply other processes' synced changes, except where ours win."""
        data = self._data
        dirty = self._dirty
        for key, value in changes:
            if key in written:
                continue
            marker = dirty.get(key)
            if marker is not None:
                if type(marker) is bytes and key in data:
                    try:
                        same = dumps(data[key], option=DUMP_OPTIONS) == marker
                    except TypeError:
                        same = False
                    if not same:
                        continue
                    del dirty[key]
                elif marker is _NEW:
                    dirty[key] = _CHANGED
                    continue
                else:
                    continue
            old = data.get(key, _MISSING)
            if value is DELETED:
                if old is _MISSING:
                    continue
                del data[key]
                self._replaced(key, old, _MISSING)
            else:
                data[key] = value
                self._replaced(key, old, value)

    def _pending(self) -> dict:
        """Local changes not yet synced, as ``{key: value or DELETED}``."""
        pending = {}
        data = self._data
        for key, marker in list(self._dirty.items()):
            value = data.get(key, _MISSING)
            if value is _MISSING:
                if marker is not _NEW:
                    pending[key] = DELETED
                continue
            if type(marker) is bytes:
                try:
                    if dumps(value, option=DUMP_OPTIONS) == marker:
                        continue
                except TypeError:
                    pass
            pending[key] = value
        return pending

    def _reload(self, written: dict) -> None:
        """Load the disk afresh (a compaction ran elsewhere), keeping local changes."""
        pending = self._pending()
        pending.update(written)
        data = self._store.load()
        dirty: dict = {}
        for key, value in pending.items():
            if value is DELETED:
                if data.pop(key, _MISSING) is not _MISSING and key not in written:
                    dirty[key] = _GONE
            else:
                if key not in written:
                    dirty[key] = _CHANGED if key in data else _NEW
                data[key] = value
        self._data = data
        self._dirty = dirty
        self._staged = {}
        self._loaded()

    def refresh(self) -> None:
        """Take in what other processes synced since we last looked.

        Reads only what was appended since (or everything, after a
        compaction). Local unsynced changes are kept.
        """
        with self._sync_lock, self._store.locked():
            changes = self._store.read_new()
            if changes is None:
                self._reload({})
            else:
                self._take_in(changes, {})

    def revert(self) -> None:
        """Drop every unsynced change: memory becomes what is on disk now."""
        with self._sync_lock, self._store.locked():
            self._dirty = {}
            self._staged = {}
            self._data = self._store.load()
        self._loaded()

    def compact(self) -> None:
        """Sync, then fold the journal into a fresh snapshot now."""
        self.sync()
        with self._sync_lock, self._store.locked():
            self._store.compact()

    # -- lifetime ----------------------------------------------------------------

    def close(self) -> None:
        """Sync and stop tracking this POD. Further writes raise an error."""
        if self._closed:
            return
        try:
            self.sync()
        finally:
            self._closed = True
            _exit.unregister(self)

    def __enter__(self) -> PersistentOrderedDict:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _exit_sync(self) -> None:
        if not self._closed and self._dirty:
            self.sync()

    def __del__(self) -> None:
        try:
            if not getattr(self, "_closed", True) and self._dirty:
                self.sync()
        except Exception:
            log.exception("tastypy: could not sync %s when it was garbage-collected", self)

    def _refuse_closed(self) -> None:
        raise PersistentOrderedDictException(
            f"{self!r} is closed; open it again with {type(self).__name__}(path) to change it."
        )


POD = PersistentOrderedDict


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


