"""``with pod.locked():``: an atomic read-modify-write across processes and hosts.

A POD or tracker takes the directory lock for each sync only. Code that reads
a value and writes one computed from it (``pod["n"] += 1``) needs the lock
around both, or two processes read the same ``n`` and one increment is lost.
:meth:`LockingMixin.locked` holds the lock for a whole block: on entry it
takes in everything others wrote, and on exit it writes (with fsync) what the
block changed, before anyone else may take the lock.

The lock is the one every sync takes (``lock=`` of the constructor):
``posix`` (``flock``) for the processes of one host, ``soft`` for hosts
sharing a network filesystem. Other processes wait for it as they wait for a
sync (up to ``lock_timeout`` seconds), so keep the block short.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from tastypy.errors import PersistentOrderedDictException

__all__ = ["LockingMixin"]


class LockingMixin:
    """``locked()`` (``transact()``), ``lock()`` and ``unlock()`` of a POD or tracker.

    Relies on the POD's ``_sync_lock``, ``_store``, ``_sync`` and ``_closed``.
    """

    _sync_lock: Any
    _store: Any
    _closed: bool
    _lock_blocks: list | None

    @contextmanager
    def locked(self) -> Iterator[Any]:
        """Hold the directory lock for the block: inside, no other process or
        host writes, everything they wrote before is here, and what the block
        changes is written (durably) before the lock is released, also when
        the block raises. Blocks nest; the other threads of this process
        wait at their next write. ::

            with pod.locked():
                pod["n"] = pod.get("n", 0) + 1  # no increment is lost
        """
        if self._closed:
            self._refuse_closed()  # type: ignore[attr-defined]
        store = self._store
        with self._sync_lock:
            try:
                with store.holding():
                    # A transaction with nothing new to write: takes in what
                    # others wrote (and writes what this process changed
                    # before the block).
                    self._sync(durable=False)  # type: ignore[attr-defined]
                    try:
                        yield self
                    finally:
                        if not self._closed:
                            self._sync()  # type: ignore[attr-defined]
            finally:
                if self._closed and not store.held and not self._handles:  # type: ignore[attr-defined]
                    # Closed inside the block (and no other handle on the
                    # state is open): the descriptors are given back once
                    # the lock is released (close() left them).
                    store.close()

    #: The name diskcache gives the same block (``with cache.transact():``).
    transact = locked

    def lock(self) -> None:
        """:meth:`locked` without a ``with``: take the lock (and what others
        wrote) now; :meth:`unlock` writes and releases it. Call both from
        the same thread; calls nest."""
        block = self.locked()
        block.__enter__()
        if self._lock_blocks is None:
            self._lock_blocks = []
        self._lock_blocks.append(block)

    def unlock(self) -> None:
        """Write what changed since :meth:`lock` (with fsync) and release the lock."""
        blocks = self._lock_blocks
        if not blocks:
            raise PersistentOrderedDictException(
                f"{self!r}.unlock() without a lock() before it: call lock() first, "
                "or use `with pod.locked():`."
            )
        blocks.pop().__exit__(None, None, None)
