"""A tracker split into parts by key hash, for jobs on millions of tasks.

``Tracker(path, shards=N)`` makes (or ``Tracker(path)`` reopens) a tracker
whose tasks live in N parts, each an ordinary tracker store with its own
lock and journal. A process reads and holds only the parts its keys live
in: a part is loaded the first time a key of it is used and dropped when
the process moves on, counts come from per-part summaries, and
:meth:`PartedTracker.claim` visits parts one at a time. See
``docs/parts.md`` for the guide and ``docs/design.md`` for the numbers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, Final

import orjson

from tastypy import _exit
from tastypy.codec import check_key
from tastypy.errors import DuplicateKeyError, InvalidArgumentError
from tastypy.parts_run import Running
from tastypy.storage import parts as files
from tastypy.storage.fsdetect import choose_lock
from tastypy.storage.peek import Peeker
from tastypy.tracker import DEFAULT_LEASE, ProgressTracker, settings
from tastypy.tracker.counters import pace

__all__ = ["PartedTracker", "Slice", "split"]

log = logging.getLogger("tastypy")

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

#: Counters a summary holds besides the part's stats().
_EMPTY_STATS: Final = {
    "total": 0,
    "done": 0,
    "todo": 0,
    "failed": 0,
    "aborted": 0,
    "in_progress": 0,
    "leased": 0,
    "expired": 0,
    "tries": {},
    "leased_by": {},
    "recent_done": 0,
    "recent_since": None,
    "last_done": None,
    "rate": None,
    "eta": None,
}


def _hash(key: Any) -> int:
    t = type(key)
    if t is not str and t is not int:
        check_key(key)
    return files.key_hash(orjson.dumps(key))


def _finished(stats: dict) -> bool:
    return stats["done"] + stats["aborted"] + stats["failed"] >= stats["total"]


def _add_stats(into: dict, stats: dict) -> None:
    for name, value in stats.items():
        if name == "tries":
            hist = into["tries"]
            for tries, count in value.items():
                if isinstance(tries, str) and tries.lstrip("-").isdigit():
                    tries = int(tries)
                hist[tries] = hist.get(tries, 0) + count
        elif name == "leased_by":
            holders = into["leased_by"]
            for holder, count in value.items():
                holders[holder] = holders.get(holder, 0) + count
        elif name in ("recent_since", "last_done"):
            # Times as text (ISO 8601, UTC): the earliest, the latest.
            if value is not None and (
                into[name] is None or (value < into[name]) == (name == "recent_since")
            ):
                into[name] = value
        elif name in ("rate", "eta"):
            continue  # of the sums, once they are made
        elif name in into:
            into[name] += value


class PartedTracker(Running, MutableMapping):
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
    ):
        self._closed = True
        # As given: the tracker's stored settings are read (and these stored)
        # once its directory exists, in _fix.
        self._given = (max_tries, lease)
        self._path = os.path.abspath(os.fspath(path))
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
        self._options = {
            "max_tries": 0 if max_tries is None else settings.check_max_tries(max_tries),
            "gzipped": gzipped,
            "file_size": file_size,
            "sync_at": sync_at,
            "lock": lock,
            "lock_timeout": lock_timeout,
            "lease": DEFAULT_LEASE if lease is None else settings.check_lease(lease),
            "storage": storage,
        }
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
        self._claim_at = 0
        if manifest is not None:
            self._fix(manifest)
        self._closed = False
        _exit.register(self)
        if init:
            items = list(init.items() if isinstance(init, Mapping) else init)
            self._settle(len(items))
            for key, value in items:
                if key not in self:
                    self[key] = value

    # -- the part count ----------------------------------------------------------

    def _fix(self, manifest: dict) -> None:
        # One set of settings for all parts, stored at the top (parts store none).
        self._options["max_tries"], self._options["lease"] = settings.resolve(
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

    # -- parts: which, open, drop ----------------------------------------------

    def part_of(self, key: Any) -> int:
        """The index of the part that holds (or would hold) ``key``."""
        return files.part_of_hash(_hash(key), self._n)

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
            files.part_path(self._path, index), **{**options, "max_tries": None, "lease": None}
        )
        part.max_tries = options["max_tries"]
        part.lease = options["lease"]
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

    def _by_part(self, keys: Iterable) -> dict[int, list]:
        groups: dict[int, list] = {}
        n = self._n
        for key in keys:
            groups.setdefault(files.part_of_hash(_hash(key), n), []).append(key)
        return groups

    # -- counts from summaries ----------------------------------------------------

    def _part_stats(self, index: int, exact: bool) -> tuple[dict, int]:
        part = self._open.get(index)
        if part is not None:
            return part.stats(), part.num_tried()
        summary = files.read_summary(self._path, index)
        if summary is not None and (
            not exact
            or summary.get("as_of")
            == files.journal_state(files.part_path(self._path, index))
        ):
            return summary["stats"], summary.get("tried", 0)
        with self._visiting(index) as part:
            if part is None:
                return _EMPTY_STATS, 0  # never written
            self._summarize(index, part)
            return part.stats(), part.num_tried()

    def _totals(self, exact: bool = False) -> dict:
        totals = dict(_EMPTY_STATS, tries={}, leased_by={}, tried=0)
        for index in range(self._n):
            stats, tried = self._part_stats(index, exact)
            _add_stats(totals, stats)
            totals["tried"] += tried
        hist = totals["tries"]
        totals["tries"] = dict(sorted(hist.items(), key=lambda kv: (str(type(kv[0])), kv[0])))
        totals["leased_by"] = dict(sorted(totals["leased_by"].items()))
        totals["rate"], totals["eta"] = pace(totals, time.time())
        return totals

    def stats(self, exact: bool = False) -> dict:
        """Where the job stands, summed over the parts (see
        :meth:`ProgressTracker.stats`). Each part not open here counts as of
        its last summary, written whenever a process that changed the part
        leaves it (and every 10 s while it writes); ``exact=True`` counts
        again every part whose journal grew since its summary."""
        totals = self._totals(exact)
        del totals["tried"]
        return totals

    def __len__(self) -> int:
        return self._totals()["total"]

    def num_done(self) -> int:
        """How many tasks are done, from the parts' summaries (see :meth:`stats`)."""
        return self._totals()["done"]

    def num_tried(self) -> int:
        """How many tasks were tried at least once (from the parts' summaries)."""
        return self._totals()["tried"]

    def num_aborted(self) -> int:
        """How many tasks are aborted (from the parts' summaries)."""
        return self._totals()["aborted"]

    def _fraction(self, name: str) -> float:
        totals = self._totals()
        return totals[name] / totals["total"] if totals["total"] else 0.0

    def fraction_done(self) -> float:
        return self._fraction("done")

    def fraction_tried(self) -> float:
        return self._fraction("tried")

    def fraction_aborted(self) -> float:
        return self._fraction("aborted")

    percent = staticmethod(ProgressTracker.percent)

    def percent_done(self, decimals: int = 2) -> str:
        return self.percent(self.fraction_done(), decimals)

    def percent_tried(self, decimals: int = 2) -> str:
        return self.percent(self.fraction_tried(), decimals)

    def percent_aborted(self, decimals: int = 2) -> str:
        return self.percent(self.fraction_aborted(), decimals)

    # -- the mapping ---------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        if not self._n:
            raise KeyError(key)
        return self._for(key)[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._for(key)[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._for(key)[key]

    def __contains__(self, key: object) -> bool:
        found = self._peek(key)
        if found is not None:
            return found[0]
        return key in self._for(key)

    def __iter__(self) -> Iterator:
        """Every key, part by part; within a part, in the order added."""
        for index in range(self._n):
            with self._visiting(index) as part:
                keys = list(part) if part is not None else []
            yield from keys

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        items = dict(*args, **kwargs)
        for index, keys in self._by_part(items).items():
            self._part(index).update({k: items[k] for k in keys})

    def to_dict(self) -> dict:
        """Every task and its record, as a plain dict (loads every part in turn)."""
        out = {}
        for index in range(self._n):
            with self._visiting(index) as part:
                if part is not None:
                    out.update(part.to_dict())
        return out

    copy = to_dict

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
        asked = self._peeked.get(index, 0) + 1
        if asked > _PEEKS_BEFORE_LOADING and files.exists(files.part_path(self._path, index)):
            return None  # many keys of this part: loading it is cheaper now
        self._peeked[index] = asked
        return self._peeker.peek(files.part_path(self._path, index), orjson.dumps(key))

    # -- tasks, one key --------------------------------------------------------

    def done(self, key: Any) -> bool:
        """Whether ``key`` is done (False if it is not a task). Answered from the
        part's files when the part is not loaded here, without loading it."""
        found = self._peek(key)
        if found is not None:
            rec = found[1]
            return found[0] and type(rec) is dict and bool(rec.get("_done"))
        return self._for(key).done(key)

    check = done

    def tries(self, key: Any) -> int:
        found = self._peek(key)
        if found is not None and found[0] and type(found[1]) is dict:
            return found[1].get("_tries", 0)
        return self._for(key).tries(key)

    def aborted(self, key: Any) -> bool:
        found = self._peek(key)
        if found is not None and found[0] and type(found[1]) is dict:
            return bool(found[1].get("_aborted"))
        return self._for(key).aborted(key)

    # -- tasks, several keys -------------------------------------------------------

    def add_many(self, keys: Iterable) -> None:
        """Add every key as a new task; if any is there already, raise
        :class:`~tastypy.DuplicateKeyError` and add none (checked in every
        part first; a key another process adds meanwhile can still make the
        add of its part fail alone). On a tracker made with ``shards="auto"``,
        the first one fixes the part count (see ``docs/parts.md``)."""
        keys = list(keys)
        if keys:
            self._settle(len(keys))
        groups = self._by_part(keys)
        for index, group in groups.items():
            with self._visiting(index) as part:
                taken = None if part is None else next((k for k in group if k in part), None)
                if taken is None and len(set(group)) < len(group):
                    taken = next(k for k in group if group.count(k) > 1)
            if taken is not None:
                raise DuplicateKeyError(
                    f"{taken!r} is already a task of {self._path}, or given twice; nothing "
                    "was added. Use add_many_if_absent to skip the tasks already there."
                )
        self._add_groups(groups, "add_many")

    def add_many_if_absent(self, keys: Iterable) -> None:
        """Add the keys that are not tasks yet (the first call on a tracker made
        with ``shards="auto"`` fixes its part count, as :meth:`add_many` does)."""
        keys = list(keys)
        if keys:
            self._settle(len(keys))
        self._add_groups(self._by_part(keys), "add_many_if_absent")

    def _add_groups(self, groups: dict, how: str) -> None:
        for index in sorted(groups):
            with self._visiting(index, create=True) as part:
                getattr(part, how)(groups[index])

    def _each_part(self, keys: Iterable, how: Callable[[ProgressTracker, list], Any]) -> list:
        out: list = []
        for index, group in self._by_part(_keys(keys)).items():
            result = how(self._part(index), group)
            if result:
                out.extend(result)
        return out

    def release(self, keys: Iterable, *, tried: bool = False) -> list:
        """End this process's leases of ``keys`` (see :meth:`ProgressTracker.release`)."""
        return self._each_part(keys, lambda p, g: p.release(g, tried=tried))

    def renew(self, keys: Iterable, lease: float | None = None) -> list:
        """Extend this process's leases of ``keys`` (see :meth:`ProgressTracker.renew`)."""
        return self._each_part(keys, lambda p, g: p.renew(g, lease))

    def bump(self, keys: Iterable, lease: float = 0) -> list:
        """Move tasks ahead (see :meth:`ProgressTracker.bump`)."""
        return self._each_part(keys, lambda p, g: p.bump(g, lease))

    def retry(self, keys: Iterable) -> list:
        """Give the tasks their tries back (see :meth:`ProgressTracker.retry`)."""
        return self._each_part(keys, lambda p, g: p.retry(g))

    def end_leases(
        self, holder: str | None = None, *, expired: bool = False, keys: Iterable | None = None
    ) -> list:
        """End other processes' leases now (see :meth:`ProgressTracker.end_leases`);
        without ``keys``, in every part."""
        if keys is not None:
            return self._each_part(keys, lambda p, g: p.end_leases(holder, expired=expired, keys=g))
        out: list = []
        for index in range(self._n):
            with self._visiting(index) as part:
                if part is not None:
                    out += part.end_leases(holder, expired=expired)
        return out

    def errors(self) -> dict:
        """The last error of each task not done whose last attempt raised
        (see :meth:`ProgressTracker.errors`), part by part."""
        out: dict = {}
        for index in range(self._n):
            with self._visiting(index) as part:
                if part is not None:
                    out.update(part.errors())
        return out

    def lease_info(self, keys: Iterable | None = None) -> dict:
        """Leases of ``keys``, or of every task with one (visits every part)."""
        out: dict = {}
        if keys is not None:
            for index, group in self._by_part(_keys(keys)).items():
                out.update(self._part(index).lease_info(group))
            return out
        for index in range(self._n):
            with self._visiting(index) as part:
                if part is not None:
                    out.update(part.lease_info())
        return out

    # -- claiming ----------------------------------------------------------------

    def claim(self, n: int = 1, *, lease: float | None = None) -> list:
        """Lease up to ``n`` tasks to this process (see :meth:`ProgressTracker.claim`).

        Parts are visited one at a time, from where this process last found
        work (at first, a part chosen by this process's identity, so workers
        start apart), each loaded only while it is visited; parts whose
        up-to-date summary says every task is finished are skipped unread.
        The keys come from as few parts as possible, in each part's claim
        order. An empty list means no part has anything to claim now.
        """
        if type(n) is not int or n < 0:
            raise InvalidArgumentError(f"n must be an int >= 0 (how many tasks), got {n!r}.")
        got: list = []
        for step in range(self._n if n else 0):
            index = (self._claim_at + step) % self._n
            if index not in self._open and self._finished(index):
                continue
            part = self._part(index)
            self._write_others(part)
            got += part.claim(n - len(got), lease=lease)
            if len(got) >= n:
                self._claim_at = index
                break
            if not self._pinned(part):
                self._drop(index)
        return got

    def todo_keys(self, allow_aborted: bool = False, keys: Iterable | None = None) -> Iterator:
        """The keys of tasks to do (see :meth:`ProgressTracker.todo_keys`), part
        by part; with ``keys``, those of them, part by part and in their
        order within a part."""
        groups = None if keys is None else self._by_part(keys)
        for index in range(self._n) if groups is None else list(groups):
            some = None if groups is None else groups[index]
            with self._visiting(index) as part:
                found = [] if part is None else list(part.todo_keys(allow_aborted, some))
            yield from found

    def _finished(self, index: int) -> bool:
        summary = files.read_summary(self._path, index)
        where = files.part_path(self._path, index)
        if summary is None:
            return files.journal_state(where) is None
        return _finished(summary["stats"]) and summary.get("as_of") == files.journal_state(where)

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


def _per_key(name: str) -> Callable:
    if name in _TRIES:

        def method(self: PartedTracker, key: Any, *args: Any, **kwargs: Any) -> Any:
            part = self._for(key)
            self._write_others(part)
            return getattr(part, name)(key, *args, **kwargs)

    else:

        def method(self: PartedTracker, key: Any, *args: Any, **kwargs: Any) -> Any:
            return getattr(self._for(key), name)(key, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(ProgressTracker, name).__doc__
    return method


#: Per-key methods that may grant a try: in one store, a granted try writes
#: every change made before it (a worker's last mark_done), so the same is
#: done for the changes waiting in the other parts loaded here.
_TRIES: Final = frozenset({"try_it", "attempt", "should_try_add"})

#: Methods that act on one key: the key's part answers.
_PER_KEY: Final = (
    "add",
    "add_if_absent",
    "mark_done",
    "mark_not_done",
    "increment_tries",
    "decrement_tries",
    "reset_tries",
    "abort",
    "unabort",
    "should_do",
    "should_do_add",
    "should_try",
    "should_try_add",
    "try_it",
    "attempt",
    "mark_dirty",
    "sync_key",
)
for _name in _PER_KEY:
    setattr(PartedTracker, _name, _per_key(_name))


def _per_part_iter(name: str) -> Callable:
    def method(self: PartedTracker, *args: Any, **kwargs: Any) -> Iterator:
        for index in range(self._n):
            with self._visiting(index) as part:
                found = [] if part is None else list(getattr(part, name)(*args, **kwargs))
            yield from found

    method.__name__ = method.__qualname__ = name
    method.__doc__ = (getattr(ProgressTracker, name).__doc__ or "") + " (Part by part.)"
    return method


for _name in (
    "failed_keys",
    "todo_items",
    "todo_values",
    "try_keys",
    "try_items",
    "try_values",
    "aborted_keys",
    "aborted_items",
    "aborted_values",
):
    setattr(PartedTracker, _name, _per_part_iter(_name))


def _keys(keys: Any) -> list:
    if isinstance(keys, (str, int)) and not isinstance(keys, bool):
        return [keys]
    return list(keys)


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
