"""The tracker's counters: done, tried and aborted tasks, kept as records
change (each record's share is a few bits, :func:`_contrib`), and what is
read from them: ``num_*``, ``fraction_*``, ``percent_*`` and :meth:`stats`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any, Final

from tastypy import records
from tastypy.tracker._common import _gone_memo

# A record's share of the counters, as bits: done, tried (at least once),
# aborted. Counters are sums of these over the records.
_DONE: Final = 1
_TRIED: Final = 2
_ABORTED: Final = 4

#: The rate in :meth:`stats` is of the tasks done in this many seconds
#: before now (by their ``_done_at`` time).
RATE_WINDOW: Final = 600.0

#: The update ages :meth:`stats` counts tasks past: a day, a week.
_DAY: Final = 86400.0
_WEEK: Final = 7 * _DAY


def _iso(seconds: float) -> str:
    """A time as :mod:`attempts` writes ``_ended``: UTC, ISO 8601, to the
    millisecond, so that times compare as text."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def _seconds(text: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def pace(stats: dict, now: float) -> tuple[float | None, float | None]:
    """``(rate, eta)`` of a :meth:`~CountersMixin.stats` dict at ``now``:
    tasks done per second over the last :data:`RATE_WINDOW` seconds (from
    ``recent_done`` and ``recent_since``), and the seconds the tasks left
    to run (``todo``, ``in_progress`` and ``due``) take at that rate. None
    where the records tell no time (no task done lately)."""
    left = stats["todo"] + stats["in_progress"] + stats.get("due", 0)
    since = _seconds(stats.get("recent_since")) if stats.get("recent_since") else None
    if not stats.get("recent_done") or since is None or now - since <= 0:
        return None, (0.0 if not left else None)
    rate = stats["recent_done"] / (now - since)
    return round(rate, 3), round(left / rate, 1)


def _out_of_tries(rec: dict, max_tries: int) -> bool:
    """Whether the task of ``rec`` was tried ``max_tries`` times (0: never)."""
    tries = rec.get("_tries", 0)
    return bool(max_tries) and type(tries) is int and tries >= max_tries


def _contrib(rec: Any) -> int:
    """The counter bits of one record (0 for anything that is not a record)."""
    try:
        return (
            (_DONE if rec["_done"] else 0)
            | (_TRIED if rec["_tries"] > 0 else 0)
            | (_ABORTED if rec["_aborted"] else 0)
        )
    except (KeyError, TypeError, IndexError):
        return _contrib_lenient(rec)


def _contrib_lenient(rec: Any) -> int:
    # A record damaged by hand or by a change in place: count what is there.
    if not records.is_record(rec):
        return 0
    tries = rec.get("_tries")
    tried = type(tries) in (int, float, bool) and tries > 0
    return (
        (_DONE if rec.get("_done") else 0)
        | (_TRIED if tried else 0)
        | (_ABORTED if rec.get("_aborted") else 0)
    )


class _States:
    """The counts of :meth:`CountersMixin.stats` by state, by number of
    tries and by lease holder, gathered one record at a time."""

    __slots__ = ("max_tries", "now", "gone", "done", "aborted", "failed", "running",
                 "leased", "expired", "tries", "holders")  # fmt: skip

    def __init__(self, max_tries: int, now: float):
        self.max_tries = max_tries
        self.now = now
        self.gone = _gone_memo()
        self.done = self.aborted = self.failed = self.running = 0
        self.leased = self.expired = 0
        self.tries: dict = {}
        self.holders: dict = {}

    def add(self, rec: dict) -> None:
        tries = rec.get("_tries", 0)
        self.tries[tries] = self.tries.get(tries, 0) + 1
        if rec.get("_done"):
            self.done += 1
            return
        live = False
        if type(rec.get("_lease_until")) in (int, float):
            live = records.lease_runs(rec, records.NOBODY, self.now, self.gone)
            if live:
                self.leased += 1
                holder = rec.get("_holder")
                if type(holder) is str:
                    self.holders[holder] = self.holders.get(holder, 0) + 1
            elif rec.get("_holder") is not None:
                self.expired += 1
        if rec.get("_aborted"):
            self.aborted += 1
        elif _out_of_tries(rec, self.max_tries) and not live:
            self.failed += 1
        elif "_started" in rec and "_ended" not in rec:
            self.running += 1

    def figures(self, total: int) -> dict:
        return {
            "total": total,
            "done": self.done,
            "todo": total - self.done - self.aborted - self.failed - self.running,
            "failed": self.failed,
            "aborted": self.aborted,
            "in_progress": self.running,
            "leased": self.leased,
            "expired": self.expired,
            "tries": dict(sorted(self.tries.items(), key=lambda kv: (str(type(kv[0])), kv[0]))),
            "leased_by": dict(sorted(self.holders.items())),
        }


