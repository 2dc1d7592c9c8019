"""Opening the files of a POD directory: never through a link, only regular files.

A POD directory on a shared filesystem is written by other people and other
tools. A name in it may be a symbolic link to someone's private file, a FIFO
that blocks whoever opens it, or a device that never ends (``/dev/zero``).
Every file tastypy reads or appends to is opened here: without following a
link (``O_NOFOLLOW``), without blocking on a FIFO or a device
(``O_NONBLOCK``, which changes nothing for a regular file), and refused
unless ``fstat`` says it is a regular file. The error names what the file
is, so the message tells the user what was planted and what to do.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

__all__ = [
    "NotRegularFile",
    "check_directory",
    "open_directory",
    "open_regular",
    "read_regular",
    "what_is",
]

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)

#: After reading as much as ``fstat`` said, what was appended meanwhile is
#: read in pieces of this size (small: usually there is none, and a large
#: empty read buffer would still count in the memory a load takes).
_PROBE: Final = 1 << 16


class NotRegularFile(OSError):
    """A name in a POD directory that is not a regular file (a link, a FIFO,
    a directory, a device...). An ``OSError``, so that every caller that
    reports a file it cannot read reports this one too, naming it."""

    def __init__(self, path: str, kind: str, expected: str = "a regular file"):
        advice = (
            "replace the link with the file it points to if it is yours, or remove it"
            if kind == "a symbolic link"
            else "move it out of the POD directory"
        )
        # No errno: the message says it all, and no caller adds its own
        # hint for ELOOP or EISDIR to it.
        super().__init__(
            None,
            f"it is {kind}, not {expected}; tastypy reads and writes only regular files and "
            "directories in a POD directory, never through a link, so that a name planted "
            f"there cannot show it another file, block it or feed it without end ({advice})",
            path,
        )
        self.kind = kind


def what_is(mode: int) -> str:
    """What a file of mode ``mode`` is, in words for an error message."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refusal(path: str, exc: OSError, dir_fd: int | None) -> OSError:
    """The error for a failed open: :class:`NotRegularFile` when the name
    is a link or a directory, else ``exc`` itself."""
    if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.EMLINK, errno.ENXIO):
        return exc
    try:
        mode = os.lstat(path, dir_fd=dir_fd).st_mode
    except OSError:
        return exc
    if stat.S_ISREG(mode):
        return exc
    return NotRegularFile(path, what_is(mode))


def open_regular(
    path: str, flags: int = os.O_RDONLY, mode: int = 0o666, *, dir_fd: int | None = None
) -> int:
    """A descriptor of the regular file ``path``, opened with ``flags``.

    Raises :class:`NotRegularFile` if ``path`` is a link, a FIFO, a directory
    or a device (nothing is created through a link, and opening a FIFO does
    not wait for a writer), and ``FileNotFoundError`` or another ``OSError``
    as ``os.open`` does. (It is opened with ``O_NONBLOCK``, which changes
    nothing for a regular file.)
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        raise _refusal(path, exc, dir_fd) from None
    try:
        st_mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st_mode):
        os.close(fd)
        raise NotRegularFile(path, what_is(st_mode))
    return fd


def read_regular(
    path: str, offset: int = 0, limit: int | None = None, *, dir_fd: int | None = None
) -> bytes:
    """The bytes of the regular file ``path`` from ``offset`` to its end (or
    ``limit`` bytes at most), refused as :func:`open_regular` refuses."""
    fd = open_regular(path, dir_fd=dir_fd)
    try:
        size = os.fstat(fd).st_size
        want = max(size - offset, 0) if limit is None else limit
        # One read of what fstat saw (no copy to join in the common case),
        # then whatever was appended meanwhile, up to the end or the limit.
        data = os.pread(fd, want, offset) if want else b""
        pos = offset + len(data)
        chunks = [data]
        while limit is None or pos - offset < limit:
            # (A file over 2 GB comes in pieces of that size: one read is capped.)
            ask = max(size - pos, _PROBE) if limit is None else limit - (pos - offset)
            more = os.pread(fd, ask, pos)
            if not more:
                break
            chunks.append(more)
            pos += len(more)
    finally:
        os.close(fd)
    return data if len(chunks) == 1 else b"".join(chunks)


def open_directory(path: str) -> int:
    """A descriptor of the directory ``path``, refused if it is a link (a log
    directory planted as a link would send reads and writes elsewhere)."""
    try:
        return os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                raise exc from None
            if not stat.S_ISDIR(mode):
                raise NotRegularFile(path, what_is(mode), "a directory") from None
        raise


def check_directory(path: str) -> None:
    """Refuse ``path`` unless it is a directory itself, not a link to one."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISDIR(mode):
        raise NotRegularFile(path, what_is(mode), "a directory")
