"""One in-memory state per path and process (``clone=True``), and what a fork gives the child.

``clone=True``, the default as in tastypy 0.0.3: a POD or tracker opened on a
path this process already holds open (same class, same directory: the same
device and inode, by whatever path) is a second *handle* on the first one's
state. The handles share the data, the unsynced changes, the store and its
descriptors: the second object's ``__dict__`` *is* the first one's, so a
call through either costs what it costs through one. What belongs to a
handle alone lives in slots beside that ``__dict__``: whether it is closed,
whether it holds syncing (:meth:`hold`), its ``sync_at``, and a tracker's
``max_tries``, ``lease`` and the leases it granted. ``clone=False`` opens an
independent handle, kept consistent with the others through the files, as
another process is. The state is let go (its descriptors closed) when its
last handle is closed or collected.

A fork copies every open state into the child. :func:`before_fork` first
writes, without fsync, what the parent had not written, so the children
start from it; :func:`after_fork_in_child` then makes each state the
child's own: fresh thread locks (a thread of the parent may have held one),
the store's descriptors reopened on first use (flock counts the holders of
one open file description as one), what is still unwritten (held) left to
the parent (the child writes only what it changes; written by both, the
parent's later writes could be overwritten by the child's older copy), no
lease of the parent's counted as the child's. The child's changes
are written when it ends: by :mod:`atexit` when it ends normally, and in a
:mod:`multiprocessing` child (``Pool``, ``ProcessPoolExecutor``,
``Process``), which ends with ``os._exit``, by a finalizer of
multiprocessing's own (see :mod:`tastypy._exit`).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

from tastypy import _exit
from tastypy.codec import LINE_OPTIONS, dumps
from tastypy.errors import InvalidArgumentError

__all__ = ["CloneMixin", "after_fork_in_child"]

log = logging.getLogger("tastypy")

#: Guards the registry; held while a handle opens, so that two threads
#: opening one path at once get one state.
_lock = threading.RLock()
#: (real path, device, inode, pid, class) -> the open handles of one state,
#: by id (a POD, like a dict, cannot be hashed).
_groups: dict[tuple, dict[int, weakref.ref]] = {}


def _key(path: str, cls: type) -> tuple | None:
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_dev, st.st_ino, os.getpid(), cls)


def find(path: str, cls: type) -> Any:
    """An open handle of class ``cls`` on ``path`` in this process, or None."""
    key = _key(path, cls)
    if key is None:
        return None
    with _lock:
        group = _groups.get(key)
        if group is None:
            return None
        for ref in list(group.values()):
            handle = ref()
            if handle is not None and not handle._closed:
                return handle
        del _groups[key]
    return None


def add(handle: Any) -> None:
    key = _key(handle.path, type(handle))
    if key is None:
        return
    with _lock:
        _groups.setdefault(key, {})[id(handle)] = weakref.ref(handle)


def others(handle: Any) -> list:
    """The other open handles on ``handle``'s state."""
    handles = handle._handles
    with _lock:
        found = [ref() for group in _groups.values() for ref in group.values()]
    return [
        h
        for h in found
        if h is not None and h is not handle and not h._closed and h._handles is handles
    ]


def discard(handle: Any) -> None:
    with _lock:
        for key, group in list(_groups.items()):
            ref = group.get(id(handle))
            if ref is not None and (ref() is handle or ref() is None):
                del group[id(handle)]
            if not group:
                del _groups[key]


