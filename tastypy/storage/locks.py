"""The inter-process lock of a POD directory, behind one small interface.

``posix`` takes filelock's native descriptor lock (``flock``) on a lock file
kept open by this process: about 2 microseconds to take and give back, which
is what lets a tracker count every try on disk before the task runs. It is
right for local filesystems. ``soft`` is ``filelock.SoftFileLock`` (exclusive
creation of the lock file), for filesystems where ``flock`` does not exclude
across hosts.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from contextlib import contextmanager
from typing import Final, Iterator

import filelock

from tastypy.errors import LockTimeoutError, StorageError

LOCK_MODES: Final = ("auto", "posix", "soft")

_POLL_FIRST: Final = 0.0002
_POLL_MAX: Final = 0.02

if hasattr(filelock, "lock_descriptor"):
    _try_lock = filelock.lock_descriptor
    _unlock = filelock.unlock_descriptor
else:  # filelock < 3.30: the same flock, taken directly
    import fcntl

    def _try_lock(fd: int, *, blocking: bool = True) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class DirectoryLock:
    """A lock shared by the threads of one process and by processes and hosts.

    Re-entrant within the process: nested ``held()`` blocks take it once.
    """

    def __init__(self, path: str, mode: str = "auto", timeout: float = 600.0):
        if mode not in LOCK_MODES:
            raise ValueError(f"lock={mode!r} is not one of {', '.join(LOCK_MODES)}")
        self.path = path
        self.mode = "soft" if mode == "soft" else "posix"
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = -1
        self._pid = -1
        self._soft = (
            filelock.SoftFileLock(path, timeout=timeout, thread_local=False)
            if self.mode == "soft"
            else None
        )
        if self._soft is None:
            self._descriptor()

    def _descriptor(self) -> int:
        # A forked child must not share the parent's open file description:
        # flock would then treat parent and child as one holder.
        if self._pid != os.getpid():
            try:
                # O_NOFOLLOW: a link planted as the lock file must not make
                # us create a file wherever it points.
                flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                self._fd = os.open(self.path, flags, 0o666)
            except OSError as exc:
                raise StorageError(
                    f"cannot open the lock file {self.path}: {exc.strerror or exc}. "
                    "Check that the POD directory is writable by you."
                ) from exc
            self._pid = os.getpid()
        return self._fd

    def _acquire(self) -> None:
        if self._soft is not None:
            try:
                self._soft.acquire()
            except filelock.Timeout:
                self._timed_out()
            except OSError as exc:
                raise StorageError(
                    f"cannot create the lock file {self.path}: {exc.strerror or exc}."
                ) from exc
            return
        fd = self._descriptor()
        try:
            if _try_lock(fd, blocking=False):
                return
            deadline = time.monotonic() + self.timeout
            pause = _POLL_FIRST
            while not _try_lock(fd, blocking=False):
                if time.monotonic() > deadline:
                    self._timed_out()
                time.sleep(pause)
                pause = min(pause * 2, _POLL_MAX)
        except OSError as exc:
            if exc.errno == errno.ENOLCK:
                raise StorageError(
                    f"the filesystem of {self.path} does not support flock locks. "
                    "Open the POD with lock='soft'."
                ) from exc
            raise StorageError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc

    def _release(self) -> None:
        if self._soft is not None:
            self._soft.release()
        else:
            _unlock(self._fd)

    def _timed_out(self) -> None:
        raise LockTimeoutError(
            f"could not take the lock {self.path} within {self.timeout} s: another process "
            "holds it. Wait for it to finish, or raise lock_timeout."
        )

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1
        self._pid = -1
