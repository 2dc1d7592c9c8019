"""The driver: ``python -m bench [options]`` from the repository root.

Every measurement runs in a fresh interpreter (``bench.worker``), several
times; the report shows medians. Stores that a workload reads (W2, W3, W6,
scale) are built once per size in an untimed set-up run; W3 works on a fresh
copy of that store each repetition.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Final

import orjson

from bench import contenders as c
from bench.machine import describe

ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS: Final = os.path.join("docs", "_static", "benchmarks.json")
REPORT: Final = os.path.join("docs", "benchmarks.md")

WORKLOADS: Final = ("w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9", "scale")
#: Who runs each workload. Peers are skipped above --peer-cap.
ENTRANTS: Final[dict[str, tuple[str, ...]]] = {
    "w1": (
        "tastypy",
        "tastypy-mutate",
        "raw",
        "raw-dict",
        "py-setitem",
        "diskcache",
        "sqlitedict",
        "shelve",
    ),
    "w2": ("tastypy", "raw", "raw-lines", "diskcache", "sqlitedict", "shelve"),
    "w3": ("tastypy", "raw", "raw-dict", "diskcache", "sqlitedict", "shelve"),
    "w4": ("tastypy",),
    "w5": ("tastypy", "raw", "diskcache"),
    "w6": ("dict", "tastypy", "tracker"),
    "w7": ("tastypy", "raw", "raw-locked", "diskcache"),
    "scale": ("tastypy", "raw"),
    # W8's entrants are the jobs a job array's job does (bench/w8_parts.py).
    "w8": ("one", "claim", "done100", "stats"),
    # W9 runs once, with bench.w9_memoize.KEYS results stored, not per size.
    "w9": ("tastypy", "diskcache", "joblib", "lru_cache"),
}
W5_PROCS: Final = 8
#: W5 at size n: W5_PROCS processes share n/5 tasks (1M -> 8 x 25k).
W5_SHARE: Final = 5


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    for suffix, factor in (("k", 1_000), ("m", 1_000_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


class Driver:
    def __init__(self, args: argparse.Namespace, scratch: str):
        self.args = args
        self.scratch = scratch
        self.results: list[dict] = []
        self._built: dict[tuple[str, int], str] = {}

    # -- running one measurement ------------------------------------------------

    def worker(self, spec: dict, timeout: float = 1800) -> dict:
        # What the run before wrote (a peer's hundreds of MB, the scratch
        # directory just deleted) goes to disk now, not during this run:
        # the kernel's writeback would take a core from whoever comes next.
        os.sync()
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.worker", orjson.dumps(spec).decode()],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"no result after {timeout:.0f} s"}
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return {"error": " | ".join(tail) or f"exit status {proc.returncode}"}
        return orjson.loads(proc.stdout.strip().splitlines()[-1])

    def fresh_dir(self, name: str) -> str:
        path = os.path.join(self.scratch, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def base_store(self, contender: str, n: int) -> str | None:
        """A store of n records written once (sync every 1000), built once."""
        kind = {"raw-lines": "raw", "raw-dict": "raw", "dict": "raw"}.get(contender, contender)
        key = (kind, n)
        if key in self._built:
            return self._built[key]
        d = self.fresh_dir(f"base-{n}-{kind}")
        spec = {"workload": "build-tracker" if kind == "tracker" else "build"}
        spec.update(contender=kind, n=n, dir=d)
        _log(f"  set-up: {kind} store of {size_label(n)} records")
        r = self.worker(spec)
        if "error" in r or "skipped" in r:
            _log(f"  set-up failed: {r}")
            shutil.rmtree(d, ignore_errors=True)
            return None
        self._built[key] = d
        return d

    def drop_bases(self, n: int) -> None:
        for key in [k for k in self._built if k[1] == n]:
            shutil.rmtree(self._built.pop(key), ignore_errors=True)

    def record(self, workload: str, contender: str, n: int, runs: list[dict], **extra: Any) -> None:
        entry: dict[str, Any] = {"workload": workload, "contender": contender, "n": n}
        entry.update(extra)
        ok = [r for r in runs if "error" not in r and "skipped" not in r]
        if runs and not ok:
            first = runs[0]
            entry["skipped" if "skipped" in first else "error"] = first.get("skipped") or first.get(
                "error"
            )
        if ok:
            entry["reps"] = len(ok)
            entry["runs"] = ok
            for field in ok[0]:
                values = [r[field] for r in ok if isinstance(r.get(field), (int, float))]
                if values and len(values) == len(ok):
                    entry[field] = statistics.median(values)
            if all(isinstance(r.get("seconds"), (int, float)) for r in ok):
                entry["best"] = min(r["seconds"] for r in ok)
            if workload == "w4":
                entry["ops"] = {
                    op: {
                        who: statistics.median(r["ops"][op][who] for r in ok)
                        for who in ok[0]["ops"][op]
                    }
                    for op in ok[0]["ops"]
                }
        self.results.append(entry)
        self.save()
        what = entry.get("seconds")
        if isinstance(what, float):
            shown = f"{what:.4g} s"
        elif "ops" in entry:
            shown = "done"
        else:
            shown = entry.get("skipped") or entry.get("error") or "capped"
        _log(f"  {workload} {contender} {size_label(n)}: {shown}")

    def save(self) -> None:
        """Keep what was measured so far (a long run that dies keeps its part)."""
        if self.args.no_report:
            return
        path = os.path.join(ROOT, RESULTS)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        doc = {"config": self.config, "machine": self.machine, "results": self.results}
        with open(path, "wb") as f:
            f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))

    def capped(self, contender: str, n: int) -> bool:
        return contender in c.PEERS and n > self.args.peer_cap

    # -- the workloads -----------------------------------------------------------------

    def run_size(self, n: int, workloads: list[str]) -> None:
        """Every workload at size n. Repetitions are the outer loop, so that
        the machine's slow and fast moments fall on every contender alike."""
        for workload in workloads:
            if workload == "scale":
                continue  # run over all sizes at the end
            _log(f"{workload.upper()} at {size_label(n)}")
            entrants = []
            for contender in ENTRANTS[workload]:
                if self.args.contenders and contender not in self.args.contenders:
                    continue
                if self.capped(contender, n):
                    self.record(workload, contender, n, [], capped=self.args.peer_cap)
                    continue
                entrants.append(contender)
            runs: dict[tuple[str, str], list[dict]] = {}
            extras: dict[tuple[str, str], dict] = {}
            stopped: set[str] = set()
            for _ in range(self.args.reps):
                for contender in entrants:
                    if contender in stopped:
                        continue
                    for name, run, extra in getattr(self, workload)(contender, n):
                        runs.setdefault((name, contender), []).append(run)
                        extras[(name, contender)] = extra
                        if "error" in run or "skipped" in run:
                            stopped.add(contender)
            for (name, contender), got in runs.items():
                self.record(name, contender, n, got, **extras[(name, contender)])
        self.drop_bases(n)

    # Each method below makes one repetition of one contender and returns
    # [(record name, result, extra fields of the record)].

    def _spec(self, workload: str, contender: str, n: int, d: str, **more: Any) -> dict:
        return {"workload": workload, "contender": contender, "n": n, "dir": d, **more}

    def _in_fresh_dir(self, spec: dict) -> dict:
        d = self.fresh_dir("run")
        spec["dir"] = d
        try:
            return self.worker(spec)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def _on_copy(self, base: str, spec: dict) -> dict:
        d = os.path.join(self.scratch, "run")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(base, d)
        spec["dir"] = d
        try:
            return self.worker(spec)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def w1(self, contender: str, n: int) -> list:
        return [("w1", self._in_fresh_dir(self._spec("w1", contender, n, "")), {})]

    def w2(self, contender: str, n: int) -> list:
        base = self.base_store(contender, n)
        if base is None:
            return [("w2", {"error": "set-up failed"}, {})]
        return [("w2", self.worker(self._spec("w2", contender, n, base)), {})]

    def w3(self, contender: str, n: int) -> list:
        base = self.base_store(contender, n)
        if base is None:
            return [("w3", {"error": "set-up failed"}, {})]
        return [("w3", self._on_copy(base, self._spec("w3", contender, n, "")), {})]

    def w4(self, contender: str, n: int) -> list:
        return [("w4", self._in_fresh_dir(self._spec("w4", contender, n, "")), {})]

    def _tasks(self, name: str, contender: str, n: int, tasks: int, procs: int) -> tuple:
        spec = self._spec("tasks", contender, n, "", tasks=tasks, procs=procs)
        return (name, self._in_fresh_dir(spec), {"procs": procs, "tasks": tasks})

    def w5(self, contender: str, n: int) -> list:
        tasks = max(W5_PROCS, n // W5_SHARE)
        first = self._tasks("w5", contender, n, tasks, W5_PROCS)
        if "skipped" in first[1] or "error" in first[1]:
            return [first]
        return [first, self._tasks("w5-1", contender, n, tasks, 1)]

    def w9(self, contender: str, n: int) -> list:
        return [("w9", self._in_fresh_dir(self._spec("w9", contender, n, "", keys=n)), {})]

    def w7(self, contender: str, n: int) -> list:
        return [self._tasks("w7", contender, n, n, 1)]

    def w6(self, contender: str, n: int) -> list:
        base = self.base_store(contender, n)
        if base is None:
            reason = "tastypy.Tracker does not exist yet" if contender == "tracker" else None
            return [("w6", {"skipped": reason} if reason else {"error": "set-up failed"}, {})]
        return [("w6", self.worker(self._spec("w6", contender, n, base)), {})]

    def w8(self, job: str, n: int) -> list:
        """One W8 job on a parted tracker of n tasks (built once per size, then
        copied once: the jobs' few writes do not change what the next reads)."""
        from bench import w8_parts

        key = ("w8", n)
        if key not in self._built:
            _log(f"  set-up: parted tracker of {size_label(n)} tasks")
            cache = self.fresh_dir(f"base-{n}-w8")
            shards = -(-n // w8_parts.PER_PART)
            self._built[key] = w8_parts.copy_of(w8_parts.build(cache, n, shards), self.scratch)
            shutil.rmtree(cache, ignore_errors=True)
        try:
            seconds, memory, read = w8_parts.job(self._built[key], job, n)
        except subprocess.CalledProcessError as exc:
            return [("w8", {"error": (exc.stderr or str(exc)).strip()[-300:]}, {})]
        return [("w8", {"seconds": seconds, "mb": memory / 2**20, "read_mb": read / 2**20}, {})]

    def scale(self, sizes: list[int]) -> None:
        for n in sizes:
            reps = 1 if n > 1_000_000 else self.args.reps
            _log(f"SCALE at {size_label(n)}")
            runs: dict[str, list[dict]] = {who: [] for who in ENTRANTS["scale"]}
            for _ in range(reps):
                for contender in ENTRANTS["scale"]:
                    if self.args.contenders and contender not in self.args.contenders:
                        continue
                    base = self.base_store(contender, n)
                    if base is None:
                        runs[contender].append({"error": "set-up failed"})
                        continue
                    spec = self._spec("scale", contender, n, "")
                    runs[contender].append(self._on_copy(base, spec))
            for contender, got in runs.items():
                if got:
                    self.record("scale", contender, n, got)
            self.drop_bases(n)


def merge(driver: Driver, previous: dict) -> None:
    """Fold this run into ``previous``: its entries replace the same
    (workload, contender, size); the earlier run's set-up stays the headline."""
    fresh = {(e["workload"], e["contender"], e["n"]) for e in driver.results}
    kept = [e for e in previous["results"] if (e["workload"], e["contender"], e["n"]) not in fresh]
    config = previous["config"]
    config.setdefault("merged", []).append(
        {
            "command": driver.config["command"],
            "date": driver.config["date"],
            "reps": driver.config["reps"],
            "minutes": driver.config["minutes"],
            "load_average_at_start": driver.machine["load_average_at_start"],
        }
    )
    config["scale_sizes"] = sorted(
        set(config.get("scale_sizes", [])) | set(driver.config["scale_sizes"])
    )
    driver.config = config
    driver.machine = previous["machine"]
    driver.results = kept + driver.results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark tastypy against the raw limit, diskcache, sqlitedict and shelve "
        "(workloads W1-W9 of DESIGN.md, plus scale; W9 against joblib too), and write "
        "docs/benchmarks.md.",
    )
    p.add_argument("--sizes", default="10k,100k,1M", help="comma-separated, e.g. 10k,100k,1M")
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median)")
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of " + ",".join(WORKLOADS),
    )
    p.add_argument("--contenders", default="", help="only these contenders (comma-separated)")
    p.add_argument(
        "--peer-cap",
        default="100k",
        help="largest size run by diskcache, sqlitedict and shelve (default 100k)",
    )
    p.add_argument(
        "--scale-10m", action="store_true", help="add 10M to the scale and W8 runs (slow)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: sizes 1k,5k, 1 repetition; prints the tables and leaves docs/ alone",
    )
    p.add_argument("--dir", default=None, help="scratch directory (default: a new temp dir)")
    p.add_argument("--no-report", action="store_true", help="print the tables, do not write docs/")
    p.add_argument(
        "--merge",
        action="store_true",
        help=f"add this run's results to those in {RESULTS} (replacing the same "
        "workload, contender and size) instead of starting afresh",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help=f"rewrite the report and plots from {RESULTS} without running anything",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    from bench import report

    args = build_parser().parse_args(argv)
    if args.report_only:
        with open(os.path.join(ROOT, RESULTS), "rb") as f:
            doc = orjson.loads(f.read())
        report.write(doc, ROOT)
        return
    if args.quick:
        args.sizes, args.reps, args.no_report = "1k,5k", 1, True
    sizes = sorted(parse_size(s) for s in args.sizes.split(",") if s.strip())
    args.peer_cap = parse_size(args.peer_cap)
    args.contenders = [x for x in args.contenders.split(",") if x]
    workloads = [w.strip().lower() for w in args.workloads.split(",") if w.strip()]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workloads: {', '.join(sorted(unknown))}; use {WORKLOADS}")
    scratch = args.dir or tempfile.mkdtemp(prefix="tastypy-bench-")
    os.makedirs(scratch, exist_ok=True)
    driver = Driver(args, scratch)
    driver.machine = describe(scratch)
    scale_sizes = sizes + ([10_000_000] if args.scale_10m and 10_000_000 not in sizes else [])
    driver.config = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(),
        "sizes": sizes,
        "scale_sizes": scale_sizes if "scale" in workloads else [],
        "reps": args.reps,
        "peer_cap": args.peer_cap,
        "workloads": workloads,
        "sync_every": c.SYNC_EVERY,
        "w5_procs": W5_PROCS,
        "w5_share": W5_SHARE,
    }
    previous = None
    if args.merge and not args.no_report:
        with open(os.path.join(ROOT, RESULTS), "rb") as f:
            previous = orjson.loads(f.read())
    started = time.monotonic()
    try:
        for n in sizes:
            driver.run_size(n, [w for w in workloads if w != "w9"])
        if "w9" in workloads:
            from bench.w9_memoize import KEYS

            driver.run_size(KEYS, ["w9"])
        if "w8" in workloads and args.scale_10m and 10_000_000 not in sizes:
            driver.run_size(10_000_000, ["w8"])  # W8's target is 10M against 10k
        if "scale" in workloads:
            driver.scale(scale_sizes)
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    driver.config["minutes"] = round((time.monotonic() - started) / 60, 1)
    if previous is not None:
        merge(driver, previous)
    driver.save()
    doc = {"config": driver.config, "machine": driver.machine, "results": driver.results}
    if args.no_report:
        sys.stdout.write(report.tables(doc) + "\n")
    else:
        report.write(doc, ROOT)
        sys.stdout.write(report.tables(doc) + "\n")