class _Ages:
    """The update-age figures of :meth:`CountersMixin.stats`, gathered one
    record at a time."""

    __slots__ = ("now", "redo", "window", "window_text", "due", "day", "week",
                 "oldest", "newest", "recent", "since", "last")  # fmt: skip

    def __init__(self, now: float, redo: float | None):
        self.now = now
        self.redo = redo
        self.window = now - RATE_WINDOW
        # An _ended time compares as text (see _iso): parsed only when recent.
        self.window_text = _iso(self.window)
        self.due = self.day = self.week = self.recent = 0
        self.oldest = self.newest = self.since = self.last = None

    def add(self, rec: dict) -> None:
        done_at = rec.get("_done_at")
        if type(done_at) not in (float, int):
            done_at = None
        else:
            age = self.now - done_at
            if age >= _DAY:
                self.day += 1
                if age >= _WEEK:
                    self.week += 1
            if self.oldest is None or done_at < self.oldest:
                self.oldest = done_at
            if self.newest is None or done_at > self.newest:
                self.newest = done_at
        if not rec.get("_done"):
            return
        redo = self.redo
        if redo is not None and (done_at is None or done_at <= redo or "_lease_until" in rec):
            self.due += 1
        if done_at is None:
            ended = rec.get("_ended")
            if type(ended) is str and ended >= self.window_text:
                done_at = _seconds(ended)
        if done_at is not None and done_at >= self.window:
            self.recent += 1
            if self.since is None or done_at < self.since:
                self.since = done_at
            if self.last is None or done_at > self.last:
                self.last = done_at

    def figures(self) -> dict:
        def text(seconds: float | None) -> str | None:
            return None if seconds is None else _iso(seconds)

        return {
            "due": self.due,
            "oldest_done": text(self.oldest),
            "newest_done": text(self.newest),
            "not_updated_1d": self.day,
            "not_updated_7d": self.week,
            "recent_done": self.recent,
            "recent_since": text(self.since),
            "last_done": text(self.last),
        }


