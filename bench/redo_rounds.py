"""A doloop-style freshness loop at scale: ``redo_after`` with 8 workers.

``python -m bench.redo_rounds [--tasks 100k] [--workers 8] [--rounds 3] [--redo 20]``

A tracker of N tasks made with ``redo_after``; then, round after round, 8
fresh worker processes open it and ``claim(100)`` until nothing is due,
"updating" each task (a field changed in place, ``mark_done``) and logging
``key pid start end`` for every update. Between rounds the bench waits
until every task is due again (its ``_done_at`` + ``redo_after``).

Checked afterwards, from the workers' logs and the tracker: every task
updated exactly once per round, no two updates of a task overlapping in
time, none before ``redo_after`` since the task was last done, and the
tracker's count of updates per task equal to the logs'. Printed: tasks/s
per round (first start to last end). Nothing is asserted: the report says
what held.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from typing import Final

from bench.w8_parts import _env, parse_size

WORKER: Final = textwrap.dedent(
    """
    import os, sys, time
    from tastypy import Tracker
    path, log_path = sys.argv[1], sys.argv[2]
    tracker = Tracker(path)  # redo_after as stored with the tracker
    pid = os.getpid()
    print("ready", flush=True)
    sys.stdin.readline()
    with open(log_path, "w") as log:
        while keys := tracker.claim(100):
            for key in keys:
                start = time.time()
                rec = tracker[key]
                rec["updates"] = rec.get("updates", 0) + 1
                tracker.mark_done(key)
                log.write(f"{key} {pid} {start!r} {time.time()!r} {rec['_done_at']!r}\\n")
    tracker.close()
    """
)


def _round(path: str, logs: str, number: int, workers: int) -> tuple[float, float]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, path, os.path.join(logs, f"r{number}-w{i}.log")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for i in range(workers)
    ]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"a worker did not start: {proc.communicate()[1]}")
    began = time.time()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        proc.communicate(timeout=1800)
        if proc.returncode:
            raise SystemExit(f"a worker failed with exit status {proc.returncode}")
    return began, time.time()


def _read_runs(logs: str) -> dict:
    runs: dict = defaultdict(list)
    for name in os.listdir(logs):
        number = int(name[1 : name.index("-")])
        with open(os.path.join(logs, name)) as f:
            for line in f:
                key, pid, start, end, done_at = line.split()
                runs[key].append((float(start), float(end), int(pid), float(done_at), number))
    return runs


def _check(runs: dict, keys: list, rounds: int, redo: float) -> dict:
    once = sum(1 for k in keys if sorted(r[4] for r in runs.get(k, ())) == list(range(rounds)))
    overlaps = early = 0
    for done in runs.values():
        done.sort()
        for (_, end, _, done_at, _), (start2, _, _, _, _) in zip(done, done[1:]):
            overlaps += start2 <= end
            early += start2 < done_at + redo - 0.001
    return {"once_per_round": once, "overlapping": overlaps, "too_early": early}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="100k")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redo", type=float, default=20.0, help="redo_after, seconds")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    n = parse_size(args.tasks)
    from tastypy import Tracker

    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        path, logs = os.path.join(scratch, "fresh.tracker"), os.path.join(scratch, "logs")
        os.mkdir(logs)
        keys = [f"user-{i}" for i in range(n)]
        with Tracker(path, redo_after=args.redo) as tracker:
            tracker.add_many(keys)
        rates = []
        for number in range(args.rounds):
            if number:
                with Tracker(path) as tracker:
                    due = max(tracker[k]["_done_at"] for k in keys) + args.redo
                time.sleep(max(0.0, due - time.time()) + 0.5)
            began, ended = _round(path, logs, number, args.workers)
            rates.append(n / (ended - began))
            print(f"round {number + 1}: {ended - began:.1f} s, {rates[-1]:,.0f} tasks/s",
                  file=sys.stderr)  # fmt: skip
        runs = _read_runs(logs)
        found = _check(runs, keys, args.rounds, args.redo)
        with Tracker(path) as tracker:
            agree = sum(1 for k in keys if tracker[k].get("updates") == len(runs.get(k, ())))
    print("| tasks | workers | rounds | redo_after | tasks/s per round | updated once per round "
          "| overlapping | too early | tracker agrees |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {n:,} | {args.workers} | {args.rounds} | {args.redo:g} s "
        f"| {', '.join(f'{r:,.0f}' for r in rates)} | {found['once_per_round']:,} of {n:,} "
        f"| {found['overlapping']} | {found['too_early']} | {agree:,} of {n:,} |"
    )


if __name__ == "__main__":
    main()
