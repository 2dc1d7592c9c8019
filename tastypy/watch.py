"""``tastypy watch PATH``: a live progress bar of a job other processes run.

It opens the tracker as any process does, and every ``interval`` seconds
takes in what the workers wrote (a tracker in parts: reads its parts'
summaries) and moves a tqdm bar (a plain line without tqdm, or with
``--plain``) until every task is done, failed or aborted, or Ctrl-C. It
writes nothing: it may watch while workers on other hosts run.

This module is a command, so it prints; the library itself never does.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any, Final

#: A full count (``stats()``, a pass over every record) is made at most
#: once per this many times the last one took, so that watching a large
#: tracker does not take a core; done / total are read every interval.
_STATS_SHARE: Final = 10


def watch(tracker: Any, interval: float, plain: bool = False, as_json: bool = False) -> int:
    """Show ``tracker``'s progress until it is finished (exit status 0) or
    Ctrl-C (130); closes the tracker. With ``as_json``, print its last
    :meth:`stats` as one JSON document at the end."""
    bar = None
    status = 0
    stats: dict = {}
    try:
        view = _View(tracker)
        stats = view.look()
        # The bar starts where the job stands: its rate is of what follows.
        bar = None if plain else _tqdm(stats)
        while True:
            if bar is not None:
                _move(bar, stats)
            else:
                _line(stats)
            if _finished(stats):
                break
            time.sleep(interval)
            stats = view.look()
    except KeyboardInterrupt:
        status = 130
    finally:
        if bar is not None:
            bar.close()
        tracker.close()
    if as_json:
        import orjson

        option = orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
        sys.stdout.write(orjson.dumps(stats, option=option).decode())
    return status


class _View:
    """The tracker's counts as of now, fresh every look, a full count now and then."""

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.parted = hasattr(tracker, "parts")
        self.stats: dict = {}
        self.next_full = 0.0

    def look(self) -> dict:
        tracker = self.tracker
        now = time.monotonic()
        if self.parted or now >= self.next_full or not self.stats:
            if not self.parted:
                tracker.refresh()
            self.stats = dict(tracker.stats())
            took = time.monotonic() - now
            self.next_full = time.monotonic() + _STATS_SHARE * took
            return self.stats
        tracker.refresh()
        # Between full counts: done and total are exact, the rest as counted last.
        stats = dict(self.stats)
        done, total = tracker.num_done(), len(tracker)
        stats["todo"] += (total - stats["total"]) - (done - stats["done"])
        stats["done"], stats["total"] = done, total
        return stats


def _finished(stats: dict) -> bool:
    left = stats["total"] - stats["done"] - stats["failed"] - stats["aborted"]
    return stats["total"] > 0 and left <= 0


def _tqdm(stats: dict) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=stats["total"],
        initial=stats["done"],
        unit="task",
        desc="done",
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
        mininterval=0,
    )


def _move(bar: Any, stats: dict) -> None:
    if bar.total != stats["total"]:
        bar.total = stats["total"]
    bar.set_postfix(
        failed=stats["failed"],
        leased=stats["leased"],
        holders=len(stats.get("leased_by") or {}),
        refresh=False,
    )
    if stats["done"] != bar.n:
        bar.update(stats["done"] - bar.n)
    else:
        bar.refresh()


def _line(stats: dict) -> None:
    total, done = stats["total"], stats["done"]
    share = 100 * done / total if total else 0.0
    rate = stats.get("rate")
    eta = stats.get("eta")
    pace = f", {rate:,.1f} tasks/s" if rate else ""
    if eta:
        pace += f", ETA {datetime.timedelta(seconds=round(eta))}"
    sys.stderr.write(
        f"tastypy: {done:,}/{total:,} done ({share:.1f} %), {stats['failed']:,} failed, "
        f"{stats['leased']:,} leased by {len(stats.get('leased_by') or {}):,} holder(s){pace}\n"
    )
    sys.stderr.flush()
