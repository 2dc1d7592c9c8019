"""The inter-process lock of a POD directory, behind one small interface.

``posix`` is ``filelock.FileLock`` (``flock``), right for local filesystems.
``soft`` is ``filelock.SoftFileLock`` (exclusive creation of the lock file),
for filesystems where ``flock`` does not exclude across hosts.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Final, Iterator

import filelock

from tastypy.errors import LockTimeoutError, StorageError

LOCK_MODES: Final = ("auto", "posix", "soft")


class DirectoryLock:
    """A lock shared by threads of one process and by processes and hosts."""

    def __init__(self, path: str, mode: str = "auto", timeout: float = 600.0):
        if mode not in LOCK_MODES:
            raise ValueError(f"lock={mode!r} is not one of {', '.join(LOCK_MODES)}")
        self.path = path
        self.mode = "soft" if mode == "soft" else "posix"
        self.timeout = timeout
        cls = filelock.SoftFileLock if self.mode == "soft" else filelock.FileLock
        self._file_lock = cls(path, timeout=timeout, thread_local=False)
        self._thread_lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                try:
                    self._file_lock.acquire()
                except filelock.Timeout:
                    raise LockTimeoutError(
                        f"could not take the lock {self.path} within {self.timeout} s: another "
                        "process holds it. If no tastypy process is running, delete that file; "
                        "otherwise raise lock_timeout."
                    ) from None
                except OSError as exc:
                    raise StorageError(
                        f"cannot create the lock file {self.path}: {exc.strerror or exc}. "
                        "Check that the directory is writable by you."
                    ) from exc
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._file_lock.release()
