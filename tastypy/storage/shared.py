"""The shared store: one new file per commit, for filesystems whose clients
cache sizes and contents (NFS, GlusterFS, FUSE).

A commit is written whole under a temporary name and linked to the next
number of ``commits-GGGGGG/`` (:mod:`tastypy.storage.commits`): a lost race
for a number means another process committed it first (:class:`CommitRaced`).
Nothing is ever written at an offset, and no file's size is trusted. The
store's methods that differ from the local journal's live here, mixed into
:class:`~tastypy.storage.store.Store`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Final

from tastypy.errors import StorageError
from tastypy.storage import commits, fsdetect, journal, layout
from tastypy.storage.layout import os_error as _os_error

log = logging.getLogger("tastypy")

#: How long a shared store waits for a commit that the server says exists
#: to show through this client's cache of missing names.
_HIDDEN_COMMIT_WAIT: Final = 120.0


def first_line() -> int:
    """The line number a commit file's text starts at."""
    return 1


_first_line = first_line


class CommitRaced(StorageError):
    """Another process created the commit this one was about to create.

    Under a lock that excludes every process this cannot happen; it means
    the lock does not reach across the clients sharing the POD. Nothing was
    written; the caller reads what the other process committed and decides
    again.
    """


class SharedLog:
    """The shared store's loading, reading, committing and compacting, and
    the refusal of a journal on a mount whose clients cache sizes."""

    # Set by Store.
    path: str
    kind: str
    gzipped: bool
    generation: int
    journal_path: str
    journal_pos: int
    _exists_below: int
    fault: Any

    def _refuse_journal_on_caching_mount(self) -> None:
        """A journal is appended at the size its writer sees; a client that
        caches sizes (FUSE, GlusterFS) may show an old one, and the append
        then lands on another host's batch. Refuse rather than corrupt."""
        mount = fsdetect.find_mount(self.path)
        if mount is None or not fsdetect.caches_sizes(mount.fstype):
            return
        raise StorageError(
            f"{self.path} keeps its log in one journal file (the local store), but it is on "
            f"{mount.point}, a {mount.fstype} mount whose clients may cache file sizes, where "
            "appending to a journal can write over another host's data. Convert it to the "
            f"shared store once, with no job using it: `tastypy compact --storage shared "
            f"{self.path}` (or open it where its filesystem is local)."
        )

    def _load_commits(self, manifest: dict) -> dict:
        """Load a POD of the shared store: the snapshot, then every commit of
        the generation's log; a seal sends the load on to the generation it
        names (the manifest this client read may be an old copy)."""
        while True:
            data: dict = {}
            texts: list = []
            snapshot_records = self._load_snapshot(manifest, data, texts)
            directory = os.path.join(self.path, manifest["journal"])
            number = records = 0
            sealed = None
            while sealed is None:
                got = commits.read(directory, number, self.gzipped)
                if got is None:
                    break
                if isinstance(got, commits.Sealed):
                    sealed = got
                    break
                text, path = got
                records += journal.load_into(text, data, path)
                texts.append((text, path, _first_line))
                number += 1
            if sealed is None:
                break
            manifest = self._sealed_manifest(sealed)
        self._check_keys(data, texts)
        self._loaded_state(manifest, number, records, snapshot_records)
        return data

    def _sealed_manifest(self, sealed: commits.Sealed) -> dict:
        manifest = layout.new_manifest(
            self.kind, sealed.generation, self.gzipped, sealed.snapshot_records, shared=True
        )
        manifest["snapshot"] = sealed.snapshot
        return manifest

    def _read_new_commits(self, manifest: dict) -> tuple[bytes, int, Callable[[], int]] | None:
        """:meth:`read_new_text` of the shared store: the commits numbered from
        :attr:`journal_pos` on, until one that does not exist; ``consumed``
        counts commits. None when the log was sealed (or the manifest names a
        newer generation): the caller loads afresh."""
        if manifest["generation"] > self.generation:
            return None
        texts = []
        number = self.journal_pos
        while True:
            got = commits.read(self.journal_path, number, self.gzipped)
            if got is None and number < self._exists_below:
                got = commits.read_existing(
                    self.journal_path, number, self.gzipped, _HIDDEN_COMMIT_WAIT
                )
            if got is None:
                break
            if isinstance(got, commits.Sealed):
                return None
            journal.refuse_unwritable(*got)  # as a load checks: kept unparsed
            texts.append(got[0])
            number += 1
        return b"".join(texts), number - self.journal_pos, _first_line

    def _commit(self, batch: bytes, durable: bool) -> None:
        try:
            created = commits.write(
                self.journal_path, self.journal_pos, batch, self.gzipped, durable, self.fault
            )
        except OSError as exc:
            raise _os_error("commit to", self.journal_path, exc) from exc
        if not created:
            self._exists_below = self.journal_pos + 1
            mount = fsdetect.find_mount(self.path)
            where = f"{mount.point} ({mount.fstype})" if mount else "its filesystem"
            raise CommitRaced(
                f"another process created commit {self.journal_pos} of {self.journal_path} "
                f"while this one held the lock of {self.path}: the lock does not exclude the "
                f"processes sharing {where}. Nothing was written. Open every handle with "
                "lock='soft' (see docs/locks.md), and check the mount with `python -m tastypy "
                "verify-fs DIR`."
            )
        self.journal_pos += 1

    def _compact_commits(self, body: bytearray, count: int, generation: int) -> None:
        """:meth:`compact` for the shared store: write the next generation's
        snapshot, then seal this generation's log with a commit naming it.
        The seal is what makes the new generation live (a reader follows it
        whatever copy of the manifest it has); the manifest, written next,
        lets new readers start there. The generation before this one is
        deleted; this one stays, for readers whose manifest is an old copy."""
        snap = layout.snapshot_name(generation, self.gzipped) if count else None
        snap_path = os.path.join(self.path, snap) if snap else ""
        manifest = layout.new_manifest(self.kind, generation, self.gzipped, count, shared=True)
        stray = os.path.join(self.path, manifest["journal"])
        seal = commits.seal_line(commits.Sealed(generation, snap, count))
        try:
            self.fault("compact-before-snapshot")
            if snap:
                layout.write_atomic(
                    snap_path, journal.frame(body, count, self.gzipped), self.fault, "snapshot"
                )
            # Left by a compaction that died before its seal; never live.
            commits.remove_log(stray)
            self.fault("compact-before-seal")
            self._commit(journal.gzip_member(seal) if self.gzipped else seal, durable=True)
        except BaseException as exc:
            if snap:
                try:
                    os.unlink(snap_path)
                except OSError:
                    pass
            if isinstance(exc, OSError):
                raise _os_error("compact into", snap_path or stray, exc) from exc
            raise
        self.fault("compact-before-manifest")
        try:
            layout.write_manifest(self.path, manifest, self.fault)
        except OSError as exc:
            # Sealed already: readers find the new generation through the seal.
            log.warning("tastypy: could not update the manifest of %s: %s", self.path, exc)
        self.fault("compact-after-manifest")
        commits.remove_generations_before(self.path, self.generation)
        commits.sweep_temporaries(self.journal_path)
        self.fault("compact-after-delete")
        self.generation = generation
        self.journal_path = stray
        self.journal_pos = 0
        self.journal_records = 0
        self.snapshot_records = count
        self._exists_below = 0
