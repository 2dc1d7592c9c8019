"""Read one key's record from a store's files without loading the store.

A job that only asks whether a few keys are done need not load the parts
they live in: the last line of the key in the committed part of the
journal (else of the snapshot) is its record. Read without the lock, which
is safe where the filesystem is coherent (a torn batch is ignored as the
loader ignores it; a compaction meanwhile removes a file, and the read
starts over from the new manifest).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Final

import orjson

from tastypy.codec import suspect_lines, unwritable
from tastypy.errors import TastypyError
from tastypy.storage import files, journal, layout

#: How often a read starts over because a compaction replaced the files.
_ATTEMPTS: Final = 3


def _last_line(text: bytes, encoded_key: bytes) -> tuple[bool, Any] | None:
    """The record of the key's last line in ``text``: ``(True, value)``, or
    ``(False, None)`` for a deletion; None if no line has the key."""
    best = -1
    for prefix in (b"[" + encoded_key + b",", b"[" + encoded_key + b"]\n"):
        pos = text.rfind(b"\n" + prefix)
        if pos >= 0:
            pos += 1
        elif text.startswith(prefix):
            pos = 0
        best = max(best, pos)
    if best < 0:
        return None
    line = text[best : text.index(b"\n", best)]
    if suspect_lines(line) and unwritable(line) is not None:
        raise ValueError(line)  # the load that follows names the file and line
    record = orjson.loads(line)
    return (True, record[1]) if len(record) == 2 else (False, None)


class Peeker:
    """Peeks that keep the text they read (up to ``budget`` bytes), reused
    while the file's size shows nothing was appended: a job asking about
    many keys of one part reads the part once."""

    def __init__(self, budget: int = 2 << 20):
        self.budget = budget
        self._texts: dict[str, tuple[int, bytes]] = {}
        self._held = 0

    def read(self, path: str) -> bytes:
        size = os.lstat(path).st_size
        kept = self._texts.get(path)
        if kept is not None and kept[0] == size:
            return kept[1]
        text, consumed, _ = journal.read_from(path, 0, False)
        if kept is not None:
            self._held -= len(kept[1])
            del self._texts[path]
        while self._texts and self._held + len(text) > self.budget:
            old = next(iter(self._texts))
            self._held -= len(self._texts.pop(old)[1])
        if len(text) <= self.budget:
            self._texts[path] = (consumed, text)
            self._held += len(text)
        return text

    def peek(self, directory: str, encoded_key: bytes) -> tuple[bool, Any] | None:
        return peek(directory, encoded_key, self.read)


def _read_committed(path: str) -> bytes:
    return journal.read_from(path, 0, False)[0]


def peek(
    directory: str, encoded_key: bytes, read: Callable[[str], bytes] = _read_committed
) -> tuple[bool, Any] | None:
    """``(found, value)`` for the key whose JSON is ``encoded_key`` in the store
    at ``directory``; ``(False, None)`` when the store does not exist or does
    not hold it; None when the files cannot be read this way (compressed,
    damaged, or changing too fast): load the store instead."""
    for _ in range(_ATTEMPTS):
        try:
            files.check_directory(directory)  # a part planted as a link: load it (refused)
            manifest = layout.read_manifest(directory)
        except FileNotFoundError:
            return (False, None)
        except (OSError, TastypyError):
            return None
        if manifest is None:
            return (False, None)
        if manifest.get("gzipped") or layout.is_shared(manifest):
            return None  # one file per commit there: load the store
        try:
            for name in (manifest["journal"], manifest.get("snapshot")):
                if not name:
                    continue
                try:
                    text = read(os.path.join(directory, name))
                except FileNotFoundError:
                    if name == manifest["journal"]:
                        continue  # no journal yet: nothing written since the snapshot
                    raise
                found = _last_line(text, encoded_key)
                if found is not None:
                    return found
            return (False, None)
        except FileNotFoundError:
            continue  # compacted meanwhile: read the new manifest
        except (OSError, ValueError, TastypyError):
            return None
    return None
