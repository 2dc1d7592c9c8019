"""Store: open, load, append, refresh and compact one POD directory.

The store knows files and records, not Python values' meaning. The caller
(the POD) holds :meth:`Store.locked` around every sequence of calls that must
see one consistent state of the directory.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Any, Callable, Final, Iterator

from tastypy import _faults
from tastypy.codec import LINE_OPTIONS, _has_nonfinite, dumps
from tastypy.errors import CorruptFileError, KindMismatchError, StorageError, TastypyError
from tastypy.storage import journal, layout
from tastypy.storage.journal import DELETED
from tastypy.storage.locks import DirectoryLock

__all__ = ["DELETED", "Store"]

#: A journal is folded into a new snapshot only once it holds more stale
#: records than this, so small PODs are not rewritten over and over.
_COMPACT_MIN_STALE: Final = 10_000


#: The types a loaded key may have (tuples come from JSON arrays, checked
#: part by part when they are read).
_KEY_TYPES: Final = frozenset({str, int, tuple})

#: How many times a load starts over when a compaction elsewhere removed a
#: file it was about to read.
_LOAD_ATTEMPTS: Final = 5


def _first_line() -> int:
    return 1


class _Vanished(Exception):
    """A file named by the manifest is not there."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


def _os_error(action: str, path: str, exc: OSError) -> StorageError:
    why = exc.strerror or str(exc)
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = " Free some space; the next sync retries and nothing synced is lost."
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = " Check the permissions of the POD directory."
    elif exc.errno == errno.ELOOP:
        hint = (
            " It is a symbolic link, and tastypy does not write through links in a POD "
            "directory; replace the link with the file it points to."
        )
    elif exc.errno == errno.EISDIR:
        hint = " A directory stands where tastypy keeps a file; move it out of the POD."
    err = StorageError(f"cannot {action} {path}: {why}.{hint}")
    err.errno = exc.errno
    return err


