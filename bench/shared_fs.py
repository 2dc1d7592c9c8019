"""Workers on two hosts over one tracker, on shared filesystems, run after run.

Run from the repository root, as root (it mounts filesystems)::

    python -m bench.shared_fs --runs 20
    python -m bench.shared_fs --runs 5 --rig glusterfs --tasks 600

Each run is the scenario of ``tests/test_shared_fs.py``
(``tests/sharedfs_work.py``'s ``run_tracker``): four workers, two through
each of two mounts of one directory, start together on a new tracker, add
every task if absent and run the manual's ``try_it`` / ``mark_done`` loop;
one is killed (SIGKILL) mid-run; once the other three exit, one more worker
runs what is left (after the dead worker's lease ends). Rigs
(``tests/sharedfs.py``):

``glusterfs``
    a GlusterFS volume on this machine, mounted twice with stock options;
``bindfs-defaults``
    two bindfs mounts with bindfs's default options (FUSE caches on);
``bindfs-coherent``
    two bindfs mounts with the FUSE caches off, as NFS's close-to-open gives;
``local``
    one local directory, both "hosts" on it: the reference.

The table counts, over all runs of a rig: tasks finished twice
(*duplicated*), tasks not done at the end (*lost*), problems ``tastypy
check`` found in the files (*torn lines*), and workers other than the
killed one that exited non-zero, wrote to stderr or hung (*crashes*);
*bad runs* is how many runs had any of them. *one host only* counts runs
where the workers of one mount finished nothing (they waited at the lock
until the other mount's were done): not wrong, but then the two hosts did
not write at once. *tasks/s* is the median of
tasks / (time from the start to the exit of the last of the three workers
left running). Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

# The rigs and the scenario live with the tests, which run them too.
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)
import sharedfs  # noqa: E402
import sharedfs_work  # noqa: E402

RIG_NAMES: Final = ("glusterfs", "bindfs-defaults", "bindfs-coherent", "local")


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def run_rig(name: str, runs: int, tasks: int, lease: float, scratch: Path) -> dict[str, Any]:
    """``runs`` runs of the scenario on the rig ``name``; the counts of what went wrong."""
    row: dict[str, Any] = {
        "rig": name,
        "runs": runs,
        "bad_runs": 0,
        "duplicated": 0,
        "lost": 0,
        "torn": 0,
        "crashes": 0,
        "one_host": 0,
        "rates": [],
    }
    try:
        with sharedfs.RIGS[name](scratch / name) as rig:
            for i in range(runs):
                logs = scratch / f"{name}-logs-{i}"
                logs.mkdir()
                outcome = sharedfs_work.run_tracker(
                    rig.subdir(f"run{i}"), logs, tasks=tasks, lease=lease
                )
                _count(row, outcome, tasks)
                _log(
                    f"{name} run {i + 1}/{runs}: {'ok' if outcome.ok else 'BAD'}, "
                    f"{outcome.seconds:.1f} s"
                )
                if not outcome.ok:
                    _log(outcome.report())
    except sharedfs.RigError as exc:
        raise SystemExit(f"{name}: {exc}") from exc
    return row


def _count(row: dict[str, Any], outcome: sharedfs_work.Outcome, tasks: int) -> None:
    row["bad_runs"] += not outcome.ok
    row["duplicated"] += len(outcome.duplicated)
    row["lost"] += len(outcome.lost)
    row["torn"] += len(outcome.torn)
    row["crashes"] += len(outcome.crashes)
    row["one_host"] += len(outcome.ran_on) < 2
    row["rates"].append(tasks / outcome.seconds if outcome.seconds else 0.0)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| rig | runs | bad runs | duplicated | lost | torn lines | crashes | one host only "
        "| tasks/s (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = statistics.median(r["rates"]) if r["rates"] else 0.0
        lines.append(
            f"| {r['rig']} | {r['runs']} | {r['bad_runs']} | {r['duplicated']} | {r['lost']} | "
            f"{r['torn']} | {r['crashes']} | {r['one_host']} | {rate:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per rig")
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--lease", type=float, default=4.0, help="the workers' lease, seconds")
    parser.add_argument("--rig", choices=RIG_NAMES, action="append", help="default: all")
    parser.add_argument("--dir", default=None, help="where to make scratch directories")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="shared-fs-", dir=args.dir))
    try:
        for name in args.rig or RIG_NAMES:
            rows.append(run_rig(name, args.runs, args.tasks, args.lease, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(table(rows))
    print()
    print(
        f"{args.tasks} tasks, 4 workers (2 per mount, one killed after {args.tasks // 24} "
        f"tasks), lease {args.lease:g} s; `python -m bench.shared_fs --runs {args.runs}`."
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
