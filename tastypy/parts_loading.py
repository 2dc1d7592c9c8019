"""Which parts of a parted tracker this process holds: a part is loaded the
first time a key of it is used, kept while it is among the few used last
(or holds this process's leases or unsynced changes), and dropped when the
process moves on, its summary written as it goes. A key of a part not
loaded here may be answered from the part's files without loading it.

A mixin of :class:`~tastypy.parts.PartedTracker` (which lists the others).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import orjson

from tastypy import clones
from tastypy.errors import InvalidArgumentError
from tastypy.storage import parts as files
from tastypy.storage.fsdetect import choose_lock
from tastypy.storage.peek import Peeker
from tastypy.tracker import ProgressTracker

__all__ = ["LoadingMixin"]

#: Parts kept loaded at once (besides those holding this process's leases
#: or unsynced changes under hold()): a job moving through its keys holds
#: one or two, so the memory of a job does not grow with the tracker.
_KEEP_OPEN: Final = 4

#: A part this process keeps writing to gets its summary written again at
#: most this often (and always when the process leaves the part).
_SUMMARY_EVERY: Final = 10.0

#: A peek searches the part's journal text for the key's last line: cheap
#: for a few keys, but a job asking about thousands of keys of one part
#: (run()'s final count) would search its text thousands of times. After
#: this many peeks into one part, the part is loaded instead.
_PEEKS_BEFORE_LOADING: Final = 32


class LoadingMixin:
    """The parts loaded here: loaded, kept, summarized, dropped, peeked into."""

    # Set by PartedTracker.
    _closed: bool
    _path: str
    _options: dict
    # From ManifestMixin.
    _n: int
    part_of: Any
    _unsettled: Any

    def _init_loading(self, lock: str) -> None:
        """No part loaded yet; peeks only where files may be read unlocked."""
        # Open parts, least recently used first.
        self._open: OrderedDict[int, ProgressTracker] = OrderedDict()
        self._summarized: dict[int, float] = {}
        self._peeker = Peeker()
        self._peeked: dict[int, int] = {}
        self._held = False
        self._lock = threading.RLock()
        # Reading a part's files without its lock is safe only where sizes
        # and contents are coherent: not on the filesystems the soft lock is for.
        self._peeks = lock != "soft" and choose_lock(self._path)[0] == "posix"

    def _part(self, index: int) -> ProgressTracker:
        with self._lock:  # threads of a run() share the tracker
            return self._load(index)

    def _load(self, index: int) -> ProgressTracker:
        part = self._open.get(index)
        if part is not None:
            self._open.move_to_end(index)
            if time.monotonic() - self._summarized.get(index, 0.0) > _SUMMARY_EVERY:
                self._summarize(index, part)
            return part
        if self._closed:
            raise InvalidArgumentError(f"{self!r} is closed; open it again to use it.")
        if not self._n:
            raise self._unsettled()
        self._make_room()
        options = self._options
        # The settings are the top's: a part stores none of its own.
        part = ProgressTracker(
            files.part_dir(self._path, index), **{**options, "max_tries": None, "lease": None}
        )
        part.max_tries = options["max_tries"]
        part.lease = options["lease"]
        part._files_root = self._path  # the tasks' own files are under the top
        if self._held:
            part.hold()
        self._open[index] = part
        self._summarized[index] = time.monotonic()
        return part

    def _for(self, key: Any) -> ProgressTracker:
        return self._part(self.part_of(key))

    def _write_others(self, part: ProgressTracker) -> None:
        """Write what waits in the loaded parts other than ``part`` (not under
        hold()): a try about to be granted in ``part`` is then, as in one
        store, preceded on disk by every change made before it."""
        if self._held:
            return
        for other in list(self._open.values()):
            if other is not part:
                other.flush()

    def _pinned(self, part: ProgressTracker) -> bool:
        # Closing a part ends the leases this process holds there, and
        # writes what hold() is keeping back: neither may happen behind
        # the user's back.
        return bool(part._granted) or (self._held and part._unsynced())

    def _make_room(self) -> None:
        for index in list(self._open):
            if len(self._open) < _KEEP_OPEN:
                return
            if not self._pinned(self._open[index]):
                self._drop(index)

    def _drop(self, index: int) -> None:
        with self._lock:
            part = self._open.pop(index)
            try:
                self._summarize(index, part)
            finally:
                part.close()
                self._summarized.pop(index, None)

    def _summarize(self, index: int, part: ProgressTracker) -> None:
        """Write the part's summary if it changed since the last one.

        Counted under the part's lock after taking in what others wrote, so
        the summary is exact for the journal length it names, and of two
        writers the later one writes the more complete summary.
        """
        self._summarized[index] = time.monotonic()
        if part._closed:
            return
        part.sync()
        where = files.part_path(self._path, index)
        old = files.read_summary(self._path, index)
        if old is not None and old.get("as_of") == files.journal_state(where):
            return
        with part._locked():
            part.refresh()
            summary = {
                "as_of": files.journal_state(where),
                "stats": part.stats(),
                "tried": part.num_tried(),
            }
            files.write_summary(self._path, index, summary)

    @contextmanager
    def _visiting(self, index: int, create: bool = False) -> Iterator[Any]:
        """A part for one pass (iteration, counting): dropped afterwards
        unless it was open before or holds something of ours. None for a
        part never written, unless ``create``: reading makes no files."""
        was_open = index in self._open
        if not (was_open or create or files.exists(files.part_path(self._path, index))):
            yield None
            return
        part = self._part(index)
        try:
            yield part
        finally:
            if not was_open and index in self._open and not self._pinned(part):
                self._drop(index)

    def _peek(self, key: Any) -> tuple[bool, Any] | None:
        """``(found, record)`` read from the files of a part not open here,
        without loading it; None when the part is open (ask it) or its files
        cannot be read this way."""
        if not self._n:
            return (False, None)  # shards="auto", no tasks yet
        if not self._peeks:
            return None
        index = self.part_of(key)
        if index in self._open:
            return None
        if self._options["clone"] and clones.find(
            files.part_dir(self._path, index), ProgressTracker
        ):
            # Open in this process by another handle (clone=True): the part
            # loaded here is a handle on that state, which may hold what
            # the files do not yet.
            return None
        asked = self._peeked.get(index, 0) + 1
        if asked > _PEEKS_BEFORE_LOADING and files.exists(files.part_path(self._path, index)):
            return None  # many keys of this part: loading it is cheaper now
        self._peeked[index] = asked
        return self._peeker.peek(files.part_path(self._path, index), orjson.dumps(key))