class Store:
    """Files of one POD directory."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        kind: str = "pod",
        gzipped: bool = False,
        lock: str = "auto",
        lock_timeout: float = 600.0,
    ):
        self.path = os.path.abspath(os.fspath(path))
        self.kind = kind
        self.gzipped = gzipped
        self.fault: Callable[[str], None] = _faults.HOOK
        layout.check_directory(self.path)
        if os.path.isdir(self.path) and not os.path.lexists(
            os.path.join(self.path, layout.MANIFEST)
        ):
            # Refuse a directory that is not a POD before a lock file is
            # dropped into it: opening must not change what it refuses.
            layout.classify_foreign(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise _os_error("create the directory", self.path, exc) from exc
        if not os.access(self.path, os.W_OK):
            raise StorageError(
                f"the POD directory {self.path} is not writable by you. tastypy writes to it on "
                "every sync; fix its permissions or copy it somewhere writable."
            )
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
                self._ensure_manifest()
        except BaseException:
            self._lock.close()
            raise

    # -- locking ---------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock.held():
            yield

    @property
    def lock_path(self) -> str:
        return self._lock.path

    def close(self) -> None:
        """Give back the lock file's descriptor (reopened if used again)."""
        self._lock.close()

    # -- manifest --------------------------------------------------------

    def _ensure_manifest(self) -> dict:
        manifest = layout.read_manifest(self.path)
        if manifest is None:
            layout.classify_foreign(self.path)
            # Read again: a process using another lock flavour may have
            # created the POD since (classify_foreign saw its manifest).
            manifest = layout.read_manifest(self.path)
        if manifest is None:
            manifest = layout.new_manifest(self.kind, 0, self.gzipped, 0)
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
        journal_path = os.path.join(self.path, manifest["journal"])
        if os.path.exists(journal_path) and not os.access(journal_path, os.W_OK):
            # Refused now rather than at the first sync, or at exit.
            raise StorageError(
                f"{journal_path} is not writable by you. tastypy appends to it on every "
                "sync; fix its permissions or copy the POD somewhere writable."
            )
        return manifest

    def _manifest(self) -> dict:
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
            with open(path, "rb") as f:
                return f.read(offset).count(b"\n") + 1

        return text, consumed, first_line

    def load(self) -> dict:
        """Read the whole POD into a new dict (under the lock).

        A listed file that is gone means a compaction finished between our
        reading the manifest and the file (possible only where the lock does
        not exclude everyone, e.g. a stale soft lock broken on a slow
        filesystem): read the new manifest and start over. Gone while the
        manifest still lists it, the file was lost: that is an error.
        """
        for _ in range(_LOAD_ATTEMPTS):
            manifest = self._manifest()
            try:
                return self._load(manifest)
            except _Vanished as gone:
                if self._manifest() == manifest:
                    raise CorruptFileError(
                        f"{gone.path} is listed in {os.path.join(self.path, layout.MANIFEST)} "
                        f"but missing. Run `tastypy repair {self.path}` to salvage what is "
                        "left.",
                        gone.path,
                    ) from None
        raise StorageError(
            f"{self.path} changed generation {_LOAD_ATTEMPTS} times while being read: another "
            "process compacts it without holding its lock. Check that every process opens it "
            "with the same lock= mode."
        )

    def _load(self, manifest: dict) -> dict:
        data: dict = {}
        snapshot_records = 0
        texts = []
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
        name = manifest["journal"]
        try:
            text, consumed, first_line = self._read_text(name, 0)
        except _Vanished:
            if self._manifest() != manifest:
                raise  # a compaction meanwhile: start over
            # A generation's journal is created by its first sync.
            text, consumed, first_line = b"", 0, lambda: 1
        journal_records = journal.load_into(text, data, os.path.join(self.path, name), first_line)
        if not _KEY_TYPES.issuperset(map(type, data)):
            # The fast load takes any hashable JSON key (a float, null,
            # true); the record by record parse names the line with one.
            texts.append((text, os.path.join(self.path, name), first_line))
            for args in texts:
                journal.parse(*args)
        self.generation = manifest["generation"]
        self.journal_path = os.path.join(self.path, manifest["journal"])
        self.journal_pos = consumed
        self.journal_records = journal_records
        self.snapshot_records = snapshot_records
        self.mixed = True
        return data

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
        if manifest["generation"] != self.generation:
            return None
        try:
            # Open, not stat: on NFS an open revalidates the cached size
            # (close-to-open consistency); a stat may answer from the cache.
            fd = os.open(self.journal_path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
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
            return self._read_text(manifest["journal"], self.journal_pos)
        except _Vanished:
            return None

    # -- writing ---------------------------------------------------------

    def append(self, body: bytes | bytearray, count: int, durable: bool = True) -> None:
        """Append one batch of ``count`` record lines (under the lock).

        ``durable=False`` skips the fsync: the batch survives the death of the
        process (it is in the page cache) but not a power loss.
        """
        if not count:
            return
        batch = journal.frame(body, count, self.gzipped)
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

    def stale_records(self, live: int) -> int:
        return self.snapshot_records + self.journal_records - live

    def maybe_compact(self, live: int, data: Callable[[], dict | None] | None = None) -> bool:
        """Compact if stale records outnumber the ``live`` ones. ``data()``:
        the owner's dict, if it holds exactly what the files hold, else None;
        asked only if this store did not read others' records since the
        owner loaded (see :attr:`mixed`). It saves loading the files again."""
        stale = self.stale_records(live)
        if stale > _COMPACT_MIN_STALE and stale > live:
            self.compact(None if self.mixed or data is None else data())
            return True
        return False

    def _generation_on_disk(self) -> int | None:
        try:
            manifest = layout.read_manifest(self.path)
        except (OSError, TastypyError):
            return None
        return None if manifest is None else manifest.get("generation")

    def compact(self, data: dict | None = None) -> None:
        """Fold the journal into a new snapshot generation (under the lock).

        ``data``: what the files hold, if the caller has it (else they are
        loaded); a value JSON cannot hold makes it load them after all."""
        body = None
        if data is not None:
            # One growing buffer: orjson hands back over-allocated bytes, so
            # keeping a million of them alive would cost gigabytes.
            body = bytearray()
            try:
                for item in data.items():
                    body += dumps(item, option=LINE_OPTIONS)
            except (TypeError, ValueError, RuntimeError):
                body = None
            else:
                if b"null" in body and any(map(_has_nonfinite, data.values())):
                    body = None  # NaN would be written as null: not what is on disk
        if body is None:
            data = self.load()
            body = bytearray()
            for item in data.items():
                body += dumps(item, option=LINE_OPTIONS)
        generation = self.generation + 1
        count = len(data)
        snap = layout.snapshot_name(generation, self.gzipped)
        snap_path = os.path.join(self.path, snap)
        manifest = layout.new_manifest(self.kind, generation, self.gzipped, count)
        # Only our own file names: a user's backup (journal-000000.jsonl~)
        # or any other file in the directory is never deleted.
        old = [n for n in os.listdir(self.path) if layout.is_own_file(n)]
        sealed: int | None = None
        try:
            self.fault("compact-before-snapshot")
            if count:
                layout.write_atomic(
                    snap_path, journal.frame(body, count, self.gzipped), self.fault, "snapshot"
                )
            else:
                manifest["snapshot"] = None
            stray = os.path.join(self.path, manifest["journal"])
            if os.path.lexists(stray):
                # Left by something else than us; it must not become live.
                os.unlink(stray)
            self.fault("compact-before-seal")
            sealed = journal.seal(self.journal_path, self.gzipped)
            self.fault("compact-before-manifest")
            layout.write_manifest(self.path, manifest, self.fault)
            self.fault("compact-after-manifest")
        except OSError as exc:
            if sealed is not None and self._generation_on_disk() == self.generation:
                journal.unseal(self.journal_path, sealed)  # it stays the live journal
            raise _os_error("compact into", snap_path, exc) from exc
        deleted = 0
        for name in old:
            if name != snap:
                try:
                    os.unlink(os.path.join(self.path, name))
                except OSError:
                    continue
                deleted += 1
                if deleted == 1:
                    self.fault("compact-mid-delete")
        self.fault("compact-after-delete")
        self.generation = generation
        self.journal_path = os.path.join(self.path, manifest["journal"])
        self.journal_pos = 0
        self.journal_records = 0
        self.snapshot_records = count
