"""The inter-process lock of a POD directory, behind one small interface.

Two mechanisms, one module each; ``docs/locks.md`` says which one runs where
and why it is safe.

``posix`` (:mod:`tastypy.storage._posix`)
    filelock's native descriptor lock (``flock``) on ``tastypy.lock``: a few
    microseconds, for the processes of one kernel (local filesystems).

``soft`` (:mod:`tastypy.storage._soft`)
    Existence of ``tastypy.lock.held``, made by hard-linking a template of
    this process to that name (or by exclusive creation), with the recovery
    of a lock whose holder is provably gone: for processes on every host.

``auto``
    ``soft`` on network, cluster and FUSE filesystems
    (:mod:`tastypy.storage.fsdetect`) and in a directory where a soft-lock
    process has left its note in ``tastypy.lock``; ``posix`` otherwise.

This module holds the policy that picks one, and :class:`DirectoryLock`,
which every sync takes.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Final, Iterator

from tastypy import _exit
from tastypy.errors import StorageError
from tastypy.storage import files, fsdetect
from tastypy.storage._posix import PosixLock
from tastypy.storage._soft import (
    DEFAULT_LEASE,
    SOFT_SUFFIX,
    WORK_SUFFIX,
    Holder,
    SoftLock,
    read_holder,
)

__all__ = [
    "DEFAULT_LEASE",
    "LOCK_MODES",
    "DirectoryLock",
    "Holder",
    "SoftLock",
    "read_holder",
]

log = logging.getLogger("tastypy")

LOCK_MODES: Final = ("auto", "posix", "soft")

#: What a soft-lock process writes into the posix lock file, so that a
#: process on a host where the same directory looks local (the file server)
#: takes the soft lock too instead of a flock the others cannot see.
SOFT_NOTE: Final = b"soft\n"


class DirectoryLock:
    """A lock shared by the threads of one process and by processes and hosts.

    Re-entrant within the process: nested ``held()`` blocks take it once.
    ``mode`` is what was asked for; :attr:`mode` is what runs (``posix`` or
    ``soft``) and :attr:`reason` says why.
    """

    def __init__(
        self,
        path: str,
        mode: str = "auto",
        timeout: float | None = 600.0,
        lease: float = DEFAULT_LEASE,
    ):
        if mode not in LOCK_MODES:
            raise ValueError(
                f"lock={mode!r} is not one of {', '.join(map(repr, LOCK_MODES))}: use 'auto' "
                "(the default), 'posix' (flock, for local filesystems) or 'soft' (a lock "
                "file, for network filesystems)"
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
        ):
            raise ValueError(
                f"lock_timeout must be a number of seconds >= 0 (or None to wait for ever), "
                f"got {timeout!r}"
            )
        self.path = path
        self.requested = mode
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._depth = 0
        # A forked child's hold copied from the parent (see forked()).
        self._parents = False
        self._posix = PosixLock(path)
        if mode == "soft":
            self.mode, self.reason = "soft", "lock='soft' was asked for"
        elif mode == "posix":
            self.mode, self.reason = "posix", "lock='posix' was asked for"
        else:
            self.mode, self.reason = fsdetect.choose_lock(os.path.dirname(path) or ".")
        if self.mode == "posix":
            self._heed_note(mode)
        self._soft = (
            SoftLock(path + SOFT_SUFFIX, lease, path + WORK_SUFFIX) if self.mode == "soft" else None
        )
        if self._soft is not None:
            self._leave_note()
        log.debug("tastypy: %s lock for %s: %s", self.mode, path, self.reason)

    def _heed_note(self, mode: str) -> None:
        """Take the soft lock (``auto``) or warn (``posix``) where a soft-lock
        process has left its note in the lock file."""
        fd = self._posix.descriptor()
        try:
            note = os.pread(fd, len(SOFT_NOTE), 0)
        except OSError:
            note = b""
        if note != SOFT_NOTE:
            return
        if mode == "auto":
            self.mode = "soft"
            self.reason = (
                f"{self.path} says a process with a soft lock has used this directory "
                "(from a host where it is on a network filesystem)"
            )
            self._posix.close()
        else:
            log.warning(
                "tastypy: %s was opened with lock='posix', but a process with a soft "
                "lock has used it; the two do not exclude each other. Use the same "
                "lock everywhere (lock='auto' does).",
                os.path.dirname(self.path),
            )

    def _leave_note(self) -> None:
        try:
            fd = files.open_regular(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise StorageError(
                f"cannot open the lock file {self.path}: {exc.strerror or exc}. "
                "Check that the POD directory is writable by you."
            ) from exc
        try:
            if os.pread(fd, len(SOFT_NOTE) + 1, 0) != SOFT_NOTE:
                os.pwrite(fd, SOFT_NOTE, 0)
                os.ftruncate(fd, len(SOFT_NOTE))
        except OSError:
            pass  # only a hint for processes that would pick posix
        finally:
            os.close(fd)

    def _acquire(self) -> None:
        if self._soft is not None:
            self._soft.acquire(self.timeout)
        else:
            self._posix.acquire(self.timeout)

    def _release(self) -> None:
        if self._parents:
            # The child of a fork made inside a hold leaves the block: the
            # lock (the same flock, the same lock file) is the parent's.
            self._parents = False
            return
        if self._soft is not None:
            try:
                self._soft.release()
            except OSError as exc:
                raise StorageError(
                    f"cannot remove the lock file {self._soft.path}: {exc.strerror or exc}"
                ) from exc
        else:
            self._posix.release()

    @contextmanager
    def held(self) -> Iterator[None]:
        # A Ctrl-C (or a SIGTERM) while the lock is taken or given back
        # would leave it held: both are put off until that is done (see
        # tastypy._exit); the block itself is not. A Ctrl-C put off while
        # taking it is raised as put_off ends, inside the try: the lock is
        # given back.
        with self._thread_lock:
            taken = False
            try:
                with _exit.put_off():
                    if self._depth == 0:
                        self._acquire()
                    self._depth += 1
                    taken = True
                yield
            finally:
                if taken:
                    with _exit.put_off():
                        self._depth -= 1
                        if self._depth == 0:
                            self._release()

    def forked(self) -> bool:
        """In a forked child: a lock a thread of the parent held (only the
        forking thread goes on in the child) is not the child's. The flock
        descriptor and the soft lock's files are made again on first use
        (see PosixLock.descriptor and tastypy.storage._soft). True if the
        forking thread held it: the child does not, and leaving the block
        it is in must not give back the parent's lock."""
        if self._thread_lock._is_owned():
            self._parents = self._depth > 0
            return self._parents
        self._thread_lock = threading.RLock()
        self._depth = 0
        return False

    def close(self) -> None:
        """Give back the descriptor or template this process keeps (both are
        made again if the lock is taken again)."""
        self._posix.close()
        soft = getattr(self, "_soft", None)
        if soft is not None and self._depth == 0:
            soft.close()
