"""Where a parted tracker's tasks live: its manifest opened or made, the
part count fixed, and the part each key belongs to.

A mixin of :class:`~tastypy.parts.PartedTracker` (which lists the others).
The count is fixed when the tracker is made, or, for ``shards="auto"``, by
its first ``add_many``; a key's part is computed from the key alone, so any
process finds any key reading only its part.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from tastypy.codec import check_key
from tastypy.errors import InvalidArgumentError
from tastypy.storage import parts as files
from tastypy.tracker import settings

__all__ = ["ManifestMixin"]


def _hash(key: Any) -> int:
    t = type(key)
    if t is not str and t is not int:
        check_key(key)
    return files.key_hash(orjson.dumps(key))


class ManifestMixin:
    """The part count, fixed once, and which part holds a key."""

    # Set by PartedTracker.
    _path: str
    _claim_at: int
    _options: dict
    _given: tuple
    holder: str

    def _open_manifest(self, shards: int | str | None) -> dict | None:
        """The manifest of the tracker at this path, made now for a new
        directory; None for one opened with ``shards="auto"`` whose count
        its first ``add_many`` has yet to fix. A ``shards`` that differs from
        the count fixed at creation is refused."""
        if shards != "auto" and shards is not None:
            files.check_parts(shards)
        self._parts = 0  # not fixed yet: see _settle
        manifest = files.read_manifest(self._path)
        if manifest is None and shards == "auto":
            # Nothing is written before the first add_many: it fixes the count.
            if files.holds_single_store(self._path):
                raise files.layout_taken(self._path)
        elif manifest is None:
            # Only a new directory becomes parted: a tracker in one store
            # keeps its layout (the dispatcher sends it here only with shards=).
            manifest = files.create(self._path, shards or 1, "tracker")
        if manifest is not None and shards not in (None, "auto") and manifest["parts"] != shards:
            raise InvalidArgumentError(
                f"{self._path} is split into {manifest['parts']} parts, not shards={shards}: "
                "the count is fixed when the tracker is made. Open it without shards=."
            )
        return manifest

    def _fix(self, manifest: dict) -> None:
        # One set of settings for all parts, stored at the top (parts store none).
        self._options["max_tries"], self._options["lease"], _ = settings.resolve(
            self._path, *self._given
        )
        self._parts = manifest["parts"]
        self._claim_at = files.key_hash(self.holder.encode()) % self._parts

    def _settle(self, tasks: int | None) -> int:
        """The part count; for a tracker made with ``shards="auto"`` and not
        written yet, the one another process fixed meanwhile, else the one
        ``tasks`` new tasks call for (fixed now), else 0 (no tasks yet)."""
        if not self._parts:
            manifest = files.read_manifest(self._path)
            if manifest is None and tasks:
                manifest = files.create(self._path, files.auto_parts(tasks), "tracker")
            if manifest is not None:
                self._fix(manifest)
        return self._parts

    @property
    def _n(self) -> int:
        return self._parts or self._settle(None)

    def _unsettled(self) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"{self._path} was opened with shards='auto' and has no tasks yet: its part count "
            "is fixed by its first add_many (or add_many_if_absent). Add the tasks with "
            "add_many first, or give shards=N."
        )

    # -- which part ----------------------------------------------------------------

    def part_of(self, key: Any) -> int:
        """The index of the part that holds (or would hold) ``key``."""
        return files.part_of_hash(_hash(key), self._n)

    def _by_part(self, keys: Iterable) -> dict[int, list]:
        groups: dict[int, list] = {}
        n = self._n
        for key in keys:
            groups.setdefault(files.part_of_hash(_hash(key), n), []).append(key)
        return groups
