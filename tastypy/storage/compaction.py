"""Folding a store's journal into a new snapshot generation: when, and how.

A mixin of :class:`~tastypy.storage.store.Store` (as
:class:`~tastypy.storage.shared.SharedLog` is), kept apart so that the store
holds opening, reading and the one write path, and this the compaction:
the snapshot written, the old journal sealed before the manifest names the
new files, and the old generation's files deleted.
"""

from __future__ import annotations

import os
from typing import Callable, Final

from tastypy.codec import LINE_OPTIONS, _has_nonfinite, dumps
from tastypy.errors import InvalidArgumentError, TastypyError
from tastypy.storage import commits, journal, layout
from tastypy.storage.layout import os_error as _os_error

#: A journal is folded into a new snapshot only once it holds more stale
#: records than this, so small PODs are not rewritten over and over.
_COMPACT_MIN_STALE: Final = 10_000

#: The shared store folds its commit files into a snapshot only once there
#: are at least this many.
_COMPACT_MIN_COMMITS: Final = 2_000


class Compaction:
    """When a store compacts (:meth:`maybe_compact`), and the compaction."""

    # Set by Store.
    path: str
    kind: str
    gzipped: bool
    shared: bool
    generation: int
    journal_path: str
    journal_pos: int
    journal_records: int
    snapshot_records: int
    mixed: bool
    _exists_below: int
    fault: Callable[[str], None]
    load: Callable[[], dict]
    _compact_commits: Callable[..., None]

    def stale_records(self, live: int) -> int:
        return self.snapshot_records + self.journal_records - live

    def maybe_compact(self, live: int, data: Callable[[], dict | None] | None = None) -> bool:
        """Compact if stale records outnumber the ``live`` ones. ``data()``:
        the owner's dict, if it holds exactly what the files hold, else None;
        asked only if this store did not read others' records since the
        owner loaded (see :attr:`mixed`). It saves loading the files again."""
        stale = self.stale_records(live)
        if (stale > _COMPACT_MIN_STALE and stale > live) or (
            # Every commit of the shared store is a file that each new
            # reader opens: fold them once they outnumber a hundredth of
            # the keys (a compaction then costs ~100 records per commit).
            self.shared
            and self.journal_pos >= _COMPACT_MIN_COMMITS
            and self.journal_pos * 100 >= live
        ):
            self.compact(None if self.mixed or data is None else data())
            return True
        return False

    def _generation_on_disk(self) -> int | None:
        try:
            manifest = layout.read_manifest(self.path)
        except (OSError, TastypyError):
            return None
        return None if manifest is None else manifest.get("generation")

    def compact(self, data: dict | None = None, *, shared: bool | None = None) -> None:
        """Fold the journal into a new snapshot generation (under the lock).

        ``data``: what the files hold, if the caller has it (else they are
        loaded); a value JSON cannot hold makes it load them after all.
        ``shared=True`` converts a POD of the local store to the shared one
        (the other way is refused)."""
        if shared is False and self.shared:
            raise InvalidArgumentError(
                f"{self.path} uses the shared store; it cannot be converted back to a journal. "
                "Copy its items into a new POD made with storage='local' instead."
            )
        convert = bool(shared) and not self.shared
        body, count = self._snapshot_body(data)
        generation = self.generation + 1
        if self.shared:
            self._compact_commits(body, count, generation)
            return
        snap = layout.snapshot_name(generation, self.gzipped)
        snap_path = os.path.join(self.path, snap)
        manifest = layout.new_manifest(self.kind, generation, self.gzipped, count, convert)
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
            if convert:
                commits.remove_log(stray)
            elif os.path.lexists(stray):
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
        self._remove_old(old, snap)
        self.shared = convert
        self.generation = generation
        self.journal_path = os.path.join(self.path, manifest["journal"])
        self.journal_pos = 0
        self.journal_records = 0
        self.snapshot_records = count
        self._exists_below = 0

    def _remove_old(self, old: list, snap: str) -> None:
        """After a compaction switched the manifest: delete the files of the
        old generation (``old``, our own names only), but the new snapshot."""
        deleted = 0
        for name in old:
            if name != snap:
                try:
                    if layout.is_commits_dir(name):
                        continue  # not ours to delete: none can exist before a conversion
                    os.unlink(os.path.join(self.path, name))
                except OSError:
                    continue
                deleted += 1
                if deleted == 1:
                    self.fault("compact-mid-delete")
        self.fault("compact-after-delete")

    def _snapshot_body(self, data: dict | None) -> tuple[bytearray, int]:
        """The record lines of a new snapshot, and how many: of ``data``, if
        every value can be written as it is on disk, else of the files."""
        if data is not None:
            # One growing buffer: orjson hands back over-allocated bytes, so
            # keeping a million of them alive would cost gigabytes.
            body = bytearray()
            try:
                for item in data.items():
                    body += dumps(item, option=LINE_OPTIONS)
            except (TypeError, ValueError, RuntimeError):
                pass
            else:
                # NaN would be written as null: not what is on disk.
                if not (b"null" in body and any(map(_has_nonfinite, data.values()))):
                    return body, len(data)
        data = self.load()
        body = bytearray()
        for item in data.items():
            body += dumps(item, option=LINE_OPTIONS)
        return body, len(data)
