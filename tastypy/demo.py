"""``python -m tastypy demo [PATH]``: a resumable job over simulated tasks.

Each task sleeps for a fraction of a millisecond (the "work"); about 5 % of
them fail now and then (a flaky network) and 1 % always fail (a corrupt
input). Every task gets at most three tries. Kill the job with Ctrl-C, or
with ``kill -9``, and run the same command again: it carries on where it
stopped, and ends with a summary from ``tracker.stats()``.

This module is a command, so it prints; the library itself never does.
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import Any, Final

from tastypy.tracker import ProgressTracker

MAX_TRIES: Final = 3

#: Shares of tasks that fail now and then, and always.
_FLAKY: Final = 0.05
_BROKEN: Final = 0.01

#: Simulated work per task, in seconds (about 12 s for 20,000 tasks).
_WORK: Final = (0.0002, 0.0008)


class SimulatedError(Exception):
    """What a simulated task raises when it fails."""


def _work(key: str, attempt: int) -> dict[str, Any]:
    """Pretend to process ``key``; fail as the task's fate says."""
    fate = random.Random(key).random()
    luck = random.Random(f"{key}/{attempt}")
    time.sleep(luck.uniform(*_WORK))
    if fate < _BROKEN:
        raise SimulatedError("input file is corrupt (simulated)")
    if fate < _BROKEN + _FLAKY and luck.random() < 0.5:
        raise SimulatedError("connection reset by peer (simulated)")
    return {"value": luck.randrange(10**6), "pid": os.getpid()}


def _left(tracker: ProgressTracker) -> int:
    return sum(1 for _ in tracker.todo_keys())


def run_demo(path: str, tasks: int = 20_000, progress: bool = True) -> int:
    """Run (or resume) the demo job in ``path``; return the exit status."""
    if tasks <= 0:
        print(f"tastypy demo: --tasks must be positive, got {tasks}", file=sys.stderr)
        return 2
    tracker = ProgressTracker(path, max_tries=MAX_TRIES)
    try:
        resumed = len(tracker) > 0
        tracker.add_many_if_absent(f"task-{i:05d}" for i in range(tasks))
        stats = tracker.stats()
        print(
            f"tastypy demo: {stats['total']:,} simulated tasks in {tracker.path}, "
            f"each tried at most {MAX_TRIES} times."
        )
        if resumed:
            print(
                f"Resuming: {stats['done']:,} done, {stats['failed']:,} failed for good, "
                f"{stats['total'] - stats['done'] - stats['failed'] - stats['aborted']:,} to go."
            )
        print(
            "Stop it any time (Ctrl-C, or kill -9) and run the same command again: "
            "it carries on where it stopped.",
            flush=True,
        )
        start = time.monotonic()
        ran = 0
        for round_ in range(1, MAX_TRIES + 1):
            left = _left(tracker)
            if not left:
                break
            if round_ > 1:
                print(f"Round {round_}: trying again the {left:,} tasks that failed.", flush=True)
            for task in tracker.attempts(progress=progress):
                with task:
                    task["result"] = _work(task.key, tracker.tries(task.key))
                ran += 1
        elapsed = time.monotonic() - start
    except KeyboardInterrupt:
        done = tracker.num_done()
        total = len(tracker)
        tracker.close()
        print(
            f"\nInterrupted: {done:,} of {total:,} tasks done. Run the same command again "
            "to carry on.",
            file=sys.stderr,
        )
        return 130
    stats = tracker.stats()
    failures = [
        (key, rec["_error"]) for key, rec in tracker.items() if not rec["_done"] and "_error" in rec
    ]
    tracker.close()
    _summary(path, stats, failures, ran, elapsed)
    return 0


def _summary(path: str, stats: dict, failures: list, ran: int, elapsed: float) -> None:
    rate = f", {ran / elapsed:,.0f} tasks/s" if elapsed > 0 and ran else ""
    print(f"\nRan {ran:,} attempts in {elapsed:.1f} s{rate}.")
    print(f"Summary of {path} (tracker.stats()):")
    rows = [
        ("done", stats["done"], ""),
        ("failed", stats["failed"], f"tried {MAX_TRIES} times without success"),
        ("aborted", stats["aborted"], ""),
        ("to do", stats["todo"], ""),
        ("in progress", stats["in_progress"], ""),
        ("total", stats["total"], ""),
    ]
    for label, count, note in rows:
        print(f"  {label:<12}{count:>8,}" + (f"   ({note})" if note and count else ""))
    tries = ", ".join(f"{count:,} × {n}" for n, count in stats["tries"].items())
    print(f"  tasks × tries: {tries}")
    for key, error in failures[:3]:
        print(f"  e.g. {key}: {error['type']}: {error['message']}")
    if stats["todo"] or stats["in_progress"]:
        print("Run the same command again to carry on.")
    else:
        print(
            "Nothing left to do: running again changes nothing. Delete the directory to start "
            "over; the records are JSON lines you can read with jq or an editor."
        )
