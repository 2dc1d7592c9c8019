"""W8, a job's start-up on a parted tracker, and claims from 16 processes.

``python -m bench.w8_parts [--sizes 10k,1M,10M] [--cache DIR] [--claim-size 1M]``

Trackers of each size are built once (cached in ``--cache``, reused while
their build marker is there), in parts of about ``PER_PART`` tasks. Each
scenario then runs in a fresh interpreter, three times (median reported):

* ``one``: open, ``try_it`` + ``mark_done`` one key, close;
* ``claim``: open, ``claim(10)``, mark them done, close;
* ``done100``: open, ``done(k)`` for 100 random keys, close;
* ``stats``: open, ``stats()``, close.

Time is from after ``import tastypy`` to after ``close()``; memory is the
peak RSS (VmHWM) minus the RSS after the import; bytes read are
``rchar`` of ``/proc/self/io`` over the same span (reads served from the
page cache count too: that is what a job on NFS would fetch).

The claim benchmark runs 16 processes (and 1) claiming 100 at a time and
marking them done for ``--seconds``, on a parted tracker and on a single
store of the same tasks, and checks that no task was handed out twice and
every task handed out is done.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Final

import orjson

#: Tasks per part when the bench builds a parted tracker.
PER_PART: Final = 4000

JOB: Final = textwrap.dedent(
    """
    import os, random, sys, time
    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    def rchar():
        with open("/proc/self/io") as f:
            return int(next(l for l in f if l.startswith("rchar")).split()[1])
    import tastypy
    path, what, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    base_rss, base_io = status("VmRSS"), rchar()
    t0 = time.perf_counter()
    tracker = tastypy.Tracker(path)
    if what == "one":
        key = f"task-{random.randrange(n)}"
        if tracker.try_it(key):
            tracker.mark_done(key)
    elif what == "claim":
        for key in tracker.claim(10):
            tracker.mark_done(key)
    elif what == "done100":
        sum(tracker.done(f"task-{random.randrange(n)}") for _ in range(100))
    elif what == "stats":
        tracker.stats()
    tracker.close()
    seconds = time.perf_counter() - t0
    print(seconds, status("VmHWM") - base_rss, rchar() - base_io)
    """
)

CLAIMER: Final = textwrap.dedent(
    """
    import sys, time
    import tastypy
    path, out, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    tracker = tastypy.Tracker(path)
    print("ready", flush=True)
    sys.stdin.readline()
    end = time.perf_counter() + seconds
    with open(out, "w") as f:
        while time.perf_counter() < end:
            keys = tracker.claim(100)
            if not keys:
                break
            for key in keys:
                tracker.mark_done(key)
            f.write("\\n".join(keys) + "\\n")
    tracker.close()
    """
)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    for suffix, factor in (("k", 1_000), ("m", 1_000_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def _env() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def build(cache: str, n: int, shards: int | None) -> str:
    """A tracker of ``n`` fresh tasks (in parts when ``shards``), cached."""
    name = f"{label(n)}-{'parts' if shards else 'single'}.tracker"
    path = os.path.join(cache, name)
    if os.path.exists(path + ".built"):
        return path
    shutil.rmtree(path, ignore_errors=True)
    code = (
        "import sys, tastypy\n"
        "t = tastypy.Tracker(sys.argv[1]" + (f", shards={shards}" if shards else "") + ")\n"
        "t.add_many(f'task-{i}' for i in range(int(sys.argv[2])))\n"
        "t.close()\n"
    )
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, path, str(n)], check=True, env=_env())
    print(f"built {name} in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    open(path + ".built", "w").close()
    return path


def copy_of(path: str, scratch: str) -> str:
    """A fresh copy, so that the jobs' writes do not pile up in the cache."""
    target = os.path.join(scratch, os.path.basename(path))
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(path, target)
    # Written back now: else the jobs' fsyncs (at close) wait behind the
    # writeback of the copy (625 MB at 10M) and time the disk, not tastypy.
    os.sync()
    return target


def job(path: str, what: str, n: int) -> tuple[float, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", JOB, path, what, str(n)],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    ).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def w8(cache: str, scratch: str, sizes: list[int], repeat: int) -> list[dict]:
    rows = []
    for n in sizes:
        source = build(cache, n, math.ceil(n / PER_PART))
        path = copy_of(source, scratch)
        for what in ("one", "claim", "done100", "stats"):
            runs = [job(path, what, n) for _ in range(repeat)]
            rows.append(
                {
                    "size": label(n),
                    "what": what,
                    "seconds": statistics.median(r[0] for r in runs),
                    "mb": statistics.median(r[1] for r in runs) / 2**20,
                    "read_mb": statistics.median(r[2] for r in runs) / 2**20,
                }
            )
            print(rows[-1], file=sys.stderr)
        shutil.rmtree(path)
    return rows


def claims(cache: str, scratch: str, n: int, procs: int, seconds: float, shards: bool) -> dict:
    source = build(cache, n, math.ceil(n / PER_PART) if shards else None)
    path = copy_of(source, scratch)
    outs = [os.path.join(scratch, f"claims-{i}.txt") for i in range(procs)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, path, out, str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for out in outs
    ]
    for w in workers:
        assert w.stdout.readline().strip() == "ready"
    began = time.perf_counter()
    for w in workers:
        w.stdin.write("go\n")
        w.stdin.flush()
    for w in workers:
        w.communicate(timeout=seconds + 600)
    elapsed = time.perf_counter() - began
    handed = [k for out in outs for k in open(out).read().split()]
    unique = set(handed)
    from tastypy import Tracker

    with Tracker(path) as tracker:
        parted = hasattr(tracker, "parts")
        done = tracker.stats(exact=True)["done"] if parted else tracker.num_done()
    shutil.rmtree(path)
    return {
        "layout": "parts" if shards else "single",
        "procs": procs,
        "tasks": len(handed),
        "seconds": elapsed,
        "tasks_per_s": len(handed) / elapsed,
        "duplicated": len(handed) - len(unique),
        "lost": len(unique) - done,
    }


def table(rows: list[dict]) -> str:
    lines = ["| tasks | job | time (ms) | memory above interpreter (MB) | bytes read (MB) |"]
    lines.append("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['what']} | {1000 * r['seconds']:.1f} | {r['mb']:.1f} | "
            f"{r['read_mb']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10k,1M,10M")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "tastypy-bench-w8"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--claim-size", default="1M")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-claims", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="w8-", dir=args.cache)
    try:
        rows = w8(args.cache, scratch, [parse_size(s) for s in args.sizes.split(",")], args.repeat)
        print(table(rows))
        if not args.no_claims:
            n = parse_size(args.claim_size)
            results = [
                claims(args.cache, scratch, n, procs, args.seconds, shards)
                for shards, procs in ((True, 16), (True, 1), (False, 16), (False, 1))
            ]
            print()
            print("| layout | processes | tasks | s | tasks/s | duplicated | lost |")
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for r in results:
                print(
                    f"| {r['layout']} | {r['procs']} | {r['tasks']} | {r['seconds']:.1f} | "
                    f"{r['tasks_per_s']:.0f} | {r['duplicated']} | {r['lost']} |"
                )
        print(orjson.dumps({"w8": rows}).decode(), file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
