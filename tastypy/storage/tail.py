"""The local store's transaction with its files kept open.

Every write to a store is one transaction (:meth:`Store.transaction`): take
the lock, take in what others appended, decide, append, release. Done by
opening the files each time (take the lock, read the manifest, stat and
read the journal, open it again, append, close), it costs some 40 µs, most
of it system calls, which caps a tracker's try loop at ~25k tasks/s. On a
local filesystem under flock this keeps the lock file and the journal open:
a transaction costs five system calls (flock, lseek, fstat, pwrite, unlock)
when nobody else wrote since the store last looked, and one more (pread)
when somebody did. No fsync but every ``sync_at`` writes: a write in the
page cache survives the death of the process; only a power loss needs the
fsync.

The kept-open journal is used only while it is the one the store last
read, still linked, no shorter than the store's committed offset, and
whatever others appended since is whole committed batches. A compaction or
a repair seals the journal it replaces first (:func:`journal.seal` appends a
torn batch), so a replaced journal never looks unchanged. Anything else (a
compaction, a torn tail, the lock busy for long, a gzipped journal that
grew) hands the transaction back, with nothing taken in or decided, to the
store, which reads the manifest, repairs what needs repairing and waits for
the lock with a timeout.

It is used only on local filesystems with flock locking: on a network
filesystem a descriptor kept open may report a cached size, so there every
transaction opens the files afresh (and the shared store never appends at
all: see :mod:`tastypy.storage.commits`).
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Callable, Final

try:
    import fcntl
except ImportError:  # Windows: no flock, no fast path
    fcntl = None  # type: ignore[assignment]

import orjson

from tastypy import _exit, _faults
from tastypy.codec import holds_unwritable, key_from_json
from tastypy.errors import TastypyError
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
_monotonic = time.monotonic
_sched_yield = getattr(os, "sched_yield", lambda: time.sleep(0))

#: How often a transaction with the files kept open looks that the POD
#: directory was not moved or renamed since it was opened: at most this many
#: seconds of tries land in a moved directory before they are refused.
_IDENTITY_EVERY: Final = 0.05

#: How a transaction waits for a busy lock: for ``_SPIN`` seconds it hands
#: the processor on (``sched_yield``) between tries, then it sleeps between
#: tries, from ``_PAUSE_FIRST`` doubling up to ``_PAUSE_MAX`` seconds, for
#: at most ``_WAIT`` seconds in all (a durable sync or a compaction holds
#: the lock for milliseconds to seconds); then it leaves the wait to the
#: ordinary path, which waits with a timeout and says who holds the lock.
#: Several processes take turns at the lock thousands of times a second:
#: a waiter that sleeps wakes up (a context switch each way, the caches
#: cold after it, and a wakeup that may preempt the holder) long after its
#: turn; one that yields runs again as soon as a processor is free. With 8
#: processes on 2 cores (W5), yielding first measured 10-25 % more tasks/s
#: than sleeping from the first try (in a bare loop of the same system
#: calls: 78k/s against 49k/s). The sleeps stay short for the same reason.
_SPIN: Final = 0.02
_PAUSE_FIRST: Final = 0.000005
_PAUSE_MAX: Final = 0.0005
_WAIT: Final = 5.0

#: The commit lines of small batches, made once.
_COMMITS: Final = tuple(journal.commit_line(n) for n in range(64))


if fcntl is not None:
    _flock = fcntl.flock
    _LOCK_EX_NB: Final = fcntl.LOCK_EX | fcntl.LOCK_NB
    _LOCK_UN: Final = fcntl.LOCK_UN


def changes_of(
    text: bytes, path: str, first_line: Callable[[], int] | None = None
) -> tuple[list, int]:
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
        return _changes_of(text, path, first_line)
    gc.disable()
    try:
        return _changes_of(text, path, first_line)
    finally:
        gc.enable()


def _refuse_unwritable(text: bytes, path: str, first_line: Callable[[], int] | None) -> None:
    """Refuse a line another tool wrote that tastypy could not write back
    (see :func:`journal.refuse_unwritable`), naming it. The batches read
    from a journal kept open are not checked as they are read: they are
    checked when they are parsed, here, or when a line filed is taken in
    (see tastypy.tracker.backlog)."""
    if holds_unwritable(text):
        journal.refuse_unwritable(text, path, first_line or _line_one)


def _changes_of(text: bytes, path: str, first_line: Callable[[], int] | None) -> tuple[list, int]:
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
                _refuse_unwritable(text, path, first_line)
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
                _refuse_unwritable(text, path, first_line)
                return out, len(out)
    # Anything else: the journal's parser, which names a damaged line.
    out = journal.as_changes(journal.parse(text, path, first_line or _line_one))
    return out, len(out)


def _line_one() -> int:
    return 1


def _write_all(fd: int, data: bytes, pos: int) -> None:
    while data:
        written = _pwrite(fd, data, pos)
        data = data[written:]
        pos += written


def _truncate(fd: int, size: int) -> None:
    """Cut a failed write off again (a failure to do so leaves a torn batch,
    which readers ignore and the next locked transaction cuts)."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


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

    :meth:`transaction` runs a :meth:`Store.transaction` with the lock file
    and the journal kept open: :meth:`peek` without the lock, then the lock
    taken and what came meanwhile read, the caller's decision appended, and
    the lock given back. The caller makes sure no other thread of this
    process uses the same store meanwhile.
    """

    def __init__(self, store):
        self.store = store
        # The lock the store runs (``auto`` resolved): only a flock on
        # ``tastypy.lock`` excludes the store's writers as this one does.
        lock_mode = getattr(getattr(store, "_lock", None), "mode", None)
        self.usable = (
            fcntl is not None
            and lock_mode == "posix"
            and sys.platform != "win32"
            and is_known_local(store.path)
        )
        self._fork = -1  # the value of _forks when the descriptors were opened
        self._lock_fd = -1
        self._fd = -1
        self._journal = ""
        # Whether a write since the last fsync was not fsynced.
        self._unsynced = False
        # Whether others had written at the last transaction.
        self._others = True
        # When to look again that the directory was not moved (monotonic).
        self._identity_next = 0.0

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

    def _take_lock(self, writer) -> bool:
        """Wait for the lock held by another process (see ``_SPIN``),
        giving ``writer`` (if any) what others committed meanwhile before
        each new try."""
        lock_fd = self._lock_fd
        pause = _PAUSE_FIRST
        now = _monotonic()
        spin_until = now + _SPIN
        deadline = now + _WAIT
        while True:
            if now < spin_until:
                _sched_yield()
            else:
                time.sleep(pause)
                pause = min(pause * 2, _PAUSE_MAX)
            if writer is not None:
                self._take_in_early(writer)
            _exit.take_interrupt()  # a Ctrl-C put off by the sync
            try:
                _flock(lock_fd, _LOCK_EX_NB)
                return True
            except BlockingIOError:
                pass
            except OSError:
                return False
            now = _monotonic()
            if now > deadline:
                return False

    def _locked(self, writer) -> bool:
        """Open the files if needed and take the lock (see :meth:`_take_lock`);
        False, with the lock not held, when the store must run the transaction."""
        store = self.store
        if self._journal != store.journal_path or self._fork != _forks:
            if not self.enabled or not self._open():
                return False
        try:
            _flock(self._lock_fd, _LOCK_EX_NB)
        except BlockingIOError:
            return self._take_lock(writer)
        except OSError:
            return False
        return True

    @property
    def enabled(self) -> bool:
        """Whether the store is a journal this appender may keep open: not
        the shared store, which a POD may be converted to while open."""
        return self.usable and not self.store.shared

    def peek(self) -> bytes | None:
        """Read, without the lock, the whole batches others appended since the
        store last looked: their bytes (``b""`` if none; the caller takes
        them in and tells the store with ``store.took``), or None if the
        journal was replaced (a compaction: load afresh). Taking them in
        before taking the lock keeps the hold short: the transaction then
        reads only what came meanwhile. Safe without the lock because a
        committed batch is never changed or cut, and a batch being written
        has no commit line yet. The batches are not checked for lines
        another tool wrote that tastypy could not write back: whoever
        parses them refuses those (see :func:`_refuse_unwritable`)."""
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
            return self._read_raw(pos, size)
        except OSError:
            return b""

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
        the new journal so far (to be counted by the caller); or
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
            if holds_unwritable(rest):
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
            fd, more = self._switch_to(new_path)
            if holds_unwritable(more):
                return None  # another tool's line: the load (of the journal open now) names it
        except (OSError, TastypyError, KeyError, TypeError):
            return None
        store.generation = manifest["generation"]
        store.mixed = True
        store.journal_path = new_path
        store.journal_pos = len(more)
        store.journal_records = 0  # the caller counts ``more``
        store.snapshot_records = manifest["snapshot_records"]
        if fd < 0:
            self._journal = ""  # reopened once the journal exists
        return rest, more

    def _switch_to(self, new_path: str) -> tuple[int, bytes]:
        """Keep the new journal open instead of the old one, and read it:
        its descriptor (-1 if no journal was written since the compaction)
        and its whole batches."""
        try:
            fd = files.open_regular(new_path, os.O_RDWR)
        except FileNotFoundError:
            return -1, b""  # no sync since the compaction
        old_fd, old_journal = self._fd, self._journal
        self._fd, self._journal = fd, new_path
        try:
            more = self._read_raw(0, _fstat(fd).st_size)
        except BaseException:
            self._fd, self._journal = old_fd, old_journal
            os.close(fd)
            raise
        os.close(old_fd)
        return fd, more

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

    def line_at(self, pos: int) -> Callable[[], int]:
        """The line number at byte ``pos`` of the open journal, counted only
        when asked (an error message names the line)."""
        fd = self._fd

        def first_line() -> int:
            try:
                return _pread(fd, pos, 0).count(b"\n") + 1
            except OSError:
                return 1

        return first_line

    def transaction(self, writer) -> bool:
        """:meth:`Store.transaction` without fsync, with the files kept open:
        False when the store must run it instead (with nothing taken in, or
        with what was taken in counted and the decision taken back). The
        journal is not compacted here: the store's durable transactions,
        every ``sync_at``, do that. While the lock is busy, what others
        commit meanwhile is taken in, so the hold is only for what comes
        after."""
        store = self.store
        if self._others:
            # Others wrote at the last transaction: take in what they wrote
            # since before taking the lock, which is then held only for
            # what comes meanwhile.
            early = self.peek()
            if early is None:
                return False  # replaced: the store loads afresh
            if early:
                writer.take_in((early, len(early), self.line_at(store.journal_pos)))
        lock_fd = self._lock_fd
        if self._journal is store.journal_path and self._fork == _forks:
            try:
                _flock(lock_fd, _LOCK_EX_NB)
            except BlockingIOError:
                if not self._take_lock(writer):
                    return False
            except OSError:
                return False
        elif self._locked(writer):
            lock_fd = self._lock_fd
        else:
            return False
        try:
            now = _monotonic()
            if now > self._identity_next and not self._same_directory(now):
                return False  # the store's transaction names what happened
            fd = self._fd
            pos = store.journal_pos
            size = _lseek(fd, 0, _SEEK_END)
            if size == pos:
                # Unchanged, so not replaced either: a compaction or a
                # repair seals the journal it replaces (journal.seal).
                self._others = False
            else:
                new = self._new_since(pos, size)
                if new is None:
                    return False
                self._others = True
                writer.take_in((new, len(new), self.line_at(pos)))
            batch = writer.decide()
            count = batch[1]
            if count and not self._append(batch[0], count):
                # Cut off again before anyone read it; the store tries once
                # more and says what is wrong.
                writer.undo()
                return False
            writer.written()
        finally:
            _flock(lock_fd, _LOCK_UN)
        return True

    def _append(self, body: bytes | bytearray, count: int) -> bool:
        """Append ``count`` records in ``body`` and their commit line, under the
        lock; False, with nothing left written, if the write failed."""
        store = self.store
        fd = self._fd
        if store.gzipped:
            batch = journal.frame(body, count, True)
        else:
            batch = body + (_COMMITS[count] if count < 64 else journal.commit_line(count))
        pos = store.journal_pos
        try:
            if store.fault is _no_fault:
                written = _pwrite(fd, batch, pos)
                if written != len(batch):
                    _write_all(fd, batch[written:], pos + written)
            else:
                _write_hooked(fd, batch, pos, store.fault)
        except OSError:
            _truncate(fd, pos)
            return False
        self._unsynced = True
        store.journal_pos = pos + len(batch)
        store.journal_records += count
        return True

    def _same_directory(self, now: float) -> bool:
        """Whether the POD directory is still the one the store opened (not
        moved or renamed, with perhaps another made in its place): the
        descriptors kept open would go on writing to the moved one. Looked
        at once every ``_IDENTITY_EVERY`` seconds (a stat costs as much as
        the rest of a transaction)."""
        self._identity_next = now + _IDENTITY_EVERY
        try:
            layout.check_identity(self.store.path, self.store._identity)
        except TastypyError:
            return False
        return True

    def _new_since(self, pos: int, size: int) -> bytes | None:
        """Under the lock, the journal grown from ``pos`` to ``size``: the
        whole batches others committed since, or None when the store must
        take over (the journal was cut, it is gzipped, or it ends torn: a
        compaction or repair seals the journal it replaces, so one replaced
        since ends torn)."""
        if size < pos or self.store.gzipped:
            return None
        try:
            chunk = self._read_raw(pos, size)
        except OSError:
            return None
        if pos + len(chunk) != size:
            return None  # a torn batch: the store cuts it, under its lock
        return chunk

    def _take_in_early(self, writer) -> None:
        """While waiting for the lock: take in what others committed meanwhile."""
        early = self.peek()
        if early:
            writer.take_in((early, len(early), self.line_at(self.store.journal_pos)))

    def copy_of_journal(self) -> int:
        """A new descriptor of the journal kept open, if it is the store's
        current one (-1 if not): for the background fsync, which closes it."""
        if self._fd < 0 or self._fork != _forks or self._journal != self.store.journal_path:
            return -1
        try:
            return os.dup(self._fd)
        except OSError:
            return -1

    def fsync(self) -> None:
        """Make what this appended without fsync durable (if its journal is
        still current: a compaction since has fsynced its own copy)."""
        if (
            self._unsynced
            and self._fd >= 0
            and self._fork == _forks
            and self._journal == self.store.journal_path
        ):
            os.fsync(self._fd)
        self._unsynced = False

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
