"""The log of a POD on a shared filesystem: one new file per commit.

A client of a shared filesystem may answer with an old size or old contents
of a file another client changed: a FUSE client keeps a file's attributes
for a second by default, GlusterFS's md-cache as long, and an NFS client
between opens. Measured on two GlusterFS mounts of one volume: a journal
appended through one mount kept its old size through the other for about a
second, so a writer there appended at an old end, over another host's
batch. What every such filesystem decides on the server is the exclusive
creation of a name (``link``, ``O_EXCL``), and a name that never existed
cannot be cached as existing.

So here a generation's log is a directory, ``commits-GGGGGG/``, and every
commit is a new file in it, ``NNNNNNNNNN.jsonl``, numbered from 0: written
whole under a temporary name, fsynced, then linked to its number. Nobody
ever writes to a numbered file again, so a reader that opens a number for
the first time reads what its writer wrote, and a number that does not
exist yet ends the log. A lost race (the number exists) means another
process committed it: the caller reads it and decides again. Maildir
delivers mail on NFS the same way; Delta Lake's log commits on object
stores so.

A compaction ends a generation with a *seal*: one more commit whose line
``{"sealed":{"generation":G, ...}}`` names the next generation's snapshot.
A reader that meets it loads the next generation, whatever an old copy of
the manifest in its cache says.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import time
from typing import Callable, Final, NamedTuple

import orjson

from tastypy.errors import CorruptFileError, StorageError
from tastypy.storage import files, journal, layout

__all__ = [
    "SEAL_PREFIX",
    "Sealed",
    "commit_name",
    "count",
    "number_of",
    "read",
    "read_existing",
    "remove_generations_before",
    "remove_log",
    "seal_line",
    "sweep_temporaries",
    "write",
]

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
SEAL_PREFIX: Final = b'{"sealed":'

#: A temporary file older than this (seconds) was left by a writer that died
#: between writing it and linking it; a compaction removes it.
_TEMP_AGE: Final = 600.0

_TEMP_PREFIX: Final = ".tmp-"
_HOST: Final = socket.gethostname().replace("/", "_")[:64]


class Sealed(NamedTuple):
    """The seal that ends a generation: where the next one starts."""

    generation: int
    snapshot: str | None
    snapshot_records: int


def commit_name(number: int, gzipped: bool) -> str:
    return f"{number:010d}.jsonl" + (".gz" if gzipped else "")


def number_of(name: str) -> int | None:
    """The commit number of a file name in a log directory, or None."""
    stem = name.split(".", 1)[0]
    if len(stem) == 10 and stem.isdigit() and name[10:] in (".jsonl", ".jsonl.gz"):
        return int(stem)
    return None


def seal_line(sealed: Sealed) -> bytes:
    return orjson.dumps({"sealed": sealed._asdict()}) + b"\n"


def _read_file(path: str) -> bytes | None:
    """The bytes of the commit file ``path``, None if there is none. Neither
    the log directory nor the file may be a link (files.open_directory)."""
    try:
        dir_fd = files.open_directory(os.path.dirname(path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return files.read_regular(os.path.basename(path), dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except files.NotRegularFile as exc:
        raise files.NotRegularFile(path, exc.kind) from None
    finally:
        os.close(dir_fd)


def read(directory: str, number: int, gzipped: bool) -> tuple[bytes, str] | Sealed | None:
    """Commit ``number`` of the log ``directory``: ``(text, path)``, the seal
    that ends the log, or None if there is no such commit (yet)."""
    path = os.path.join(directory, commit_name(number, gzipped))
    try:
        raw = _read_file(path)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    if raw is None:
        return None
    text = journal.gunzip_members(raw)[0] if gzipped else raw
    if journal.unterminated(text):
        text += b"\n"  # saved by an editor without its final newline: still whole
    if text.startswith(SEAL_PREFIX):
        try:
            info = orjson.loads(text)["sealed"]
            return Sealed(int(info["generation"]), info["snapshot"], int(info["snapshot_records"]))
        except (ValueError, KeyError, TypeError):
            pass
    elif text and journal.committed_part(text) == len(text):
        return text, path
    raise CorruptFileError(
        f"{path} is not one whole batch of records. A commit file is written in full before "
        "it gets its name and is never changed afterwards, so this one was damaged or edited. "
        f"Run `tastypy repair {os.path.dirname(directory)}` to salvage every readable record.",
        path,
    )


def write(
    directory: str,
    number: int,
    data: bytes,
    gzipped: bool,
    durable: bool,
    hook: Callable[[str], None],
) -> bool:
    """Create commit ``number`` holding ``data``; False, with nothing
    written, if that number exists already (another process committed it)."""
    layout.make_dirs(directory)
    files.check_directory(directory)
    tmp = os.path.join(directory, f"{_TEMP_PREFIX}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
    try:
        try:
            view = memoryview(data)
            hook("before-write")
            while view:
                view = view[os.write(fd, view) :]
            hook("after-write")
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, os.path.join(directory, commit_name(number, gzipped)))
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise StorageError(
                    f"cannot link a commit into {directory}: {exc.strerror}. The shared store "
                    "commits by creating hard links, which this filesystem refuses; keep the "
                    "POD on a filesystem with hard links (NFS, GlusterFS, Lustre, CephFS do)."
                ) from exc
            raise
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    if durable:
        hook("after-fsync")
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return True


def count(directory: str, gzipped: bool) -> int:
    """How many commits the log ``directory`` holds (numbers 0 to n - 1, the
    seal included): the first missing number, found by probing names, which
    a client never shows as existing before they do."""

    def there(number: int) -> bool:
        return os.path.lexists(os.path.join(directory, commit_name(number, gzipped)))

    if not there(0):
        return 0
    high = 1
    while there(high):
        high *= 2
    low = high // 2  # there(low), not there(high)
    while high - low > 1:
        middle = (low + high) // 2
        if there(middle):
            low = middle
        else:
            high = middle
    return high


def read_existing(
    directory: str, number: int, gzipped: bool, wait: float
) -> tuple[bytes, str] | Sealed:
    """Commit ``number``, which the server said exists (a link to it failed)
    while this client does not show it: a cached "no such file" (NFS keeps
    those until the directory's attributes expire, up to a minute by
    default). Look again, for up to ``wait`` seconds, until the cache lets
    it through."""
    deadline = time.monotonic() + wait
    pause = 0.01
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
        try:
            os.listdir(directory)  # makes some clients look again
        except OSError:
            pass
        got = read(directory, number, gzipped)
        if got is not None:
            return got
    raise StorageError(
        f"commit {number} of {directory} exists on the server (creating it failed) but this "
        f"client has not shown it for {wait:.0f} s: its cache of missing names does not "
        "expire. Mount the filesystem so that it does not cache them (NFS: lookupcache=positive)."
    )


def remove_generations_before(pod: str, generation: int) -> None:
    """Delete the snapshots and logs of generations older than ``generation``
    in the POD directory ``pod`` (nothing that is not ours)."""
    for name in os.listdir(pod):
        old = layout.generation_of(name)
        if old is None or old >= generation:
            continue
        path = os.path.join(pod, name)
        if layout.is_commits_dir(name):
            remove_log(path)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def sweep_temporaries(directory: str) -> None:
    """Remove temporary files that dead writers left in a log directory."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for name in names:
        if name.startswith(_TEMP_PREFIX):
            path = os.path.join(directory, name)
            try:
                if now - os.lstat(path).st_mtime > _TEMP_AGE:
                    os.unlink(path)
            except OSError:
                pass


def remove_log(directory: str) -> None:
    """Delete a log directory of an old generation: its commits, then itself."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if number_of(name) is not None or name.startswith(_TEMP_PREFIX):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
    try:
        os.rmdir(directory)
    except OSError:
        pass  # something not ours stays, with the directory around it
