"""A tracker split into parts by key hash, for jobs on millions of tasks.

``Tracker(path, shards=N)`` makes (or ``Tracker(path)`` reopens) a tracker
whose tasks live in N parts, each an ordinary tracker store with its own
lock and journal. A process reads and holds only the parts its keys live
in: a part is loaded the first time a key of it is used and dropped when
the process moves on, counts come from per-part summaries, and
:meth:`PartedTracker.claim` visits parts one at a time. See
``docs/parts.md`` for the guide and ``docs/design.md`` for the numbers.

:class:`PartedTracker` is put together here from one mixin per
responsibility, each in a module beside this one named ``parts_*`` (not a
package: ``tastypy.parts`` is where users import the class from), as
:class:`~tastypy.ProgressTracker` is in ``tastypy/tracker/``:

* ``parts_manifest``: the manifest opened or made, the part count fixed
  (``shards="auto"``: by the first ``add_many``), the part of a key.
* ``parts_loading``: which parts are loaded here; loaded on first use,
  kept, summarized and dropped; keys answered from a part's files
  without loading it.
* ``parts_counts``: ``stats``, ``len()``, ``num_*``, ``fraction_*``,
  ``percent_*``, summed from the parts' summaries.
* ``parts_keys``: what acts on given keys in their parts: the mapping,
  ``done``, ``mark_done``, ``try_it`` and the other per-key calls,
  ``add_many``, ``release``, ``renew``, ``bump``, ``lease_info``.
* ``parts_visits``: what goes through the parts one at a time:
  iteration, ``to_dict``, ``todo_keys`` and the other iterators, ``claim``.
* ``parts_run``: ``attempts`` and ``run``.

This module holds what ties them together: opening and closing, the
settings, syncing, a job's share (:meth:`PartedTracker.part`,
:class:`Slice`) and :func:`split`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import orjson

from tastypy import _exit
from tastypy._args import check_flag, check_path
from tastypy.errors import InvalidArgumentError
from tastypy.parts_counts import CountsMixin
from tastypy.parts_keys import KeysMixin
from tastypy.parts_loading import LoadingMixin
from tastypy.parts_manifest import ManifestMixin, _hash
from tastypy.parts_run import Running
from tastypy.parts_visits import VisitsMixin
from tastypy.storage import parts as files
from tastypy.tracker import DEFAULT_LEASE, ProgressTracker, settings
from tastypy.tracker.fetching import FetchMixin
from tastypy.tracker.taskfiles import TaskFilesMixin

__all__ = ["PartedTracker", "Slice", "split"]


class PartedTracker(
    FetchMixin,
    TaskFilesMixin,
    Running,
    KeysMixin,
    VisitsMixin,
    CountsMixin,
    LoadingMixin,
    ManifestMixin,
    MutableMapping,
):
    """A :class:`~tastypy.ProgressTracker` whose tasks are split into parts.

    Made by ``Tracker(path, shards=N)``; ``Tracker(path)`` reopens it. It
    offers the tracker's API; what differs is said in ``docs/parts.md``:
    iteration goes part by part (insertion order within a part), and
    ``len()`` and the counters come from each part's last summary.

    Example::

        >>> from tastypy import Tracker
        >>> tracker = Tracker(tmp_path / "big.tracker", shards=8)
        >>> tracker.add_many(f"task-{i}" for i in range(100))
        >>> keys = tracker.claim(10)
        >>> for key in keys:
        ...     tracker.mark_done(key)
        >>> len(tracker), tracker.num_done()
        (100, 10)
        >>> tracker.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_tries: int | None = None,
        init: Mapping | Any = None,
        gzipped: bool = False,
        file_size: int = 1000,
        sync_at: int = 1000,
        clone: bool = True,
        *,
        lock: str = "auto",
        lock_timeout: float = 600.0,
        lease: float | None = None,
        storage: str | None = None,
        shards: int | str | None = None,
        redo_after: float | None = None,
    ):
        self._closed = True
        if redo_after:
            # A part whose summary says every task is finished is skipped
            # unread by claim() and the counts: with done tasks coming due
            # again by the clock, no summary could say so.
            raise InvalidArgumentError(
                f"redo_after={redo_after!r}: a tracker split into parts (shards=) does not "
                "make done tasks due again. Use a tracker without shards= for a freshness "
                "loop (docs/recipes/freshness-loop.md)."
            )
        self._path = os.path.abspath(check_path(path))
        check_flag(gzipped, "gzipped")
        check_flag(clone, "clone")
        # As given: the tracker's stored settings are read (and these stored)
        # once its directory exists, in _fix.
        self._given = (max_tries, lease)
        manifest = self._open_manifest(shards)
        self._options = {
            "max_tries": 0 if max_tries is None else settings.check_max_tries(max_tries),
            "gzipped": gzipped,
            "file_size": file_size,
            "sync_at": sync_at,
            "lock": lock,
            "lock_timeout": lock_timeout,
            "lease": DEFAULT_LEASE if lease is None else settings.check_lease(lease),
            "storage": storage,
            # Parts opened by two PartedTracker objects of this process
            # share one state each, as two Trackers on one path do.
            "clone": clone,
        }
        self._init_loading(lock)
        self._claim_at = 0
        if manifest is not None:
            self._fix(manifest)
        self._closed = False
        _exit.register(self)
        if init:
            self._add_init(init)

    def _add_init(self, init: Mapping | Any) -> None:
        """The tasks given as ``init=``, those not there yet (the first ones
        fix the part count of a tracker made with ``shards="auto"``)."""
        items = list(init.items() if isinstance(init, Mapping) else init)
        self._settle(len(items))
        for key, value in items:
            if key not in self:
                self[key] = value

    # -- identity ------------------------------------------------------------

    @property
    def path(self) -> str:
        """The directory holding the tracker."""
        return self._path

    @property
    def parts(self) -> int:
        """How many parts the tasks are split into (fixed at creation; 0 for a
        tracker made with ``shards="auto"`` before its first ``add_many``)."""
        return self._n

    @property
    def holder(self) -> str:
        """How lease records name this process: ``"host:pid"``."""
        return ProgressTracker.holder.fget(None)

    @property
    def max_tries(self) -> int:
        """How many tries a task gets (0: no limit); see ProgressTracker.max_tries."""
        return self._options["max_tries"]

    @max_tries.setter
    def max_tries(self, value: int | None) -> None:
        value = 0 if value is None else settings.check_max_tries(value)
        for part in self._open.values():
            part.max_tries = value
        self._options["max_tries"] = value

    @property
    def lease(self) -> float:
        """Seconds a claimed task stays leased; see ProgressTracker.lease."""
        return self._options["lease"]

    @lease.setter
    def lease(self, value: float) -> None:
        value = settings.check_lease(value)
        for part in self._open.values():
            part.lease = value
        self._options["lease"] = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, {self._n} parts)"

    # -- a job's share ----------------------------------------------------------

    def part(self, index: int, of: int) -> Slice:
        """Job ``index`` of ``of``'s share of the tasks (a :class:`Slice`).

        The shares split the key hashes into ``of`` equal ranges, so every
        key is in exactly one share, and a share lives in about
        ``parts / of + 1`` parts: only those are loaded. For job arrays::

            view = tracker.part(int(os.environ["SLURM_ARRAY_TASK_ID"]), 1000)
            for key in view:
                if view.try_it(key):
                    ...
                    view.mark_done(key)
        """
        if type(of) is not int or of < 1 or type(index) is not int or not 0 <= index < of:
            raise InvalidArgumentError(
                f"part(index, of) needs ints with 0 <= index < of, got part({index!r}, {of!r}): "
                "job index of a job array of `of` jobs, counted from 0."
            )
        return Slice(self, index, of)

    # -- syncing and lifetime ----------------------------------------------------------

    def sync(self) -> None:
        """Write every open part's changes now."""
        for part in list(self._open.values()):
            part.sync()

    def refresh(self) -> None:
        """Take in what other processes wrote to the open parts."""
        for part in list(self._open.values()):
            part.refresh()

    def revert(self) -> None:
        for part in list(self._open.values()):
            part.revert()

    def compact(self) -> None:
        """Fold every part's journal into a new snapshot, one part at a time."""
        for index in range(self._n):
            with self._visiting(index) as part:
                if part is not None:
                    part.compact()

    def hold(self) -> None:
        self._held = True
        for part in self._open.values():
            part.hold()

    def unhold(self) -> None:
        self._held = False
        for part in list(self._open.values()):
            part.unhold()

    @contextmanager
    def holding(self) -> Iterator[PartedTracker]:
        was = self._held
        self.hold()
        try:
            yield self
        finally:
            if not was:
                self.unhold()

    def close(self) -> None:
        """Write every open part's changes and summary, and let go of them."""
        if self._closed:
            return
        try:
            while self._open:
                self._drop(next(iter(self._open)))
        finally:
            self._closed = True
            _exit.unregister(self)

    def _exit_sync(self) -> None:
        self.close()

    def __enter__(self) -> PartedTracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# Code that checks isinstance(t, ProgressTracker) takes a parted one too.
