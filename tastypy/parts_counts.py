"""A parted tracker's counts: done, tried, aborted and the rest, summed over
its parts, each part not loaded here counted from its last summary.

A mixin of :class:`~tastypy.parts.PartedTracker` (which lists the others).
A summary is written by the part's writer under its lock and names the
journal length it counts, so one ``stat`` tells a stale one (see
:meth:`~tastypy.parts_loading.LoadingMixin._summarize`).
"""

from __future__ import annotations

import time
from typing import Any, Final

from tastypy.storage import parts as files
from tastypy.tracker import ProgressTracker
from tastypy.tracker.counters import pace

__all__ = ["CountsMixin"]

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
    "due": 0,
    "oldest_done": None,
    "newest_done": None,
    "not_updated_1d": 0,
    "not_updated_7d": 0,
    "recent_done": 0,
    "recent_since": None,
    "last_done": None,
    "rate": None,
    "eta": None,
}


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
        elif name in ("recent_since", "last_done", "oldest_done", "newest_done"):
            # Times as text (ISO 8601, UTC): the earliest, the latest.
            earliest = name in ("recent_since", "oldest_done")
            if value is not None and (into[name] is None or (value < into[name]) == earliest):
                into[name] = value
        elif name in ("rate", "eta"):
            continue  # of the sums, once they are made
        elif name in into:
            into[name] += value


class CountsMixin:
    """How many tasks are done, tried, aborted: summed over the parts."""

    # Set by PartedTracker; from ManifestMixin and LoadingMixin.
    _path: str
    _open: dict
    _n: int
    _visiting: Any
    _summarize: Any

    def _part_stats(self, index: int, exact: bool) -> tuple[dict, int]:
        part = self._open.get(index)
        if part is not None:
            return part.stats(), part.num_tried()
        summary = files.read_summary(self._path, index)
        if summary is not None and (
            not exact
            or summary.get("as_of") == files.journal_state(files.part_path(self._path, index))
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

    def _finished(self, index: int) -> bool:
        summary = files.read_summary(self._path, index)
        where = files.part_path(self._path, index)
        if summary is None:
            return files.journal_state(where) is None
        return _finished(summary["stats"]) and summary.get("as_of") == files.journal_state(where)

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
