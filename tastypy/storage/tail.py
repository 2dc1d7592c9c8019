"""Cheap appends at the end of a store's journal, for a tracker's per-task writes.

A tracker writes the record of every try before the task runs, so that the
try survives the task killing its process. The ordinary path (take the lock,
read the manifest, open the journal, append, close) costs some 40 µs, most
of it system calls, which caps a try loop at ~25k tasks/s. This keeps the
lock file and the journal open and costs four system calls: flock, fstat,
pwrite, unlock, without fsync (a write in the page cache survives the death
of the process; only a power loss needs the fsync, which the tracker still
does every ``sync_at`` tries).

It appends only when nothing happened since the store last looked: the same
journal file, still linked, and exactly as long as the store's committed
offset. Anything else (another process appended, a compaction, a torn tail,
the lock taken) answers False, and the caller takes the ordinary path,
which reads what others wrote and repairs what needs repairing.

It is used only on local filesystems with flock locking: on a network
filesystem a descriptor kept open may report a cached size, so there every
write goes through the ordinary path, which reopens the file each time.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Final

try:
    import fcntl
except ImportError:  # Windows: no flock, no fast path
    fcntl = None  # type: ignore[assignment]

from tastypy import _faults
from tastypy.storage import layout

__all__ = ["TailAppender", "is_local_filesystem"]

#: Filesystems on which a descriptor kept open sees every other process's
#: writes at once, and flock excludes every process that can open the file.
_LOCAL_FILESYSTEMS: Final = frozenset(
    {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "f2fs",
        "reiserfs", "jfs", "bcachefs", "nilfs2", "overlay", "hfs", "hfsplus", "apfs",
    }
)  # fmt: skip

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_OCTAL: Final = re.compile(r"\\([0-7]{3})")


#: Bumped in a forked child, whose inherited descriptors must not be used:
#: flock would count parent and child as one holder.
_forks = 0


def _after_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _unescape(field: str) -> str:
    # /proc/self/mountinfo spells space, tab, newline and backslash in octal.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem holding ``path`` (Linux), or None if unknown."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best = ""
    best_type = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        mount_point = _unescape(fields[4])
        inside = (
            target == mount_point
            or mount_point == "/"
            or target.startswith(mount_point.rstrip("/") + "/")
        )
        # Later lines are mounted over earlier ones at the same point.
        if inside and len(mount_point) >= len(best):
            best = mount_point
            parts = right.split()
            best_type = parts[0] if parts else None
    return best_type


def is_local_filesystem(path: str) -> bool:
    """Whether ``path`` is on a filesystem known to be local (not NFS, SMB,
    Lustre, FUSE...). Unknown (no ``/proc``, e.g. macOS) counts as not local."""
    return filesystem_type(path) in _LOCAL_FILESYSTEMS


_pwrite = os.pwrite
_fstat = os.fstat
if fcntl is not None:
    _flock = fcntl.flock
    _LOCK_EX_NB: Final = fcntl.LOCK_EX | fcntl.LOCK_NB
    _LOCK_UN: Final = fcntl.LOCK_UN


def _write_all(fd: int, data: bytes, pos: int) -> None:
    while data:
        written = _pwrite(fd, data, pos)
        data = data[written:]
        pos += written


def _write_hooked(fd: int, batch: bytes, pos: int, hook) -> None:
    # Only an armed fault hook splits the write, so that a crash can land
    # inside a batch (as in journal.append).
    hook("before-write")
    half = len(batch) // 2
    _write_all(fd, batch[:half], pos)
    hook("mid-write")
    _write_all(fd, batch[half:], pos + half)
    hook("after-write")


class TailAppender:
    """Appends small batches to ``store``'s journal with four system calls.

    The caller holds no lock of the store, and makes sure no other thread
    of this process syncs the same object meanwhile.
    """

    def __init__(self, store):
        self.store = store
        # The lock the store runs (``auto`` resolved): only a flock on
        # ``tastypy.lock`` excludes the store's writers as this one does.
        lock_mode = getattr(getattr(store, "_lock", None), "mode", None)
        self.enabled = (
            fcntl is not None
            and lock_mode == "posix"
            and sys.platform != "win32"
            and is_local_filesystem(store.path)
        )
        self._fork = -1  # the value of _forks when the descriptors were opened
        self._lock_fd = -1
        self._fd = -1
        self._journal = ""

    def _open(self) -> bool:
        """(Re)open the lock file and the store's current journal."""
        store = self.store
        if self._fork == _forks:
            if self._fd >= 0:
                os.close(self._fd)
        else:
            self._lock_fd = -1  # the parent's: left alone
        self._fd = -1
        self._journal = ""
        self._fork = _forks
        try:
            if self._lock_fd < 0:
                self._lock_fd = os.open(
                    os.path.join(store.path, layout.LOCK_FILE),
                    os.O_RDWR | os.O_CREAT | _NOFOLLOW,
                    0o666,
                )
            self._fd = os.open(store.journal_path, os.O_WRONLY | _NOFOLLOW)
        except OSError:
            # No journal yet (the ordinary path creates it), or anything
            # else: the ordinary path reports it properly.
            return False
        self._journal = store.journal_path
        return True

    def append(self, batch: bytes, count: int) -> bool:
        """Append ``batch`` (``count`` records and their commit line) without
        fsync. False, with nothing written, when the ordinary path must do it."""
        store = self.store
        if self._journal != store.journal_path or self._fork != _forks:
            if not self.enabled or not self._open():
                return False
        lock_fd = self._lock_fd
        try:
            _flock(lock_fd, _LOCK_EX_NB)
        except OSError:
            return False  # held by someone: the ordinary path waits for it
        try:
            fd = self._fd
            pos = store.journal_pos
            st = _fstat(fd)
            if st.st_size != pos or not st.st_nlink:
                return False
            try:
                if store.fault is _faults.no_fault:
                    written = _pwrite(fd, batch, pos)
                    if written != len(batch):
                        _write_all(fd, batch[written:], pos + written)
                else:
                    _write_hooked(fd, batch, pos, store.fault)
            except OSError:
                # Take the part written back before anyone can read it; the
                # ordinary path then retries and reports what is wrong.
                try:
                    os.ftruncate(fd, pos)
                except OSError:
                    pass
                return False
            store.journal_pos = pos + len(batch)
            store.journal_records += count
            return True
        finally:
            _flock(lock_fd, _LOCK_UN)

    def fsync(self) -> None:
        """Make what this appended durable (if its journal is still current:
        a compaction since has fsynced its own copy of the records)."""
        if self._fd >= 0 and self._fork == _forks and self._journal == self.store.journal_path:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fork == _forks:
            for fd in (self._fd, self._lock_fd):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        self._fd = -1
        self._lock_fd = -1
        self._journal = ""
        self._fork = -1