class CloneMixin:
    """Joining a state already open in this process, letting go of it, and
    making it the child's after a fork. Relies on the POD's attributes."""

    _closed: bool
    _handles: set
    _options: tuple

    def _open_or_join(self, path: str, options: tuple, clone: bool) -> None:
        """Join the state open on ``path`` (``clone=True``), or open one."""
        with _lock:
            other = find(path, type(self)) if clone else None
            if other is not None:
                self._join(other, options)
            else:
                self._open(path, options)  # type: ignore[attr-defined]
            self._closed = False
            if clone:
                add(self)

    def _join(self, other: Any, options: tuple) -> None:
        """Become a handle on ``other``'s state (``clone=True``)."""
        gzipped, lock, timeout, storage = options
        mine = other._options
        if (
            gzipped != mine[0]
            or lock not in ("auto", mine[1], other._store._lock.mode)
            or timeout != mine[2]
            or (storage is not None and storage != mine[3])
        ):
            names = ("gzipped", "lock", "lock_timeout", "storage")
            given = ", ".join(f"{n}={v!r}" for n, v in zip(names, options))
            theirs = ", ".join(f"{n}={v!r}" for n, v in zip(names, other._options))
            raise InvalidArgumentError(
                f"{other.path} is open in this process with {theirs}; opened again with "
                f"{given}. Handles on one path share one state (clone=True): open it with the "
                "same options, or pass clone=False for an independent handle."
            )
        self.__dict__ = other.__dict__
        self._handles.add(id(self))

    def _let_go(self) -> bool:
        """This handle stops using its state; True if it was the last one."""
        discard(self)
        handles = self.__dict__.get("_handles")
        if handles is None:
            return True
        handles.discard(id(self))
        return not handles

    def _end_handle(self) -> None:
        """Close this handle without a sync (its state is written, and goes
        on with another handle)."""
        self._closed = True
        self._held = True  # type: ignore[attr-defined]
        _exit.unregister(self)
        self._let_go()

    def _forked_state(self) -> None:
        """In a forked child, once per state: make it the child's own."""
        lock = self._sync_lock  # type: ignore[attr-defined]
        if not lock._is_owned():
            self._sync_lock = threading.RLock()
        inside = self._store.forked()  # type: ignore[attr-defined]
        self._forget_parents_changes()  # type: ignore[attr-defined]
        if inside:
            # Forked inside locked() (or a sync): the child would go on in
            # the block believing it holds the lock, which is the parent's.
            # It writes nothing there: its handles on this state are closed.
            log.warning(
                "tastypy: forked inside locked() of %s: the lock is the parent's, so this "
                "child's handles on it are closed; open the path again in the child",
                self.path,  # type: ignore[attr-defined]
            )
            for handle in [self, *others(self)]:
                handle._end_handle()

    def _forget_parents_changes(self) -> None:
        """In a forked child: what the parent had not written yet is the
        parent's to write. A value handed out before the fork is written by
        the child only if the child changes it."""
        self._pending = bytearray()
        self._pending_keys = []
        data = self._data
        dirty = {}
        for key in self._dirty:
            if key in data:
                try:
                    dirty[key] = hash(dumps((key, data[key]), option=LINE_OPTIONS))
                except TypeError:
                    continue
        self._dirty = dirty

    def _forked_handle(self) -> None:
        """In a forked child, once per handle (a tracker forgets the parent's
        leases)."""


def after_fork_in_child(handles: list) -> None:
    """Make every open state copied into a forked child the child's (see
    the module's docstring); ``handles``: the open PODs and trackers."""
    global _lock
    _lock = threading.RLock()
    pid = os.getpid()
    for key, group in list(_groups.items()):
        del _groups[key]
        _groups[(*key[:3], pid, key[4])] = group
    seen: set = set()
    for handle in handles:
        if not isinstance(handle, CloneMixin) or handle._closed:
            continue
        state = id(handle._handles)
        if state not in seen:
            seen.add(state)
            handle._forked_state()
        handle._forked_handle()


def before_fork(handles: list) -> None:
    """Write (without fsync) what the open states hold unwritten, so that
    the children start from it, as 0.0.3's shared objects' children did, and
    nobody writes it twice; ``handles``: the open PODs and trackers. A state
    some handle holds (:meth:`hold`) is left as it is (the parent writes it
    later; the children leave it to the parent)."""
    states: dict = {}
    for handle in handles:
        if isinstance(handle, CloneMixin) and not handle._closed:
            states.setdefault(id(handle._handles), []).append(handle)
    for group in states.values():
        first = group[0]
        if any(h._held for h in group) or not first._unsynced():  # type: ignore[attr-defined]
            continue
        try:
            first._sync(durable=False)  # type: ignore[attr-defined]
        except Exception:
            log.exception("tastypy: could not write %s before a fork", first.path)  # type: ignore[attr-defined]


def _before_fork() -> None:
    before_fork(_exit.open_pods())


def _after_fork() -> None:
    after_fork_in_child(_exit.open_pods())


if hasattr(os, "register_at_fork"):
    # Registered before the heartbeat's (tastypy.tracker.heartbeat), which
    # then watches the trackers this one made the child's; its own before
    # hook (registered later) runs first, as before hooks go in reverse.
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork)
