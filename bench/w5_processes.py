"""W5: many processes sharing one tracker through ``try_it`` / ``mark_done``.

Run from the repository root::

    python -m bench.w5_processes                 # 8 x 25k, local filesystem
    python -m bench.w5_processes --fuse          # also: two bindfs mounts, soft lock
    python -m bench.w5_processes --procs 4 --tasks 5000 --shape shared

Shapes (each a fresh tracker of ``procs x tasks`` keys, added before the
clock starts; every process opens it, waits at a barrier, then runs):

``one``
    One process tries and marks done every key: the reference throughput.
``disjoint``
    DESIGN.md's W5: process *i* takes the keys ``keys[i::procs]``.
``shared``
    What a cluster job array does: every process walks *all* the keys
    (process *i* starting at its own offset, wrapping round) and runs what
    ``try_it`` grants it. Claims and leases must hand every key to exactly
    one process.
``fuse`` (with ``--fuse``)
    ``shared``, with half the processes opening the tracker through one
    bindfs mount of its directory and half through another (two "hosts":
    their flocks do not see each other), ``lock="auto"`` (so the soft lock).
    Needs ``bindfs`` and permission to mount FUSE filesystems.

Each process records the keys it ran; afterwards the tracker is reopened and
the report counts keys *lost* (not done on disk) and *duplicated* (run by
more than one process, or twice). Throughput is keys / (last end - first
start). Nothing here is asserted: the numbers are printed (and written as
JSON with ``--json FILE``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

SHAPES = ("one", "disjoint", "shared")


def _keys(n: int) -> list[str]:
    return [f"task{i:08d}" for i in range(n)]


def _worker(path: str, keys: list, lock: str, barrier: Any, queue: Any) -> None:
    try:
        from tastypy import Tracker

        tracker = Tracker(path, max_tries=3, lock=lock)
        barrier.wait()
        ran = []
        t0 = time.perf_counter()
        for key in keys:
            if tracker.try_it(key):
                ran.append(key)
                tracker.mark_done(key)
        tracker.close()
        queue.put((t0, time.perf_counter(), ran, None))
    except BaseException as exc:  # reported to the parent
        queue.put((0.0, 0.0, [], repr(exc)))
        raise


def _prepare(path: str, keys: list, lock: str) -> None:
    from tastypy import Tracker

    with Tracker(path, max_tries=3, lock=lock) as tracker:
        tracker.add_many(keys)


def _count_done(path: str, keys: list, lock: str) -> int:
    from tastypy import Tracker

    with Tracker(path, max_tries=3, lock=lock) as tracker:
        return sum(1 for k in keys if tracker.done(k))


def run(shape: str, procs: int, tasks: int, base: str, paths: list | None = None) -> dict:
    """One run of ``shape``; ``paths`` (for the FUSE shape) are the tracker's
    path through each mount, used in turn by the processes."""
    n = procs * tasks
    keys = _keys(n)
    path = os.path.join(base, "tracker")
    paths = paths or [path]
    lock = "auto"
    _prepare(paths[0], keys, lock)
    if shape == "one":
        slices = [keys]
    elif shape == "disjoint":
        slices = [keys[i::procs] for i in range(procs)]
    else:
        slices = [keys[i * n // procs :] + keys[: i * n // procs] for i in range(procs)]
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(slices))
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(paths[i % len(paths)], s, lock, barrier, queue))
        for i, s in enumerate(slices)
    ]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    errors = [r[3] for r in results if r[3]]
    if errors:
        raise SystemExit(f"a worker failed: {errors[0]}")
    seconds = max(r[1] for r in results) - min(r[0] for r in results)
    runs = Counter(k for r in results for k in r[2])
    done = _count_done(paths[0], keys, lock)
    return {
        "shape": shape,
        "procs": len(slices),
        "tasks": n,
        "seconds": round(seconds, 3),
        "per_second": round(n / seconds),
        "lost": n - done,
        "never_run": n - len(runs),
        "duplicated": sum(c - 1 for c in runs.values() if c > 1),
    }


def run_fuse(procs: int, tasks: int, base: str) -> list:
    """One process through one mount, then ``procs`` processes through two
    mounts (half on each), ``procs x tasks`` keys each time."""
    rows = []
    # No attribute or name caching: what NFS's close-to-open gives (see
    # tests/test_two_hosts.py).
    with _bindfs_rig(Path(base)) as rig:
        points = [str(p) for p in rig.mounts]
        for label, n_procs, n_tasks, where in (
            ("fuse, 1 mount, soft lock", 1, procs * tasks, points[:1]),
            ("fuse, 2 mounts, soft lock", procs, tasks, points),
        ):
            name = f"tracker-{n_procs}"
            result = run("shared", n_procs, n_tasks, base, [os.path.join(p, name) for p in where])
            result["shape"] = label
            rows.append(result)
    return rows


@contextlib.contextmanager
def _bindfs_rig(base: Path) -> Iterator[Any]:
    from bench.shared_fs import sharedfs

    try:
        with sharedfs.bindfs_rig(base, coherent=True) as rig:
            yield rig
    except sharedfs.RigError as exc:
        raise SystemExit(str(exc)) from exc


def _table(rows: list, one: float | None) -> str:
    lines = [
        "| shape | procs | tasks | seconds | tasks/s | vs one process | lost | never run | dup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{100 * r['per_second'] / one:.0f} %" if one else "-"
        lines.append(
            f"| {r['shape']} | {r['procs']} | {r['tasks']:,} | {r['seconds']} | "
            f"{r['per_second']:,} | {ratio} | {r['lost']} | {r['never_run']} | "
            f"{r['duplicated']} |"
        )
    return "\n".join(lines)


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=25_000, help="tasks per process")
    parser.add_argument("--shape", choices=SHAPES, action="append", help="default: all")
    parser.add_argument("--fuse", action="store_true", help="also two bindfs mounts")
    parser.add_argument("--fuse-tasks", type=int, default=2_000, help="tasks per process there")
    parser.add_argument("--repeat", type=int, default=1, help="keep the fastest of so many runs")
    parser.add_argument("--dir", default=None, help="where to make scratch trackers")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    rows = []
    for shape in args.shape or SHAPES:
        best = None
        for _ in range(args.repeat):
            base = tempfile.mkdtemp(prefix="w5-", dir=args.dir)
            try:
                procs = 1 if shape == "one" else args.procs
                tasks = args.tasks * (args.procs if shape == "one" else 1)
                r = run(shape, procs, tasks, base)
            finally:
                shutil.rmtree(base, ignore_errors=True)
            if best is None or r["seconds"] < best["seconds"]:
                best = r
        rows.append(best)
    if args.fuse:
        base = tempfile.mkdtemp(prefix="w5-fuse-", dir=args.dir)
        try:
            rows.extend(run_fuse(args.procs, args.fuse_tasks, base))
        finally:
            shutil.rmtree(base, ignore_errors=True)
    one = next((r["per_second"] for r in rows if r["shape"] == "one"), None)
    print(_table([r for r in rows if not r["shape"].startswith("fuse")], one))
    fuse = [r for r in rows if r["shape"].startswith("fuse")]
    if fuse:
        print()
        print(_table(fuse, fuse[0]["per_second"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
