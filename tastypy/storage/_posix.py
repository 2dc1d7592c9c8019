"""The posix lock: filelock's ``flock`` on ``tastypy.lock``, for one kernel.

filelock's native descriptor lock (``flock``) on ``tastypy.lock``, kept open
by the process: a few microseconds to take and give back, which is what lets
a tracker count every try on disk before the task runs. It excludes the
processes of one kernel, so it is right for local filesystems; the kernel
drops it when its process dies, so it needs no recovery.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Final

import filelock

from tastypy import _exit
from tastypy.errors import LockTimeoutError, StorageError
from tastypy.storage import files

__all__ = ["PosixLock"]

_POLL_FIRST: Final = 0.00005
_POLL_MAX: Final = 0.001
#: How often a wait for the lock looks for a Ctrl-C, in seconds.
_INTERRUPT_EVERY: Final = 0.05

try:
    import fcntl as _fcntl
except ImportError:  # Windows
    _fcntl = None  # type: ignore[assignment]

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


def _flock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file open as ``fd``, from ``/proc/locks``."""
    try:
        st = os.fstat(fd)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    inode = f":{st.st_ino}"
    guess = None
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or not fields[4].isdigit():
            continue  # a waiter, not a holder
        pid = int(fields[4])
        if pid == os.getpid():
            continue
        if fields[5] == want:
            return pid
        # Some filesystems (btrfs, overlay) list another device number.
        if fields[5].endswith(inode):
            guess = pid
    return guess


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return ""
    text = " ".join(" ".join(a.decode("utf-8", "replace") for a in args).split())
    return text if len(text) <= 120 else text[:117] + "..."


def _wait_in_kernel(fd: int, timeout: float | None) -> bool:
    """Block in ``flock`` until the lock is ours, or ``timeout`` seconds pass
    (None: for ever), or a Ctrl-C comes.

    A blocked ``flock`` can be given no deadline, and inside a sync a Ctrl-C
    does not interrupt it (it is put off, see :mod:`tastypy._exit`), so a
    helper thread makes the call; if the deadline passes or a Ctrl-C comes
    first, the helper gives the lock back as soon as it gets it.
    """
    got = threading.Event()
    state = {"abandoned": False}
    guard = threading.Lock()
    # The helper works on its own duplicate of the descriptor (the same open
    # file, so the same lock): if we give up and the lock's descriptor is
    # closed and its number reused, the helper still touches only ours.
    own = os.dup(fd)

    def wait() -> None:
        try:
            _fcntl.flock(own, _fcntl.LOCK_EX)
            with guard:
                if state["abandoned"]:
                    _fcntl.flock(own, _fcntl.LOCK_UN)
                else:
                    got.set()
        except OSError:
            pass
        finally:
            os.close(own)

    threading.Thread(target=wait, name="tastypy-lock-wait", daemon=True).start()
    deadline = float("inf") if timeout is None else time.monotonic() + timeout
    try:
        # In slices: a Ctrl-C put off by the sync ends the wait (see
        # tastypy._exit.take_interrupt).
        while not got.wait(min(_INTERRUPT_EVERY, max(deadline - time.monotonic(), 0))):
            if time.monotonic() >= deadline:
                break
            _exit.take_interrupt()
        else:
            return True
    except BaseException:
        with guard:
            state["abandoned"] = True
            if got.is_set():
                _fcntl.flock(fd, _fcntl.LOCK_UN)
        raise
    with guard:
        if got.is_set():
            return True
        state["abandoned"] = True
    return False


class PosixLock:
    """A ``flock`` on ``path``, through a descriptor this process keeps open
    (one per process: a forked child opens its own).

    Not re-entrant and not shared between threads: :class:`DirectoryLock`
    wraps it.
    """

    def __init__(self, path: str):
        self.path = path
        self._fd = -1
        self._pid = -1

    def descriptor(self) -> int:
        """This process's descriptor of the lock file, opened (and the file
        made) on first use."""
        # A forked child must not share the parent's open file description:
        # flock would then treat parent and child as one holder.
        if self._pid != os.getpid():
            try:
                # A link planted as the lock file must not make us create a
                # file wherever it points; a FIFO or a device is no lock file.
                self._fd = files.open_regular(self.path, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise StorageError(
                    f"cannot open the lock file {self.path}: {exc.strerror or exc}. "
                    "Check that the POD directory is writable by you."
                ) from exc
            self._pid = os.getpid()
        return self._fd

    def acquire(self, timeout: float | None) -> None:
        """Take the lock, waiting at most ``timeout`` seconds (None: for ever)."""
        fd = self.descriptor()
        try:
            if _try_lock(fd, blocking=False):
                return
            began = time.time()
            if _fcntl is not None:
                # Wait in the kernel, which hands the lock to one waiter the
                # moment it is free: under contention this doubles the
                # throughput of polling (bench W5).
                if _wait_in_kernel(fd, timeout):
                    return
                self._timed_out(fd, began, timeout)
            deadline = float("inf") if timeout is None else time.monotonic() + timeout
            pause = _POLL_FIRST
            while not _try_lock(fd, blocking=False):
                if time.monotonic() > deadline:
                    self._timed_out(fd, began, timeout)
                _exit.take_interrupt()
                time.sleep(pause)
                pause = min(pause * 2, _POLL_MAX)
        except LockTimeoutError:
            raise
        except OSError as exc:
            if exc.errno == errno.ENOLCK:
                raise StorageError(
                    f"the filesystem of {self.path} does not support flock locks. "
                    "Open the POD with lock='soft'."
                ) from exc
            raise StorageError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc

    def release(self) -> None:
        _unlock(self._fd)

    def close(self) -> None:
        """Close this process's descriptor (opened again if the lock is taken
        again)."""
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1
        self._pid = -1

    def _timed_out(self, fd: int, began: float, timeout: float | None) -> None:
        pid = _flock_holder(fd)
        waited = time.strftime("%H:%M:%S", time.localtime(began))
        if pid is None:
            who = f"another process has held it since before {waited}"
        else:
            cmd = _command_line(pid)
            cmd = f" ({cmd})" if cmd else ""
            who = f"pid {pid} on this host{cmd} has held it since before {waited}"
        err = LockTimeoutError(
            f"could not take the lock {self.path} within {timeout} s: {who}. Wait for it "
            "to finish its sync, stop it if it is stuck, or pass a larger lock_timeout."
        )
        err.lock_path = self.path  # type: ignore[attr-defined]
        err.holder = pid  # type: ignore[attr-defined]
        raise err