ProgressTracker.register(PartedTracker)


class Slice:
    """One job's share of a :class:`PartedTracker`: the keys whose hash falls in
    the share's range. Iterating it loads only the parts the share lives in,
    one at a time; the per-key methods are the tracker's."""

    def __init__(self, tracker: PartedTracker, index: int, of: int):
        self.tracker = tracker
        self.index = index
        self.of = of
        n = tracker.parts
        lo = -(-(index << 32) // of)  # the first hash h with h * of >> 32 == index
        hi = -(-((index + 1) << 32) // of)
        self._parts = range(files.part_of_hash(lo, n), files.part_of_hash(hi - 1, n) + 1)

    def __repr__(self) -> str:
        return f"Slice({self.tracker!r}, {self.index}, {self.of})"

    def __contains__(self, key: object) -> bool:
        return (_hash(key) * self.of) >> 32 == self.index and key in self.tracker

    def _mine(self, keys: Iterable) -> list:
        of, index = self.of, self.index
        return [k for k in keys if (files.key_hash(orjson.dumps(k)) * of) >> 32 == index]

    def __iter__(self) -> Iterator:
        """This share's keys, part by part (insertion order within a part)."""
        for index in self._parts:
            with self.tracker._visiting(index) as part:
                keys = [] if part is None else self._mine(list(part))
            yield from keys

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def todo_keys(self, allow_aborted: bool = False) -> Iterator:
        for index in self._parts:
            with self.tracker._visiting(index) as part:
                keys = [] if part is None else self._mine(list(part.todo_keys(allow_aborted)))
            yield from keys

    def claim(self, n: int = 1, *, lease: float | None = None) -> list:
        """Lease up to ``n`` of this share's tasks (tried in the share's order)."""
        got: list = []
        for key in self.todo_keys():
            if len(got) >= n:
                break
            if self.tracker.try_it(key, lease=lease):
                got.append(key)
        return got

    def __getattr__(self, name: str) -> Any:
        # try_it, mark_done, done, tracker[key]...: the key decides the part.
        return getattr(self.tracker, name)

    def __getitem__(self, key: Any) -> Any:
        return self.tracker[key]


def split(source: str | os.PathLike[str], target: str | os.PathLike[str], shards: int) -> None:
    """Copy the single-store tracker ``source`` into a new tracker ``target`` of
    ``shards`` parts, every record as it is, and its settings (``max_tries``,
    the lease). ``source`` is left as it was."""
    files.check_parts(shards)
    if files.exists(os.fspath(target)):
        raise InvalidArgumentError(f"{target} already holds a tracker; give a new path.")
    with ProgressTracker(source) as old:
        kept = {"max_tries": old.max_tries, "lease": old.lease}
        with PartedTracker(target, shards=shards, **kept) as new:
            groups = new._by_part(old)
            for index in sorted(groups):
                with new._visiting(index, create=True) as part, part.holding():
                    for key in groups[index]:
                        part[key] = old[key]