class CountersMixin:
    """How many tasks are done, tried, aborted: kept up to date, and read."""

    def _init_counters(self) -> None:
        """Start with no count (the load makes them) and no record lent."""
        self._n_done = 0
        self._n_tried = 0
        self._n_aborted = 0
        # Records handed out by a read, with their counter bits at that
        # moment: the caller may change them in place, so they are counted
        # again (settled) before a counter is read.
        self._lent: dict = {}
        self._recount = False
        self._epoch = 0  # bumped by every full count

    # -- keeping the counts ----------------------------------------------------

    def _shift(self, old: int, new: int) -> None:
        if old != new:
            self._n_done += (new & _DONE) - (old & _DONE)
            self._n_tried += ((new & _TRIED) - (old & _TRIED)) >> 1
            self._n_aborted += ((new & _ABORTED) - (old & _ABORTED)) >> 2

    def _count_all(self) -> None:
        self._lent.clear()
        self._recount = False
        self._epoch += 1
        # A list first: the heartbeat's renewal, in another thread, may take
        # in others' new records meanwhile (a dict must not grow while walked).
        values = list(self._data.values())
        try:
            done = sum(1 for r in values if r["_done"])
            tried = sum(1 for r in values if r["_tries"] > 0)
            aborted = sum(1 for r in values if r["_aborted"])
        except (KeyError, TypeError, IndexError):
            done = tried = aborted = 0
            for r in values:
                c = _contrib(r)
                done += c & _DONE
                tried += (c & _TRIED) >> 1
                aborted += (c & _ABORTED) >> 2
        self._n_done = done
        self._n_tried = tried
        self._n_aborted = aborted

    def _settle(self) -> None:
        """Count again the records handed out since the last time."""
        if (self._backlog or self._stale) and not self._closing:
            self._take_backlog()
        if self._recount:
            self._count_all()
            return
        lent = self._lent
        if lent:
            data = self._data
            for key, c in list(lent.items()):
                self._shift(c, _contrib(data.get(key)))
            lent.clear()

    def _settle_key(self, key: Any, rec: Any) -> None:
        self._shift(self._lent.pop(key), _contrib(rec))

    # -- reading them ----------------------------------------------------------

    def num_done(self) -> int:
        """How many tasks are done (``len(tracker)`` is how many there are)."""
        self._settle()
        return self._n_done

    def num_tried(self) -> int:
        """How many tasks were tried at least once."""
        self._settle()
        return self._n_tried

    def num_aborted(self) -> int:
        """How many tasks are aborted."""
        self._settle()
        return self._n_aborted

    def _fraction(self, n: int) -> float:
        total = len(self._data)
        return n / total if total else 0.0

    def fraction_done(self) -> float:
        """Done tasks as a fraction of all (0.0 when there are none)."""
        return self._fraction(self.num_done())

    def fraction_tried(self) -> float:
        """Tasks tried at least once, as a fraction of all (0.0 when there are none)."""
        return self._fraction(self.num_tried())

    def fraction_aborted(self) -> float:
        """Aborted tasks as a fraction of all (0.0 when there are none)."""
        return self._fraction(self.num_aborted())

    @staticmethod
    def percent(fraction: float, decimals: int = 2) -> str:
        """``fraction`` as a percentage string: ``percent(0.347) == '34.70 %'``."""
        return f"{100 * fraction:.{decimals}f} %"

    def percent_done(self, decimals: int = 2) -> str:
        """The share of done tasks, e.g. ``'34.70 %'``."""
        return self.percent(self.fraction_done(), decimals)

    def percent_not_done(self, decimals: int = 2) -> str:
        """The share of tasks not done, e.g. ``'65.30 %'``."""
        return self.percent(1 - self.fraction_done() if self._data else 0.0, decimals)

    def percent_tried(self, decimals: int = 2) -> str:
        """The share of tasks tried at least once."""
        return self.percent(self.fraction_tried(), decimals)

    def percent_not_tried(self, decimals: int = 2) -> str:
        """The share of tasks never tried."""
        return self.percent(1 - self.fraction_tried() if self._data else 0.0, decimals)

    def percent_aborted(self, decimals: int = 2) -> str:
        """The share of aborted tasks."""
        return self.percent(self.fraction_aborted(), decimals)

    def percent_not_aborted(self, decimals: int = 2) -> str:
        """The share of tasks not aborted."""
        return self.percent(1 - self.fraction_aborted() if self._data else 0.0, decimals)

    def stats(self) -> dict:
        """Where the job stands, as a plain dict.

        Every task is in exactly one of ``done``, ``aborted`` (and not
        done), ``failed`` (tried ``max_tries`` times without success, and
        not running its last try now),
        ``in_progress`` (an attempt started by :meth:`attempts` that has not
        ended: running now, or cut short by a crash) and ``todo`` (the
        rest: still to try). ``tries`` maps a number of tries to how many
        tasks have it. ``due`` counts the done tasks due again
        (:attr:`redo_after`; 0 without it).

        Across those, among the tasks not done: ``leased`` counts the ones
        no other process may take now (leased to a process, or bumped into
        the future, see ``docs/leases.md``), ``expired`` the ones whose
        holder let its lease run out (or is known to have died) without
        ending it: left by a dead worker, or one that runs late.
        ``leased_by`` maps each holder to its leased tasks.

        Update ages, by when each task was last done (``_done_at``, doloop's
        ``stats``): ``oldest_done`` and ``newest_done`` (UTC, ISO 8601, to
        the millisecond; None when no task has a time), and
        ``not_updated_1d`` / ``not_updated_7d``, how many tasks were last
        done a day / a week ago or more (tasks never done are not counted:
        they are in ``todo``).

        ``rate`` is the tasks done per second over the last ten minutes, by
        the times :meth:`mark_done` and the attempts record (``_done_at``;
        ``_ended`` for records older than it): ``recent_done`` tasks since
        ``recent_since``; ``last_done`` is the newest. ``eta`` is the
        seconds the tasks left to run (``todo``, ``in_progress`` and
        ``due``) would take at that rate; both None when no task was done
        lately. As this process knows them: :meth:`refresh` first to see
        what others wrote.
        """
        now = self._clock()
        states = _States(self._max_tries, now)
        ages = _Ages(now, self._redo(now))
        for rec in list(self._data.values()):  # see _count_all
            if records.is_record(rec):
                states.add(rec)
                ages.add(rec)
        stats = states.figures(len(self._data))
        stats.update(ages.figures())
        stats["rate"], stats["eta"] = pace(stats, now)
        return stats

    # -- what failed -----------------------------------------------------------

    def failed_keys(self) -> Iterator:
        """The keys of failed tasks, in order: tried :attr:`max_tries` times
        without success (not done, not aborted, and not running its last
        try now under a live lease), as :meth:`stats` counts them.
        ``tastypy failed PATH`` lists them, with :meth:`errors`."""
        max_tries = self._max_tries
        if not max_tries:
            return
        data = self._data
        now = self._clock()
        gone = _gone_memo()
        for key in list(data):
            rec = data.get(key)
            if (
                records.is_record(rec)
                and not rec.get("_done")
                and not rec.get("_aborted")
                and _out_of_tries(rec, max_tries)
                and not records.lease_runs(rec, records.NOBODY, now, gone)
            ):
                yield key

    def errors(self) -> dict:
        """``{key: error}`` for every task not done whose last attempt raised
        (failed or still to retry): the ``_error`` that :meth:`attempts` and
        :meth:`run` record (``type``, ``message``, ``traceback``, ``time``),
        in order. As this process knows them: :meth:`refresh` first to see
        what others wrote."""
        out = {}
        for key, rec in list(self._data.items()):  # see _count_all
            if records.is_record(rec) and not rec.get("_done") and type(rec.get("_error")) is dict:
                out[key] = rec["_error"]
        return out
