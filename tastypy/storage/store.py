"""Store: open, load, append, refresh and compact one POD directory.

The store knows files and records, not Python values' meaning. The caller
(the POD) holds :meth:`Store.locked` around every sequence of calls that must
see one consistent state of the directory.
"""

from __future__ import annotations

import logging
import os
import random
import time
from contextlib import contextmanager
from typing import Any, Callable, Final, Iterator, Protocol

from tastypy import _faults
from tastypy.errors import (
    CorruptFileError,
    InvalidArgumentError,
    KindMismatchError,
    StorageError,
    TastypyError,
)
from tastypy.storage import files, flusher, fsdetect, journal, layout
from tastypy.storage.compaction import Compaction
from tastypy.storage.journal import DELETED
from tastypy.storage.layout import os_error as _os_error
from tastypy.storage.locks import DirectoryLock
from tastypy.storage.shared import CommitRaced, SharedLog
from tastypy.storage.shared import first_line as _first_line
from tastypy.storage.tail import TailAppender

__all__ = [
    "DELETED",
    "RACE_RETRIES",
    "STORAGE_MODES",
    "CommitRaced",
    "Store",
    "Writer",
    "race_pause",
]

log = logging.getLogger("tastypy")

#: The values of ``storage=``: which store a new POD gets. ``local`` is one
#: journal file appended under the lock; ``shared`` is one new file per
#: commit (:mod:`tastypy.storage.commits`), for filesystems whose clients
#: may cache sizes and contents; ``auto`` takes ``local`` on a filesystem
#: known to be local and ``shared`` everywhere else.
STORAGE_MODES: Final = ("auto", "local", "shared")

#: The environment variable that sets the default of ``storage=``.
STORAGE_ENV: Final = "TASTYPY_STORAGE"

#: How long a shared store waits for a client's cached copy of the manifest
#: to expire when it names files a compaction elsewhere already deleted.
_STALE_MANIFEST_WAIT: Final = 5.0


#: The types a loaded key may have (tuples come from JSON arrays, checked
#: part by part when they are read).
_KEY_TYPES: Final = frozenset({str, int, tuple})


#: How many times a load starts over when a compaction elsewhere removed a
#: file it was about to read.
_LOAD_ATTEMPTS: Final = 5


#: How many times a sync or a tracker's transaction takes in a commit another
#: process made first and tries again. Under a lock that excludes everyone it
#: never happens; under one that does not (flock across two hosts' mounts),
#: the writers race for every number, and the pauses between tries, growing
#: and random, break their lockstep.
RACE_RETRIES: Final = 60

#: A tracker's periodic durable points (``later``, every ``sync_at`` of its
#: transactions) run on the files kept open on a local filesystem, the
#: journal fsynced in the background; one in ``_CONFIRM_EVERY`` opens the
#: files afresh instead (see :meth:`Store.transaction`). Opening them
#: (reading the manifest twice, the journal by name) took 0.3 ms inside a
#: run of transactions, as long as the thousand transactions before it.
_CONFIRM_EVERY: Final = 8


def race_pause(attempt: int) -> None:
    """After losing the race for a commit number for the ``attempt``-th time."""
    time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 50)))


class Writer(Protocol):
    """What :meth:`Store.transaction` asks of its caller (a POD, a tracker).

    The transaction calls, with the lock held: :meth:`take_in` with what
    others appended since this handle last looked, then :meth:`decide`,
    whose batch it appends, then :meth:`written`; or :meth:`undo` if the
    append failed (or another process committed first, on the shared store:
    then the whole transaction runs again)."""

    def take_in(self, new: tuple[bytes, int, Callable[[], int]] | None) -> None:
        """Take in others' committed batches ``(text, bytes or commits they
        take, first line number)``, telling the store with :meth:`Store.took`;
        None: the files were replaced (a compaction), load afresh."""

    def decide(self) -> tuple:
        """Decide, and return what to append: a tuple whose first two items
        are the body and the number of record lines in it."""

    def undo(self) -> None:
        """The batch of :meth:`decide` was not written: take the decision back."""

    def written(self) -> None:
        """The batch of :meth:`decide` was written."""

    def live_count(self) -> int:
        """How many keys the caller holds (a compaction's arithmetic)."""

    def as_on_disk(self) -> dict | None:
        """The caller's data if it is exactly what the files hold, else None."""


