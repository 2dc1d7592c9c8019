"""Cheap reads and appends at the end of a store's journal, for a tracker's per-task writes.

A tracker claims every task on disk before the task runs: under the
directory lock it takes in what other processes wrote, checks that the task
is still free, and appends the claim. The ordinary path (take the lock, read
the manifest, stat and read the journal, open it again, append, close) costs
some 40 µs, most of it system calls, which caps a try loop at ~25k tasks/s.
This keeps the lock file and the journal open: a claim costs four system
calls (flock, lseek, pwrite, unlock) when nobody else wrote since the store
last looked, and one more (pread) when somebody did. No fsync: a write in
the page cache survives the death of the process; only a power loss needs
the fsync, which the tracker still does every ``sync_at`` tries.

A session (:meth:`TailAppender.begin`) goes on only while the journal is the
one the store last read, still linked, no shorter than the store's committed
offset, and whatever others appended since is whole committed batches. A
journal that ends exactly where the store last read it was not replaced
either: a compaction or a repair seals the journal it replaces first
(:func:`journal.seal` appends a torn batch), so one ``lseek`` tells what
an ``fstat`` would, for a third of its cost; the ``fstat`` is made only when
the size changed.
Anything else (a compaction, a torn tail, the lock busy for long, a gzipped
journal that grew) answers None, and the caller takes the ordinary path,
which reads the manifest, repairs what needs repairing and waits for the
lock with a timeout.

It is used only on local filesystems with flock locking: on a network
filesystem a descriptor kept open may report a cached size, so there every
write goes through the ordinary path, which reopens the file each time.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import time
from collections.abc import Iterable
from typing import Callable, Final

try:
    import fcntl
except ImportError:  # Windows: no flock, no fast path
    fcntl = None  # type: ignore[assignment]

import orjson

from tastypy import _faults
from tastypy.codec import dumps, key_from_json
from tastypy.errors import CorruptFileError, TastypyError
from tastypy.storage import files, journal, layout
from tastypy.storage.fsdetect import is_known_local

__all__ = ["TailAppender", "file_time"]


#: Bumped in a forked child, whose inherited descriptors must not be used:
#: flock would count parent and child as one holder.
_forks = 0


def _after_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def file_time(path: str) -> float | None:
    """The modification time of ``path`` (set by the filesystem, on a network
    filesystem by the server's clock), or None if it cannot be read."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


_no_fault = _faults.no_fault
_PLAIN_KEYS: Final = frozenset({str, int})
_loads = orjson.loads
_pwrite = os.pwrite
_pread = os.pread
_fstat = os.fstat
_lseek = os.lseek
_SEEK_END: Final = os.SEEK_END
_yield = getattr(os, "sched_yield", lambda: None)

#: How a session waits for a busy lock: it tries again ``_SPINS`` times,
#: yielding the processor in between (the holder usually needs microseconds),
#: then sleeps between tries, from ``_PAUSE_FIRST`` doubling up to
#: ``_PAUSE_MAX`` seconds, for at most ``_WAIT`` seconds (a durable sync or a
#: compaction holds the lock for milliseconds to seconds); then it leaves the
#: wait to the ordinary path, which waits with a timeout and says who holds
#: the lock. The sleeps stay short: several processes taking turns at the
#: lock thousands of times a second would otherwise sleep past their turns.
_SPINS: Final = 8
_PAUSE_FIRST: Final = 0.00005
_PAUSE_MAX: Final = 0.001
_WAIT: Final = 5.0

#: What :meth:`TailAppender.begin` returns when nobody else wrote.
_NOTHING: Final[list] = []


class _Fallback(Exception):
    """The session cannot go on: the ordinary path must do it."""


if fcntl is not None:
    _flock = fcntl.flock
    _LOCK_EX_NB: Final = fcntl.LOCK_EX | fcntl.LOCK_NB
    _LOCK_UN: Final = fcntl.LOCK_UN


def changes_of(text: bytes, path: str) -> tuple[list, int]:
    """The changes in the committed batches ``text`` of the journal ``path``,
    as ``(key, value or DELETED)`` pairs, and how many records they came
    from: :func:`journal.parse` and :func:`journal.as_changes` in one pass,
    for the plain case (anything else goes through them, which name a bad
    line). Without deletions, only the last change of each key is kept
    (taking in the others would only be undone): a tracker's claim and done
    mark of one task come together.

    Python's cyclic garbage collector is paused meanwhile: the parse makes
    two containers per record (none of them in a cycle), and the collections
    those allocations would trigger, each walking the young objects, cost
    more than the parse itself (2.5 µs a record against 1 µs here)."""
    if not gc.isenabled():
        return _changes_of(text, path)
    gc.disable()
    try:
        return _changes_of(text, path)
    finally:
        gc.enable()


def _changes_of(text: bytes, path: str) -> tuple[list, int]:
    try:
        items = _loads(b"[" + text[:-1].replace(b"\n", b",") + b"]")
    except ValueError:
        items = None
    if items is not None:
        # The common case: every record sets a str or int key, and each
        # commit line counts its batch. Only the last value of a key is
        # kept (taking in the ones before would only be undone).
        latest: dict = {}
        count = 0
        batches = 0
        for item in items:
            if type(item) is list:
                if len(item) != 2:
                    break
                key = item[0]
                t = type(key)
                if t is not str and t is not int:
                    break
                latest[key] = item[1]
                count += 1
            elif type(item) is dict and item.get("sync") == count:
                count = 0
                batches += 1
            else:
                break
        else:
            if not count:  # ends with a commit line
                return list(latest.items()), len(items) - batches
        out = []
        append = out.append
        count = 0
        for item in items:
            if type(item) is list:
                n = len(item)
                key = item[0] if n else None
                t = type(key)
                if t is not str and t is not int:
                    if t is not list or not journal.is_key(key):
                        break
                    key = key_from_json(key)
                if n == 2:
                    append((key, item[1]))
                elif n == 1:
                    append((key, journal.DELETED))
                else:
                    break
                count += 1
            elif type(item) is dict and item.get("sync") == count:
                count = 0
            else:
                break
        else:
            if not count:  # ends with a commit line
                return out, len(out)
    out = journal.as_changes(journal.parse(text, path))
    return out, len(out)


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
    """Reads and appends at the end of ``store``'s journal with a few system calls.

    Either :meth:`append_after` a batch decided on what the store knows of
    one task (it is written unless what others wrote since mentions that
    task), or, to take in what others wrote first: ``changes =
    tail.begin()``; if not None the lock is held: take ``changes`` in,
    decide, :meth:`write` at most once, then :meth:`end` (always).
    The caller makes sure no other thread of this process uses the same
    store meanwhile.
    """

    def __init__(self, store):
        self.store = store
        # The lock the store runs (``auto`` resolved): only a flock on
        # ``tastypy.lock`` excludes the store's writers as this one does.
        lock_mode = getattr(getattr(store, "_lock", None), "mode", None)
        self._usable = (
            fcntl is not None
            and lock_mode == "posix"
            and sys.platform != "win32"
            and is_known_local(store.path)
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
                self._lock_fd = files.open_regular(
                    os.path.join(store.path, layout.LOCK_FILE), os.O_RDWR | os.O_CREAT
                )
            # Never a link, a FIFO or a device planted since the store read it.
            self._fd = files.open_regular(store.journal_path, os.O_RDWR)
        except OSError:
            # No journal yet (the ordinary path creates it), or anything
            # else: the ordinary path reports it properly.
            return False
        self._journal = store.journal_path
        return True

    def _take_lock(self, on_wait: Callable[[], object] | None) -> bool:
        """Wait for the lock held by another process (see ``_SPINS``),
        calling ``on_wait()`` before each new try after a sleep."""
        lock_fd = self._lock_fd
        pause = 0.0
        deadline = 0.0
        for attempt in itertools.count():
            if attempt < _SPINS:
                _yield()
            else:
                if not deadline:
                    deadline = time.monotonic() + _WAIT
                    pause = _PAUSE_FIRST
                elif time.monotonic() > deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, _PAUSE_MAX)
                if on_wait is not None:
                    on_wait()
            try:
                _flock(lock_fd, _LOCK_EX_NB)
                return True
            except BlockingIOError:
                continue
            except OSError:
                return False
        return False  # pragma: no cover - itertools.count() does not end

    def _locked(self, on_wait: Callable[[], object] | None) -> bool:
        """Open the files if needed and take the lock (see :meth:`_take_lock`);
        False, with the lock not held, when the ordinary path must run."""
        store = self.store
        if self._journal != store.journal_path or self._fork != _forks:
            if not self.enabled or not self._open():
                return False
        try:
            _flock(self._lock_fd, _LOCK_EX_NB)
        except BlockingIOError:
            return self._take_lock(on_wait)
        except OSError:
            return False
        return True

    @property
    def enabled(self) -> bool:
        """Whether the store is a journal this appender may keep open: not
        the shared store, which a POD may be converted to while open."""
        return self._usable and not self.store.shared

    def peek(self) -> bytes | None:
        """Read, without the lock, the whole batches others appended since the
        store last looked: their bytes (``b""`` if none), for the caller to
        take in and count into the store's records (see :meth:`records_of`);
        or None if the journal was replaced (a compaction: load afresh).
        Taking them in before :meth:`begin` keeps the lock short: it then
        reads only what came meanwhile. Safe without the lock because a
        committed batch is never changed or cut, and a batch being written
        has no commit line yet."""
        store = self.store
        if self._journal != store.journal_path or self._fork != _forks:
            if not self.enabled or not self._open():
                return b""
        try:
            pos = store.journal_pos
            if _lseek(self._fd, 0, _SEEK_END) == pos:
                return b""
            st = _fstat(self._fd)
            size = st.st_size
            if size < pos - 1 or not st.st_nlink:
                return None
            if store.gzipped or size < pos:
                # (One byte short: the last batch lacks its newline, see
                # journal.read_from; the ordinary path writes it.)
                return b""
            chunk = self._read_raw(pos, size)
        except OSError:
            return b""
        if journal.holds_unwritable(chunk):
            return None  # another tool's line: the load names it
        if chunk:
            store.journal_pos = pos + len(chunk)
            store.mixed = True
        return chunk

    def sealed(self) -> bool:
        """Whether the journal this appender has open ends with a seal: a
        compaction or a repair replaced it, after taking in (under the lock)
        everything appended to it before the seal, which is then all in the
        new generation. False if it cannot tell (not open, deleted without
        a seal, gzipped)."""
        if self._fd < 0 or self._fork != _forks or self.store.gzipped:
            return False
        n = len(journal.SEAL)
        try:
            size = _fstat(self._fd).st_size
            return size >= n and _pread(self._fd, n, size - n) == journal.SEAL
        except OSError:
            return False

    def follow(self) -> tuple[bytes, bytes] | None:
        """After another process compacted the store: take the store to the
        new generation without loading it, when that is sure to give the
        same data. Returns the whole batches to take in, in this order: the
        rest of the old journal (not counted into the store's records), then
        the new journal so far (to be counted, see :meth:`records_of`); or
        None (nothing changed in the store) when the caller must load afresh.

        The new snapshot holds exactly what the old generation held at its
        end, because the compaction ran under the lock. A process that has
        taken in the old journal to its end (it still has the file open,
        so it can read what it had not yet) therefore holds that snapshot
        already; it needs only what was appended to the new journal. Only
        for one generation ahead: after two, the journal in between was
        never read here."""
        store = self.store
        if (
            self._fd < 0
            or self._fork != _forks
            or self._journal != store.journal_path
            or store.gzipped
        ):
            return None
        try:
            st = _fstat(self._fd)
            pos = store.journal_pos
            if st.st_nlink or st.st_size < pos:
                return None
            rest = self._read_raw(pos, st.st_size)
            if journal.holds_unwritable(rest):
                return None  # another tool's line: the load names it
            manifest = layout.read_manifest(store.path)
            if (
                manifest is None
                or manifest.get("generation") != store.generation + 1
                or manifest.get("gzipped")
                or type(manifest.get("snapshot_records")) is not int
            ):
                return None
            new_path = os.path.join(store.path, manifest["journal"])
            try:
                fd = files.open_regular(new_path, os.O_RDWR)
            except FileNotFoundError:
                fd = -1  # no sync since the compaction
            if fd >= 0:
                old_fd, old_journal = self._fd, self._journal
                self._fd, self._journal = fd, new_path
                try:
                    more = self._read_raw(0, _fstat(fd).st_size)
                except BaseException:
                    self._fd, self._journal = old_fd, old_journal
                    os.close(fd)
                    raise
                os.close(old_fd)
            else:
                more = b""
            if journal.holds_unwritable(more):
                return None  # another tool's line: the load (of the journal open now) names it
        except (OSError, TastypyError, KeyError, TypeError):
            return None
        store.generation = manifest["generation"]
        store.mixed = True
        store.journal_path = new_path
        store.journal_pos = len(more)
        store.journal_records = 0  # the caller counts ``more`` (records_of)
        store.snapshot_records = manifest["snapshot_records"]
        if fd < 0:
            self._journal = ""  # reopened once the journal exists
        return rest, more

    def _read_raw(self, pos: int, size: int) -> bytes:
        """The whole batches between ``pos`` and ``size`` (``b""`` if none)."""
        fd = self._fd
        chunk = _pread(fd, size - pos, pos)
        while len(chunk) < size - pos:
            more = _pread(fd, size - pos - len(chunk), pos + len(chunk))
            if not more:
                break
            chunk += more
        keep = journal.committed_part(chunk)
        return chunk[:keep] if keep != len(chunk) else chunk

    def _read(self, pos: int, size: int) -> tuple[list, int, int]:
        """The changes in the whole batches between ``pos`` and ``size``, how
        many records they came from, and how many bytes they take."""
        chunk = self._read_raw(pos, size)
        if not chunk:
            return [], 0, 0
        if journal.holds_unwritable(chunk):
            raise _Fallback  # another tool's line: the ordinary path names it
        try:
            changes, n = changes_of(chunk, self._journal)
            return changes, n, len(chunk)
        except CorruptFileError:
            raise _Fallback from None  # the ordinary path names the line

    def begin(self, on_wait: Callable[[], object] | None = None) -> list | None:
        """Take the lock and read what others committed since the store last
        looked: their changes as ``(key, value or DELETED)`` pairs, ``[]`` if
        none. None, with the lock not held, when the ordinary path must run.

        While the lock is busy, ``on_wait()`` is called between tries: a
        caller that takes in what others wrote meanwhile (:meth:`peek`)
        then holds the lock only for what comes after."""
        store = self.store
        if not self._locked(on_wait):
            return None
        try:
            fd = self._fd
            pos = store.journal_pos
            if _lseek(fd, 0, _SEEK_END) == pos:
                return _NOTHING  # unchanged, so not replaced either (journal.seal)
            st = _fstat(fd)
            size = st.st_size
            if size < pos or not st.st_nlink or store.gzipped:
                raise _Fallback
            records, n, keep = self._read(pos, size)
            if pos + keep != size:
                raise _Fallback  # a torn batch: the ordinary path cuts it
            store.journal_pos = pos + keep
            store.journal_records += n
            if records:
                store.mixed = True
            return records
        except (_Fallback, OSError):
            _flock(self._lock_fd, _LOCK_UN)
            return None
        except BaseException:
            _flock(self._lock_fd, _LOCK_UN)
            raise

    def append_after(
        self,
        batch: bytes | bytearray,
        count: int,
        keys: Iterable,
    ) -> bytes | None:
        """Take the lock (waiting for it if busy), append ``batch`` after
        whatever others appended since the store last looked, provided that
        none of it holds a record of one of ``keys`` (the task the caller
        decided on, and the others it writes: a byte search for the start
        of each one's record), and give the lock back.

        Returns the bytes others had appended (whole committed batches,
        ``b""`` if none), which the caller must take in at once (they come
        before its own in the journal; :func:`records_of`); or None, with
        nothing written, when the caller must take the full path: a needle
        was found, the journal was replaced or has a torn tail, the write
        failed, or the lock stayed busy. Taking in what others wrote after
        the lock is given back keeps each process's turn at the lock short."""
        store = self.store
        if not self._locked(None):
            return None
        lock_fd = self._lock_fd
        try:
            fd = self._fd
            pos = store.journal_pos
            # A journal replaced since was sealed first (journal.seal): it
            # ends with a torn batch, refused below.
            size = _lseek(fd, 0, _SEEK_END)
            if size < pos:
                return None
            chunk = b""
            if size > pos:
                if store.gzipped:
                    return None
                chunk = _pread(fd, size - pos, pos)
                while len(chunk) < size - pos:
                    more = _pread(fd, size - pos - len(chunk), pos + len(chunk))
                    if not more:
                        return None
                    chunk += more
                if journal.committed_part(chunk) != len(chunk):
                    return None  # a torn batch: the ordinary path cuts it
                if journal.holds_unwritable(chunk):
                    return None  # another tool's line: the ordinary path names it
                for key in keys:
                    key_json = dumps(key)
                    if b"[%b," % key_json in chunk or b"[%b]" % key_json in chunk:
                        return None
            store.journal_pos = size
            if chunk:
                store.mixed = True
            if not self.write(batch, count):
                store.journal_pos = pos
                return None
            return chunk
        finally:
            _flock(lock_fd, _LOCK_UN)

    def records_of(self, chunk: bytes) -> list:
        """The changes in ``chunk`` (from :meth:`append_after` or
        :meth:`peek`), counted into the store's records."""
        changes, n = changes_of(chunk, self._journal)
        self.store.journal_records += n
        return changes

    def write(self, batch: bytes | bytearray, count: int) -> bool:
        """Append ``batch`` (``count`` records and their commit line) without
        fsync, between :meth:`begin` and :meth:`end`. False, with nothing
        written, when the ordinary path must do it."""
        store = self.store
        fd = self._fd
        pos = store.journal_pos
        try:
            if store.fault is _no_fault:
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

    def end(self) -> None:
        """Give the lock back."""
        _flock(self._lock_fd, _LOCK_UN)

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