def _storage_mode(storage: str | None) -> str:
    if storage is None:
        storage = os.environ.get(STORAGE_ENV) or "auto"
        where = f"the environment variable {STORAGE_ENV}"
    else:
        where = "storage="
    if storage not in STORAGE_MODES:
        raise InvalidArgumentError(
            f"{where} must be one of {', '.join(map(repr, STORAGE_MODES))}, got {storage!r}."
        )
    return storage


#: How long a directory another client of a network filesystem just made
#: may look unwritable here (a GlusterFS client answered "no access" for
#: one, then "access" a moment later).
_ACCESS_SETTLE: Final = 2.0


def _writable(directory: str) -> bool:
    if os.access(directory, os.W_OK):
        return True
    if fsdetect.is_known_local(directory):
        return False
    deadline = time.monotonic() + _ACCESS_SETTLE
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if os.access(directory, os.W_OK):
            return True
    return False


class _Vanished(Exception):
    """A file named by the manifest is not there."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


class Store(SharedLog, Compaction):
    """Files of one POD directory."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        kind: str = "pod",
        gzipped: bool = False,
        lock: str = "auto",
        lock_timeout: float = 600.0,
        storage: str | None = None,
        convert: bool = False,
    ):
        self.path = os.path.abspath(os.fspath(path))
        self.kind = kind
        self.gzipped = gzipped
        self.storage = _storage_mode(storage)
        #: Whether this POD uses the shared store (one file per commit); set
        #: from the manifest.
        self.shared = False
        #: The shared store: commits below this number exist (a link to one
        #: failed), whether or not this client shows them yet.
        self._exists_below = 0
        self.fault: Callable[[str], None] = _faults.HOOK
        #: The ``OSError`` of a background fsync that failed (see ``later``
        #: in :meth:`transaction`), raised at the next transaction.
        self.flush_error: OSError | None = None
        #: How many :meth:`holding` blocks are open (nested ones count).
        self._holds = 0
        #: A tracker's periodic durable points so far (see _CONFIRM_EVERY).
        self._later_points = 0
        self._make_directory()
        # Writing by name to a directory moved away (and perhaps replaced)
        # since would write to another POD: _manifest checks this first.
        # Only where inode numbers are the filesystem's own: a GlusterFS
        # client showed another for a directory two clients made at once,
        # and a worker refused a directory that was never moved (there,
        # a directory gone is still refused, below).
        self._identity = layout.identity(self.path)
        self._check_identity = fsdetect.is_known_local(self.path)
        self._lock = DirectoryLock(os.path.join(self.path, layout.LOCK_FILE), lock, lock_timeout)
        self.generation = -1
        self.journal_path = ""
        self.journal_pos = 0
        self.journal_records = 0
        self.snapshot_records = 0
        # False while everything in the journal after what the owner loaded
        # was written by this store: then the owner's dict is what the files
        # hold, in their order, and a compaction may write it out instead of
        # loading the files again (maybe_compact). Set by every load and
        # every read of others' records; the owner clears it.
        self.mixed = True
        try:
            with self.locked():
                # Opened to convert it (tastypy compact --storage), a journal
                # on a caching mount is read (no job runs), not refused.
                self._ensure_manifest(refuse_caching_mount=not convert)
        except BaseException:
            self._lock.close()
            raise
        #: The journal and lock file kept open on a local filesystem (see
        #: :mod:`tastypy.storage.tail`): how transactions skip reopening them.
        self.tail = TailAppender(self)

    def _make_directory(self) -> None:
        """Check the POD's directory, or make it: a directory that is not a
        POD is refused before a lock file is dropped into it (opening must
        not change what it refuses), and so is one we cannot write to."""
        layout.check_directory(self.path)
        if os.path.isdir(self.path) and not os.path.lexists(
            os.path.join(self.path, layout.MANIFEST)
        ):
            layout.classify_foreign(self.path)
        try:
            layout.make_dirs(self.path)
        except OSError as exc:
            raise _os_error("create the directory", self.path, exc) from exc
        if not _writable(self.path):
            raise layout.not_writable(self.path, "directory")

    # -- locking ---------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock.held():
            yield

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Hold the directory lock across several transactions (``with
        pod.locked():``): every :meth:`transaction` inside runs under this
        hold, not the kept-open journal's own lock, whose ``flock`` is taken
        on another descriptor of the lock file and would wait for this one
        for ever. Re-entrant; the other threads of the process wait."""
        with self.locked():
            self._holds += 1
            try:
                yield
            finally:
                self._holds -= 1

    @property
    def held(self) -> bool:
        """Whether a :meth:`holding` block of this process is open."""
        return self._holds > 0

    @property
    def lock_path(self) -> str:
        return self._lock.path

    def forked(self) -> bool:
        """In a forked child: holds of the parent's other threads are not
        the child's (the kept-open descriptors are reopened on first use,
        see tastypy.storage.tail). True if the fork was made inside a hold
        of this store (then the child does not hold the lock: see
        DirectoryLock.forked)."""
        inside = self._lock.forked()
        if not self._lock._thread_lock._is_owned():
            self._holds = 0
        return inside

    def close(self) -> None:
        """Give back the descriptors of the lock file and the journal
        (reopened if used again)."""
        self._lock.close()
        tail = getattr(self, "tail", None)
        if tail is not None:
            tail.close()

    # -- manifest --------------------------------------------------------

    def _ensure_manifest(self, refuse_caching_mount: bool = True) -> dict:
        manifest = layout.read_manifest(self.path)
        if manifest is None:
            layout.classify_foreign(self.path)
            # Read again: a process using another lock flavour may have
            # created the POD since (classify_foreign saw its manifest).
            manifest = layout.read_manifest(self.path)
        if manifest is None:
            shared = self.storage == "shared" or (
                self.storage == "auto" and not fsdetect.is_known_local(self.path)
            )
            manifest = layout.new_manifest(self.kind, 0, self.gzipped, 0, shared)
            try:
                layout.write_manifest(self.path, manifest, self.fault)
            except OSError as exc:
                raise _os_error("write the manifest in", self.path, exc) from exc
        if manifest["kind"] != self.kind:
            raise KindMismatchError(
                f"{self.path} holds a {manifest['kind']!r}, not a {self.kind!r}. Open it with "
                + ("tastypy.Tracker" if manifest["kind"] == "tracker" else "tastypy.POD")
                + ", or convert it by copying its items into a new one."
            )
        self.gzipped = bool(manifest.get("gzipped", False))
        self.shared = layout.is_shared(manifest)
        if self.storage != "auto" and self.shared != (self.storage == "shared"):
            raise InvalidArgumentError(
                f"{self.path} uses the {'shared' if self.shared else 'local'} store, chosen when "
                f"it was created, but storage={self.storage!r} was asked for. Open it with "
                "storage='auto', or copy its items into a new POD made with the store you want."
            )
        journal_path = os.path.join(self.path, manifest["journal"])
        if self.shared:
            return manifest
        if refuse_caching_mount:
            self._refuse_journal_on_caching_mount()
        if os.path.exists(journal_path) and not os.access(journal_path, os.W_OK):
            # Refused now rather than at the first sync, or at exit.
            raise layout.not_writable(journal_path, "journal")
        return manifest

    def _manifest(self) -> dict:
        if self._check_identity:
            layout.check_identity(self.path, self._identity)
        manifest = layout.read_manifest(self.path)
        if manifest is None and not os.path.isdir(self.path):
            raise StorageError(
                f"the POD directory {self.path} has disappeared (deleted or moved while open). "
                "Nothing was written; the data in memory is intact: save it elsewhere, e.g. "
                "with pod.to_dict()."
            )
        if manifest is None:
            raise CorruptFileError(
                f"{os.path.join(self.path, layout.MANIFEST)} has disappeared. Run "
                f"`tastypy repair {self.path}` to rebuild it from the data files.",
                os.path.join(self.path, layout.MANIFEST),
            )
        return manifest

    # -- reading ---------------------------------------------------------

    def _read_text(self, name: str, offset: int) -> tuple[bytes, int, Callable[[], int]]:
        path = os.path.join(self.path, name)
        try:
            text, consumed, _ = journal.read_from(path, offset, self.gzipped)
        except FileNotFoundError:
            raise _Vanished(path) from None
        except OSError as exc:
            raise _os_error("read", path, exc) from exc

        def first_line() -> int:
            if not offset or self.gzipped:
                return 1
            return files.read_regular(path, 0, offset).count(b"\n") + 1

        return text, consumed, first_line

    def load(self) -> dict:
        """Read the whole POD into a new dict (under the lock).

        A listed file that is gone means a compaction finished between our
        reading the manifest and the file (possible only where the lock does
        not exclude everyone, e.g. a stale soft lock broken on a slow
        filesystem): read the new manifest and start over. Gone while the
        manifest still lists it, the file was lost: that is an error.
        """
        attempts = 0
        deadline = time.monotonic() + _STALE_MANIFEST_WAIT
        while attempts < _LOAD_ATTEMPTS:
            manifest = self._manifest()
            try:
                return self._load(manifest)
            except _Vanished as gone:
                if self._manifest() != manifest:
                    attempts += 1
                    continue
                if layout.is_shared(manifest) and time.monotonic() < deadline:
                    # This client's copy of the manifest may be an old one
                    # (attribute and content caches), naming files that a
                    # compaction elsewhere has deleted since: wait for it
                    # to expire.
                    time.sleep(0.1)
                    continue
                raise CorruptFileError(
                    f"{gone.path} is listed in {os.path.join(self.path, layout.MANIFEST)} "
                    f"but missing. Run `tastypy repair {self.path}` to salvage what is left.",
                    gone.path,
                ) from None
        raise StorageError(
            f"{self.path} changed generation {_LOAD_ATTEMPTS} times while being read: another "
            "process compacts it without holding its lock. Check that every process opens it "
            "with the same lock= mode."
        )

    def _load(self, manifest: dict) -> dict:
        if layout.is_shared(manifest):
            return self._load_commits(manifest)
        data: dict = {}
        texts: list = []
        snapshot_records = self._load_snapshot(manifest, data, texts)
        name = manifest["journal"]
        try:
            text, consumed, first_line = self._read_text(name, 0)
        except _Vanished:
            if self._manifest() != manifest:
                raise  # a compaction meanwhile: start over
            # A generation's journal is created by its first sync.
            text, consumed, first_line = b"", 0, lambda: 1
        journal_records = journal.load_into(text, data, os.path.join(self.path, name), first_line)
        texts.append((text, os.path.join(self.path, name), first_line))
        self._check_keys(data, texts)
        self._loaded_state(manifest, consumed, journal_records, snapshot_records)
        return data

    @staticmethod
    def _check_keys(data: dict, texts: list) -> None:
        if not _KEY_TYPES.issuperset(map(type, data)):
            # The fast load takes any hashable JSON key (a float, null,
            # true); the record by record parse names the line with one.
            for args in texts:
                journal.parse(*args)

    def _loaded_state(
        self, manifest: dict, position: int, journal_records: int, snapshot_records: int
    ) -> None:
        # A compaction may have converted the POD to the shared store.
        self.shared = layout.is_shared(manifest)
        self._exists_below = 0
        self.generation = manifest["generation"]
        self.journal_path = os.path.join(self.path, manifest["journal"])
        self.journal_pos = position
        self.journal_records = journal_records
        self.snapshot_records = snapshot_records
        self.mixed = True

    def _load_snapshot(self, manifest: dict, data: dict, texts: list) -> int:
        snapshot_records = 0
        if manifest.get("snapshot"):
            name = manifest["snapshot"]
            text, _, first_line = self._read_text(name, 0)
            texts.append((text, os.path.join(self.path, name), first_line))
            snapshot_records = journal.load_into(
                text, data, os.path.join(self.path, name), first_line
            )
            expected = manifest.get("snapshot_records")
            if isinstance(expected, int) and snapshot_records != expected:
                # A snapshot is written whole and renamed into place; one cut
                # short must not load as a smaller POD, which the next
                # compaction would then make permanent.
                raise CorruptFileError(
                    f"{os.path.join(self.path, name)} holds {snapshot_records} complete "
                    f"records, but the manifest says {expected}: the file was truncated or "
                    f"damaged. Run `tastypy repair {self.path}` to salvage every readable "
                    "record (the damaged file is kept aside).",
                    os.path.join(self.path, name),
                )
        return snapshot_records

    def read_new(self) -> list[tuple[Any, Any]] | None:
        """Changes others synced since we last looked, or None if a compaction
        happened since and the caller must :meth:`load` afresh."""
        new = self.read_new_text()
        if new is None:
            return None
        text, consumed, first_line = new
        if not text:
            return []
        records = journal.parse(text, self.journal_path, first_line)
        self.took(consumed, len(records))
        return journal.as_changes(records)

    def took(self, consumed: int, records: int) -> None:
        """The caller took in what :meth:`read_new_text` gave: ``consumed``
        bytes of the journal, holding ``records`` records."""
        self.journal_pos += consumed
        self.journal_records += records
        if records:
            self.mixed = True

    def read_new_text(self) -> tuple[bytes, int, Callable[[], int]] | None:
        """:meth:`read_new` without parsing: ``(text, bytes it takes in the
        journal, its first line number)``, ``text`` empty if nothing is new;
        None after a compaction. Nothing is counted as read until the caller
        calls :meth:`took` (a damaged line it raises about is read again)."""
        manifest = self._manifest()
        if self.shared:
            return self._read_new_commits(manifest)
        if manifest["generation"] != self.generation:
            return None
        try:
            # Open, not stat: on NFS an open revalidates the cached size
            # (close-to-open consistency); a stat may answer from the cache.
            fd = files.open_regular(self.journal_path)
            try:
                size = os.fstat(fd).st_size
                if size == self.journal_pos - 1 and not self.gzipped and size:
                    # Read with the newline its last batch lacks (journal.read_from).
                    size += os.pread(fd, 1, size - 1) == b"}"
            finally:
                os.close(fd)
        except FileNotFoundError:
            size = 0
        except OSError as exc:
            raise _os_error("read", self.journal_path, exc) from exc
        if size == self.journal_pos:
            return b"", 0, _first_line
        if size < self.journal_pos:
            # Shorter than what we read already: the journal was replaced or
            # cut behind our back. Never append at our old offset (that would
            # leave a hole of zero bytes): read everything again.
            return None
        try:
            new = self._read_text(manifest["journal"], self.journal_pos)
        except _Vanished:
            return None
        # Checked here, as a load checks: a caller may keep the text unparsed.
        journal.refuse_unwritable(new[0], self.journal_path, new[2])
        return new

    # -- the one write path ------------------------------------------------

    def transaction(
        self, writer: Writer, durable: bool = True, compact: bool = False, later: bool = False
    ) -> None:
        """Every change that reaches the files goes through here: take the
        lock, take in what others appended since this handle last looked,
        decide, append, release (see :class:`Writer`). ``durable=False``
        skips the fsync: the batch survives the death of the process, not a
        power loss. ``later=True`` (a tracker's periodic durable point):
        the journal is fsynced by a thread after the lock is released (see
        :mod:`tastypy.storage.flusher`; the shared store fsyncs its commit
        at once); a background fsync that failed is raised here, at the
        next transaction.

        On a local filesystem the lock file and the journal stay open
        between transactions that need no fsync
        (:meth:`TailAppender.transaction`), and for a tracker's periodic
        durable points but one in ``_CONFIRM_EVERY``. That one, and every
        other durable one (every POD sync, a tracker's ``sync()``), takes
        the lock and opens the files afresh, reading the manifest: it
        confirms that the journal kept open is still the live one, and
        repairs what needs repairing. So does every transaction where the
        files cannot stay open (the soft lock, the shared store, a
        compaction since, a torn tail). On the
        shared store, another process may commit first: the decision is
        taken back, and the transaction runs again on what it committed.

        Afterwards, still under the lock, the journal is folded into a new
        snapshot if it is mostly stale, or with ``compact=True`` always.

        Inside :meth:`holding`, it runs under that hold: nobody else can
        commit, so nothing is taken in early and no race is retried (on the
        shared store, a commit raced there means the lock does not exclude
        the other writer, and :class:`CommitRaced` is raised)."""
        if self.flush_error is not None:
            self._raise_flush_error()
        confirm = False
        later = later and durable and not self.shared
        if later:
            durable = False  # fsynced in the background, below
            self._later_points += 1
            confirm = not self._later_points % _CONFIRM_EVERY
        if not (durable or compact or confirm or self._holds or self.shared) and self.tail.usable:
            if not self.tail.transaction(writer):
                self._transaction_retried(writer, durable, compact)
        elif self._holds:
            with self.locked():
                self._transaction_locked(writer, durable, compact)
        else:
            self._transaction_retried(writer, durable, compact)
        if later:
            self._fsync_later()

    def _transaction_retried(self, writer: Writer, durable: bool, compact: bool) -> None:
        """The transaction under the store's lock, the files opened afresh;
        run again when another host committed first on the shared store."""
        for attempt in range(RACE_RETRIES):
            self._take_in_early(writer)
            try:
                with self.locked():
                    self._transaction_locked(writer, durable, compact)
                return
            except CommitRaced:
                if attempt == RACE_RETRIES - 1:
                    raise
                race_pause(attempt)

    def _fsync_later(self) -> None:
        """Hand the journal to the background fsync thread (a descriptor of
        its own: a copy of the one kept open, or the journal opened)."""
        fd = self.tail.copy_of_journal()
        if fd < 0:
            try:
                fd = os.open(self.journal_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return  # nothing written yet, or replaced: its successor was fsynced
        flusher.submit(fd, self)

    def _raise_flush_error(self) -> None:
        exc, self.flush_error = self.flush_error, None
        err = StorageError(
            f"the background fsync of {self.journal_path} failed: "
            f"{exc.strerror or exc}. What was written since the fsync before it is in this "
            "host's memory and other processes see it, but it may not survive a power "
            "loss. Check the disk; sync() fsyncs it again."
        )
        err.errno = exc.errno
        raise err

    def _take_in_early(self, writer: Writer) -> None:
        """Before taking the lock: take in what others committed since this
        handle last looked (committed batches and commit files never change,
        so this is safe without the lock), so the hold is only for what
        comes meanwhile. On a shared filesystem each commit is a file to
        open, and several hosts wait for the lock: holds kept short keep
        their leases from running out while they wait. Anything unusual (a
        compaction since, a file being replaced) is left to the locked read."""
        try:
            new = self.read_new_text()
        except (OSError, TastypyError):
            return
        if new is not None and new[0]:
            writer.take_in(new)

    def _transaction_locked(self, writer: Writer, durable: bool, compact: bool) -> None:
        new = self.read_new_text()
        if new is None or new[0]:
            writer.take_in(new)
        batch = writer.decide()
        count = batch[1]
        try:
            self.append(batch[0], count, durable)
        except BaseException:
            writer.undo()
            raise
        if durable and not count:
            # Nothing appended, so no fsync happened: make what the kept-open
            # journal took without fsync durable now.
            self.tail.fsync()
        writer.written()
        self.fold(writer, compact)

    def fold(self, writer: Writer, always: bool) -> None:
        """After a transaction's write, under the lock: compact if the journal
        is mostly stale, or ``always``."""
        if always:
            self.compact(writer.as_on_disk())
        else:
            self.maybe_compact(writer.live_count(), writer.as_on_disk)

    # -- writing ---------------------------------------------------------

    def append(self, body: bytes | bytearray, count: int, durable: bool = True) -> None:
        """Append one batch of ``count`` record lines (under the lock).

        ``durable=False`` skips the fsync: the batch survives the death of the
        process (it is in the page cache) but not a power loss.
        """
        if not count:
            return
        batch = journal.frame(body, count, self.gzipped)
        if self.shared:
            self._commit(batch, durable)
            self.journal_records += count
            return
        new_file = self.journal_pos == 0 and not os.path.exists(self.journal_path)
        try:
            self.journal_pos = journal.append(
                self.journal_path, self.journal_pos, batch, self.fault, durable
            )
            if new_file:
                layout.fsync_dir(self.path)
        except OSError as exc:
            raise _os_error("append to", self.journal_path, exc) from exc
        self.journal_records += count
