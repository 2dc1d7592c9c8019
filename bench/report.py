"""Turn the results of a run into ``docs/benchmarks.md`` and PNG plots."""

from __future__ import annotations

import os
from typing import Any, Final, Iterable

from bench.run import REPORT, size_label

PLOT_TIMES: Final = "_static/bench_times.png"
PLOT_SCALE: Final = "_static/bench_scale.png"
#: Text below this line in docs/benchmarks.md is kept when the report is rewritten.
NOTES_MARK: Final = (
    "<!-- Notes below this line are written by hand and kept by `python -m bench`. -->"
)

LABELS: Final = {
    "dict": "plain dict",
    "tastypy": "tastypy",
    "tastypy-mutate": "tastypy, in-place `rec['_done'] = True`",
    "raw": "raw limit",
    "raw-lines": "raw limit (per-line parse)",
    "raw-dict": "raw limit + dict in memory",
    "py-setitem": "floor: `store[k] = v` in Python",
    "raw-locked": "floor: a locked try in Python",
    "diskcache": "diskcache",
    "sqlitedict": "sqlitedict",
    "shelve": "shelve",
    "tracker": "tastypy Tracker",
}

TITLES: Final = {
    "w1": "W1 — write N tracker records, then mark each done (2N writes), durable every 1000",
    "w2": "W2 — reopen a store of N records and have every record in memory",
    "w3": "W3 — N/10 random updates into a store of N records, durable every 1000",
    "w4": "W4 — in-memory operations, tastypy against a plain dict (one op per key)",
    "w5": "W5 — 8 processes × N/40 tasks each, `try_it` + `mark_done`, concurrently",
    "w6": "W6 — memory held by N loaded tracker records",
    "w7": "W7 — N `try_it` + `mark_done` cycles in one process, each try on record first",
    "w8": "W8 — one job's start-up on a tracker of N tasks in parts",
    "w9": "W9 — a memoized call that hits",
}

#: W9's contenders, as its table names them.
W9_LABELS: Final = {
    "tastypy": "`tastypy.memoize`",
    "diskcache": "diskcache `Cache.memoize`",
    "joblib": "`joblib.Memory.cache`",
    "lru_cache": "`functools.lru_cache` (memory only, for scale)",
}

#: W8's jobs, as its table names them.
W8_JOBS: Final = {
    "one": "open, `try_it` + `mark_done` one key, close",
    "claim": "open, `claim(10)`, mark them done, close",
    "done100": "open, `done(k)` for 100 random keys, close",
    "stats": "open, `stats()`, close",
}

DEFINITIONS: Final = """\
## What is measured

Keys are `"task00000000"`, `"task00000001"`, …; values are tracker records
`{"_done": False, "_tries": 0, "_aborted": False}`. N is the size (10k,
100k, 1M). Every contender writes the same records, through its own
serialisation (JSON for tastypy and the raw limit, pickle for the others,
which is their default).

* **W1**: create an empty store, write the N records, then write each again
  marked done (`{"_done": True, "_tries": 1, …}`, a new dict assigned to the
  key): 2N writes, made durable (fsync or a synchronous commit) every 1000
  writes, then close. Timed from open to close. The row *tastypy, in-place*
  does the second pass the way tracker code usually does,
  `rec = pod[k]; rec["_done"] = True; rec["_tries"] = 1`, relying on reads
  marking keys dirty.
* **W2**: a store holding N records (each written once, durable every 1000:
  built by an untimed set-up run) is opened in a fresh process, and every
  record is brought into memory: tastypy's `POD(path)` loads everything;
  the raw limit reads the file into a dict; for diskcache, sqlitedict and
  shelve (which read lazily) the time includes reading every item into a
  dict, since a job that resumes needs to see its whole task list. The page
  cache is warm (the store was just written).
* **W3**: on a fresh copy of W2's store, in a fresh process, the store is
  opened (untimed), then N/10 keys drawn at random (with repeats, fixed
  seed) are set to the done record, durable every 1000, then closed. The raw
  limit appends the same N/10 lines to its file (*raw append*).
* **W4**: in one process, each operation once per key in a shuffled order,
  with the same Python loop for tastypy and for a plain dict (so the ratio
  is what a user's loop sees): `pod[k]` on int values; `pod[k]` on dict
  values with the default sync policy — a read of a dict value marks the key
  dirty, so every 1000 reads cause a sync, which finds the bytes unchanged
  and writes nothing; its cost is included (the row *held* is the same
  under `hold()`, without syncs); `k in pod`; `pod[k] = v` (which encodes
  and validates v) under `hold()` (memory only), and with the default sync
  policy (an fsync per 1000, shown for information).
* **W5**: a tracker of N/5 tasks; 8 processes each take a disjoint slice
  (N/40 tasks: 25k at 1M) and for each task call `try_it(key)` then
  `mark_done(key)`, all at once (started by a barrier once every process has
  opened the store). Time from the first start to the last finish. The
  target compares that throughput with one process doing all N/5 tasks
  alone. Afterwards the store is reopened and every task must be done
  (*lost* counts those that are not).
* **W6**: in a fresh process, resident memory (RSS) after imports and a
  garbage collection, then after loading N records and a collection; the
  difference is what the loaded data holds. The plain dict is the same
  records parsed from JSON lines with orjson.
* **W7**: N tasks, one process: `try_it(key)` then `mark_done(key)` for
  each. A try must be on record before the task runs and survive the
  process being killed (SIGKILL) at any instant, so tries are not batched.
  tastypy's Tracker writes, before `try_it` returns True, one journal
  append (no fsync) holding the try and every change made since its last
  write — so the previous task's done mark rides along with the next try
  (and the last one with `close()`). The others do the same: diskcache runs
  one read-modify-write transaction per try that also writes the previous
  task's done mark (its default `synchronous=NORMAL` in WAL mode survives
  SIGKILL); the raw limit keeps the records in a dict and makes one
  `write()` per try to an `O_APPEND` file, of the previous done line and
  the try line.
* **W8**: a tracker of N fresh tasks in parts of about 4,000 tasks
  (`Tracker(path, shards=N // 4000)`, built once per size), and one job of
  a job array on it, in a fresh process: `one` opens it, `try_it` and
  `mark_done` one random key, and closes it; `claim` claims 10 tasks and
  marks them done; `done100` asks `done(k)` of 100 random keys; `stats`
  sums the counts. Time from after `import tastypy` to after `close()`;
  memory is the peak RSS above the RSS after the import; *read* is what the
  process read (`rchar`, the page cache included). The target: time and
  memory at 10M (`--scale-10m`) within 2× of 10k. `python -m bench.w8_parts`
  also measures claims from 16 processes.
* **W9**: in a fresh process, a function of an int and a float decorated
  by `tastypy.memoize(path)`, diskcache's `Cache(path).memoize()`,
  `joblib.Memory(path).cache` and (in memory only, for scale)
  `functools.lru_cache`; 1,000 calls that each miss and store a result
  (untimed but shown), then the same calls again, all hits, in passes until
  about half a second has gone: time per hit. joblib and diskcache are
  optional (`pip install -e ".[bench]"`): a missing one is skipped, with a
  note.
* **Scale**: for stores of N records (10k up to 10M), in a fresh process:
  the open time (as W2), the RSS the loaded data holds, and the time of one
  sync of 1000 changed keys (median of 9; for the raw limit, appending 1000
  lines and an fsync).

Times are medians over the repetitions, each in a fresh interpreter, timed
from the inside (`time.perf_counter`, interpreter start-up and imports
excluded), after an `os.sync()` so that what the run before wrote is not
written back during this one. *Peak RSS* is the process's `ru_maxrss` (it includes the
interpreter, about 20 MB).

## Contenders

* **tastypy**: `POD(path)` with the default `sync_at=1000` (a sync every
  1000 changed keys: one append to the journal and one fsync, under the
  directory lock), `close()` at the end.
* **raw limit**: orjson JSON lines `[key, value]` appended to one file kept
  open, `os.fsync` every 1000 lines; read back into a dict either by parsing
  64 KiB of lines at a time as one JSON array (*bulk parse*; one array of
  the whole file was slower still) or by `data.update(map(orjson.loads,
  lines))` on 64 KiB of lines at a time (*per-line parse*, the faster from
  about a million lines; W6 and Scale use it). No library that keeps JSON lines
  on disk can beat it by much; it checks nothing, locks nothing and cannot
  survive a torn last line. Ratios "× raw" are against the faster of the
  two parses.
* **raw limit + dict in memory** (W1, W3, for information): the same
  appends, while also keeping every record in a dict (`data[k] = rec`), as
  any library that hands you a dict must. In W3 the dict (N entries) is
  loaded before the clock starts. The gap between the two raw rows is the
  cost of touching a large dict at random, which no in-memory design avoids.
* **floor: `store[k] = v` in Python** (W1, for information): the raw limit
  + dict, but each write a call of a `__setitem__` written in Python that
  does only this: encode the line (which validates the value), keep the
  value in a dict, add the line to a buffer, write and fsync every 1000.
  Its distance to the raw + dict row is what calling a Python method per
  assignment costs: the floor of any store written in Python that hands
  you a dict.
* **floor: a locked try in Python** (W7, for information): the raw limit's
  loop, but each try decided under a lock as tastypy decides it: `flock` a
  lock file, `lseek` to the journal's end to see whether another process
  appended, decide on the record in a dict, `pwrite` the previous done line
  and the try line at the end, unlock. No leases, counts, undo, threads or
  signals: the floor of a tracker written in Python that is safe across
  processes.
* **diskcache** `Cache(path, sqlite_synchronous=2, eviction_policy="none")`:
  `with cache.transact():` around each 1000 writes. FULL synchronous makes
  each commit durable like an fsync (the default NORMAL in WAL mode does not
  survive power loss); no eviction, because a tracker must not drop records
  at the default 1 GB size limit. W5/W7 use the default synchronous mode.
* **sqlitedict** `SqliteDict(path, autocommit=False)`, `commit()` every 1000
  writes (SQLite's default synchronous=FULL).
* **shelve** `shelve.open(path)`, `sync()` every 1000 writes. Which dbm it
  uses depends on the Python build (see *Machine*); `dbm.dumb` rewrites its
  whole index at each `sync()` and never fsyncs, so it is slower *and* less
  durable than the others.
* **plain dict** for in-memory operations (W4) and memory (W6).

Peers (diskcache, sqlitedict, shelve) run up to the *peer cap* size; above
it their cells say *capped*, and ratios against them are taken at the
largest size both ran.
"""


# -- formatting ---------------------------------------------------------------


def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.3g} ms"
    return f"{x:.3g} s"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f}×"
    if x >= 10:
        return f"{x:.1f}×"
    return f"{x:.2f}×"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k/s"
    return f"{x:.0f}/s"


class Results:
    def __init__(self, doc: dict):
        self.doc = doc
        self.config = doc["config"]
        self.machine = doc["machine"]
        self.entries = doc["results"]

    def get(self, workload: str, contender: str, n: int) -> dict | None:
        for e in self.entries:
            if e["workload"] == workload and e["contender"] == contender and e["n"] == n:
                return e
        return None

    def value(self, workload: str, contender: str, n: int, field: str = "seconds") -> Any:
        e = self.get(workload, contender, n)
        return None if e is None else e.get(field)

    def sizes(self, workload: str) -> list[int]:
        return sorted({e["n"] for e in self.entries if e["workload"] == workload})

    def contenders(self, workload: str) -> list[str]:
        seen: list[str] = []
        for e in self.entries:
            if e["workload"] == workload and e["contender"] not in seen:
                seen.append(e["contender"])
        order = list(LABELS)
        return sorted(seen, key=lambda who: order.index(who) if who in order else len(order))

    def raw_best(self, workload: str, n: int, field: str = "seconds") -> float | None:
        vals = [self.value(workload, r, n, field) for r in ("raw", "raw-lines")]
        vals = [v for v in vals if v is not None]
        return min(vals) if vals else None

    def largest_common(self, workload: str, a: str, b: str, field: str = "seconds") -> int | None:
        both = [
            n
            for n in self.sizes(workload)
            if self.value(workload, a, n, field) is not None
            and self.value(workload, b, n, field) is not None
        ]
        return max(both) if both else None

    def why_missing(self, workload: str, contender: str, n: int) -> str:
        e = self.get(workload, contender, n)
        if e is None:
            return "—"
        if "capped" in e:
            return f"capped at {size_label(e['capped'])}"
        if "skipped" in e:
            return "skipped"
        if "error" in e:
            return "failed"
        return "—"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(header)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


# -- sections -------------------------------------------------------------------


def _store_table(r: Results, workload: str) -> str:
    sizes = r.sizes(workload)
    rows = []
    for who in r.contenders(workload):
        label = LABELS.get(who, who)
        row = [label + (" (bulk parse)" if workload == "w2" and who == "raw" else "")]
        for n in sizes:
            t = r.value(workload, who, n)
            if t is None:
                row.append(r.why_missing(workload, who, n))
                continue
            raw = r.raw_best(workload, n)
            bits = [fmt_s(t)]
            if raw and who not in ("raw", "raw-lines"):
                bits.append(f"{fmt_ratio(t / raw)} raw")
            with_dict = r.value(workload, "raw-dict", n)
            if with_dict and who.startswith("tastypy"):
                bits.append(f"{fmt_ratio(t / with_dict)} raw+dict")
            if who in ("diskcache", "sqlitedict", "shelve"):
                mine = r.value(workload, "tastypy", n)
                if mine:
                    bits.append(f"tastypy {fmt_ratio(t / mine)} faster")
            row.append(" · ".join(bits))
        big = max((n for n in sizes if r.value(workload, who, n) is not None), default=None)
        peak = r.value(workload, who, big, "peak_rss_mb") if big else None
        row.append(f"{peak:.0f} MB @ {size_label(big)}" if peak else "—")
        rows.append(row)
    extra = ""
    if workload == "w3":
        extra = "\n\nUpdates per run: N/10 (1k, 10k, 100k for N = 10k, 100k, 1M)."
    head = ["contender"] + [f"N = {size_label(n)}" for n in sizes] + ["peak RSS"]
    return f"### {TITLES[workload]}\n\n" + _table(head, rows) + extra


W4_OPS: Final = {
    "get_immutable": "`pod[k]`, int values",
    "get_dict": "`pod[k]`, dict values, syncs included",
    "get_dict_held": "`pod[k]`, dict values, held (no sync)",
    "contains": "`k in pod`",
    "set_held": "`pod[k] = v`, held (memory only)",
    "set_synced": "`pod[k] = v`, default sync (fsync / 1000)",
}


def _w4_table(r: Results) -> str:
    sizes = [
        n
        for n in r.sizes("w4")
        if r.get("w4", "tastypy", n) and r.get("w4", "tastypy", n).get("ops")
    ]
    if not sizes:
        return f"### {TITLES['w4']}\n\nNot run."
    rows = []
    for op, label in W4_OPS.items():
        row = [label]
        for n in sizes:
            ops = r.get("w4", "tastypy", n)["ops"].get(op)
            if not ops:
                row.append("—")
                continue
            mine, base = ops["tastypy"] / n * 1e9, ops["dict"] / n * 1e9
            row.append(f"{fmt_ratio(mine / base)} ({mine:.0f} vs {base:.0f} ns)")
        rows.append(row)
    head = ["operation"] + [f"N = {size_label(n)}: tastypy / dict" for n in sizes]
    return f"### {TITLES['w4']}\n\n" + _table(head, rows)


def _tasks_table(r: Results, workload: str) -> str:
    sizes = r.sizes(workload)
    if not sizes:
        return f"### {TITLES[workload]}\n\nNot run."
    rows = []
    notes = []
    for who in r.contenders(workload):
        row = [LABELS.get(who, who)]
        for n in sizes:
            e = r.get(workload, who, n)
            if e is None or e.get("seconds") is None:
                row.append(r.why_missing(workload, who, n))
                if e and e.get("skipped"):
                    notes.append(f"{LABELS.get(who, who)}: {e['skipped']}.")
                continue
            bits = [fmt_s(e["seconds"]), fmt_rate(e["per_second"])]
            if workload == "w5":
                one = r.value("w5-1", who, n, "per_second")
                if one:
                    bits.append(f"{e['per_second'] / one:.0%} of 1 process ({fmt_rate(one)})")
            elif who == "tastypy":
                peer = r.value(workload, "diskcache", n, "per_second")
                if peer:
                    bits.append(f"{fmt_ratio(e['per_second'] / peer)} diskcache")
                floor = r.value(workload, "raw-locked", n, "per_second")
                if floor:
                    bits.append(f"{fmt_ratio(floor / e['per_second'])} the locked floor's time")
            bits.append(f"lost {e.get('lost', '?')}")
            row.append(" · ".join(bits))
        rows.append(row)
    head = ["contender"] + [f"N = {size_label(n)}" for n in sizes]
    text = f"### {TITLES[workload]}\n\n" + _table(head, rows)
    if notes:
        text += "\n\n" + " ".join(sorted(set(notes)))
    return text


def _w6_table(r: Results) -> str:
    sizes = r.sizes("w6")
    if not sizes:
        return f"### {TITLES['w6']}\n\nNot run."
    rows = []
    notes = []
    for who in r.contenders("w6"):
        row = [LABELS.get(who, who)]
        for n in sizes:
            e = r.get("w6", who, n)
            if e is None or e.get("rss_mb") is None:
                row.append(r.why_missing("w6", who, n))
                if e and e.get("skipped"):
                    notes.append(f"{LABELS.get(who, who)}: {e['skipped']}.")
                continue
            bits = [f"{e['rss_mb']:.1f} MB", f"{e['bytes_per_entry']:.0f} B/entry"]
            base = r.value("w6", "dict", n, "rss_mb")
            if base and who != "dict":
                bits.append(f"{fmt_ratio(e['rss_mb'] / base)} dict")
            bits.append(f"load peak +{e['load_peak_mb']:.0f} MB")
            row.append(" · ".join(bits))
        rows.append(row)
    head = ["holder"] + [f"N = {size_label(n)}" for n in sizes]
    text = f"### {TITLES['w6']}\n\n" + _table(head, rows)
    if notes:
        text += "\n\n" + " ".join(sorted(set(notes)))
    return text


def _w8_table(r: Results) -> str:
    sizes = r.sizes("w8")
    if not sizes:
        return f"### {TITLES['w8']}\n\nNot run."
    rows = []
    for job, what in W8_JOBS.items():
        row = [f"`{job}`: {what}"]
        for n in sizes:
            e = r.get("w8", job, n)
            if e is None or e.get("seconds") is None:
                row.append(r.why_missing("w8", job, n))
                continue
            row.append(f"{fmt_s(e['seconds'])} · {e['mb']:.1f} MB · read {e['read_mb']:.2f} MB")
        rows.append(row)
    head = ["job"] + [f"N = {size_label(n)}" for n in sizes]
    return (
        f"### {TITLES['w8']}\n\nTime · memory above the interpreter · bytes read, medians.\n\n"
        + _table(head, rows)
    )


#: The jobs W8's target judges: a job's start-up (open, a claim or a try,
#: close). ``stats`` reads one summary per part and ``done100`` the files
#: of up to 100 parts, by design: their ratios are shown, not judged.
W8_JUDGED: Final = ("one", "claim")


def _w9_table(r: Results) -> str:
    sizes = r.sizes("w9")
    if not sizes:
        return f"### {TITLES['w9']}\n\nNot run."
    n = max(sizes)
    mine = r.value("w9", "tastypy", n, "us_per_hit")
    rows, notes = [], []
    for who, label in W9_LABELS.items():
        e = r.get("w9", who, n)
        if e is None or e.get("us_per_hit") is None:
            rows.append([label, r.why_missing("w9", who, n), "—", "—", "—"])
            if e and e.get("skipped"):
                notes.append(f"{label}: {e['skipped']}; its row is left out of the comparison.")
            continue
        hit = e["us_per_hit"]
        ratio = f"{fmt_ratio(hit / mine)}" if mine and who != "tastypy" else "—"
        miss = f"{e['us_per_miss']:,.0f} µs" if e.get("us_per_miss") else "—"
        version = (e.get("runs") or [{}])[0].get("version", "?")
        rows.append([label, f"{hit:,.2f} µs", ratio, miss, str(version)])
    head = ["contender", "a hit", "× tastypy", "a miss (stored)", "version"]
    text = (
        f"### {TITLES['w9']}\n\n{size_label(n)} results stored, then every one asked again "
        "in passes for about half a second; medians.\n\n" + _table(head, rows)
    )
    return text + ("\n\n" + " ".join(notes) if notes else "")


def _w9_target(r: Results) -> list[str]:
    sizes = r.sizes("w9")
    hit = r.value("w9", "tastypy", max(sizes), "us_per_hit") if sizes else None
    if hit is None:
        return ["W9", "a memoized call that hits ≤ 5 µs", "not measured", "—"]
    peers = [
        f"{W9_LABELS[who].split(' (')[0]} {r.value('w9', who, max(sizes), 'us_per_hit'):,.0f} µs"
        for who in ("diskcache", "joblib")
        if r.value("w9", who, max(sizes), "us_per_hit") is not None
    ]
    shown = f"{hit:.2f} µs" + (f" ({', '.join(peers)})" if peers else "")
    return ["W9", "a memoized call that hits ≤ 5 µs", shown, _verdict(hit <= 5)]


def _w8_target(r: Results) -> list[str]:
    """Time and memory of W8's jobs at the largest size against 10k."""
    target = "a job's start-up (`one`, `claim`): time and memory at 10M within 2× of 10k"
    sizes = r.sizes("w8")
    small, large = (10_000, max(sizes)) if 10_000 in sizes else (None, None)
    if small is None or large == small:
        return ["W8", target, "not measured", "—"]
    ratios = {}
    for job in W8_JOBS:
        a, b = r.get("w8", job, small) or {}, r.get("w8", job, large) or {}
        if a.get("seconds") and b.get("seconds"):
            # Memory of a few MB is noise at the scale of the interpreter's: at least 1 MB.
            ratios[job] = (b["seconds"] / a["seconds"], max(b["mb"], 1.0) / max(a["mb"], 1.0))
    judged = [ratios[job] for job in W8_JUDGED if job in ratios]
    if not judged:
        return ["W8", target, "not measured", "—"]
    x, m = max(t for t, _ in judged), max(mem for _, mem in judged)
    shown = f"time {fmt_ratio(x)}, memory {fmt_ratio(m)} at {size_label(large)} (worst of the two)"
    others = [f"`{job}` {fmt_ratio(t)}" for job, (t, _) in ratios.items() if job not in W8_JUDGED]
    if others:
        shown += "; for information, time of " + ", ".join(others)
    return ["W8", target, shown, _verdict(x <= 2 and m <= 2)]


def _scale_table(r: Results) -> str:
    sizes = r.sizes("scale")
    if not sizes:
        return "### Scale\n\nNot run."
    rows = []
    for n in sizes:
        t = r.get("scale", "tastypy", n) or {}
        w = r.get("scale", "raw", n) or {}
        ratio = t["seconds"] / w["seconds"] if t.get("seconds") and w.get("seconds") else None
        mem = t["rss_mb"] / w["rss_mb"] if t.get("rss_mb") and w.get("rss_mb") else None
        rows.append(
            [
                size_label(n),
                fmt_s(t.get("seconds")),
                fmt_s(w.get("seconds")),
                fmt_ratio(ratio),
                fmt_s(t.get("sync_s")),
                fmt_s(w.get("sync_s")),
                f"{t['rss_mb']:.0f} MB ({t['bytes_per_entry']:.0f} B)" if t.get("rss_mb") else "—",
                f"{w['rss_mb']:.0f} MB ({w['bytes_per_entry']:.0f} B)" if w.get("rss_mb") else "—",
                fmt_ratio(mem),
                f"{t['peak_mb']:.0f} / {w['peak_mb']:.0f} MB"
                if t.get("peak_mb") and w.get("peak_mb")
                else "—",
            ]
        )
    head = [
        "N",
        "open tastypy",
        "open raw",
        "ratio",
        "sync 1000 tastypy",
        "sync 1000 raw",
        "memory tastypy (per entry)",
        "memory dict (per entry)",
        "memory ratio",
        "load peak tastypy / raw",
    ]
    return (
        "### Scale\n\nOpen time, the time of one sync of 1000 changed keys, and the memory the "
        "loaded data holds, for tastypy and the raw limit (a dict read from JSON lines). "
        "10M is opt-in (`--scale-10m`) and runs once.\n\n" + _table(head, rows)
    )


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**pass**" if ok else "**FAIL**")


def targets(r: Results) -> list[list[str]]:
    rows: list[list[str]] = []

    def at_max(workload: str, who: str, field: str = "seconds") -> tuple[int | None, Any]:
        """The largest size up to 1M (the size the targets name) that was measured."""
        sizes = [n for n in r.sizes(workload) if r.value(workload, who, n, field) is not None]
        sizes = [n for n in sizes if n <= 1_000_000] or sizes
        return (max(sizes), r.value(workload, who, max(sizes), field)) if sizes else (None, None)

    for w, limit, what in (
        ("w1", 1.5, "raw limit"),
        ("w2", 1.5, "raw limit"),
        ("w3", 2.0, "raw append"),
    ):
        n, mine = at_max(w, "tastypy")
        raw = r.raw_best(w, n) if n else None
        ratio = mine / raw if mine and raw else None
        shown = f"{fmt_ratio(ratio)} at {size_label(n)}" if n else "—"
        best, raw_best = r.value(w, "tastypy", n, "best"), r.raw_best(w, n, "best")
        if ratio and best and raw_best:
            shown += f" (fastest runs: {fmt_ratio(best / raw_best)})"
        with_dict = r.value(w, "raw-dict", n) if n else None
        if ratio and with_dict:
            shown += f"; {fmt_ratio(mine / with_dict)} raw+dict"
        rows.append(
            [
                w.upper(),
                f"≤ {limit}× {what}",
                shown,
                _verdict(None if ratio is None else ratio <= limit),
            ]
        )
        if w == "w1":
            for peer in ("diskcache", "sqlitedict", "shelve"):
                m = r.largest_common("w1", "tastypy", peer)
                if m is None:
                    rows.append(["W1", f"≥ 30× faster than {peer}", "not run", "—"])
                    continue
                x = r.value("w1", peer, m) / r.value("w1", "tastypy", m)
                rows.append(
                    [
                        "W1",
                        f"≥ 30× faster than {peer}",
                        f"{fmt_ratio(x)} at {size_label(m)}",
                        _verdict(x >= 30),
                    ]
                )
    w4 = [n for n in r.sizes("w4") if (r.get("w4", "tastypy", n) or {}).get("ops")]
    if w4:
        n = max(w4)
        ops = r.get("w4", "tastypy", n)["ops"]
        for op, limit in (("get_immutable", 5), ("get_dict", 5), ("contains", 5), ("set_held", 10)):
            x = ops[op]["tastypy"] / ops[op]["dict"]
            rows.append(
                [
                    "W4",
                    f"{W4_OPS[op]} ≤ {limit}× dict",
                    f"{fmt_ratio(x)} at {size_label(n)}",
                    _verdict(x <= limit),
                ]
            )
    n, rate = at_max("w5", "tastypy", "per_second")
    if n:
        one = r.value("w5-1", "tastypy", n, "per_second")
        lost = r.value("w5", "tastypy", n, "lost")
        rows.append(["W5", "0 tasks lost", f"{lost} lost at {size_label(n)}", _verdict(lost == 0)])
        x = rate / one if one else None
        rows.append(
            [
                "W5",
                "8 processes ≥ 60 % of one process's throughput",
                f"{x:.0%} at {size_label(n)}" if x else "—",
                _verdict(None if x is None else x >= 0.6),
            ]
        )
    else:
        rows.append(
            [
                "W5",
                "0 lost; ≥ 60 % of one process's throughput",
                "not measured (no Tracker yet)",
                "—",
            ]
        )
    for who in ("tastypy", "tracker"):
        n, mem = at_max("w6", who, "rss_mb")
        base = r.value("w6", "dict", n, "rss_mb") if n else None
        label = "a loaded POD of tracker records" if who == "tastypy" else "a loaded Tracker"
        if mem and base:
            x = mem / base
            rows.append(
                [
                    "W6",
                    f"{label} ≤ 1.5× dict memory",
                    f"{fmt_ratio(x)} at {size_label(n)}",
                    _verdict(x <= 1.5),
                ]
            )
        else:
            rows.append(["W6", f"{label} ≤ 1.5× dict memory", "not measured", "—"])
    n, rate = at_max("w7", "tastypy", "per_second")
    if n:
        rows.append(
            ["W7", "≥ 100k tasks/s", f"{fmt_rate(rate)} at {size_label(n)}", _verdict(rate >= 1e5)]
        )
        m = r.largest_common("w7", "tastypy", "diskcache", "per_second")
        if m:
            x = r.value("w7", "tastypy", m, "per_second") / r.value(
                "w7", "diskcache", m, "per_second"
            )
            rows.append(
                ["W7", "≥ 10× diskcache", f"{fmt_ratio(x)} at {size_label(m)}", _verdict(x >= 10)]
            )
    else:
        rows.append(["W7", "≥ 100k tasks/s; ≥ 10× diskcache", "not measured (no Tracker yet)", "—"])
    rows.append(_w8_target(r))
    rows.append(_w9_target(r))
    return rows


def _machine(r: Results) -> str:
    m, cfg = r.machine, r.config
    rows = [
        ["CPU", f"{m['cpu']}, {m['cores']} cores"],
        ["memory", f"{m['memory_gib']:.0f} GiB" if m.get("memory_gib") else "unknown"],
        ["OS", m["os"]],
        ["filesystem of the stores", m["filesystem"]],
        ["Python", m["python"]],
        ["tastypy", m["tastypy"]],
        ["orjson / filelock", f"{m['orjson']} / {m['filelock']}"],
        [
            "diskcache / sqlitedict / SQLite",
            f"{m['diskcache']} / {m['sqlitedict']} / {m['sqlite']}",
        ],
        ["shelve's dbm backend", m["shelve_backend"]],
        ["load average at start", m["load_average_at_start"]],
    ]
    run = [
        ["command", f"`{cfg['command'].strip()}`"],
        ["date", cfg["date"]],
        ["sizes", ", ".join(size_label(n) for n in cfg["sizes"])],
        ["repetitions", f"{cfg['reps']} (median shown), each in a fresh interpreter"],
        ["peer cap", size_label(cfg["peer_cap"])],
        ["duration", f"{cfg.get('minutes', '?')} min"],
    ]
    for extra in cfg.get("merged", []):
        run.append(
            [
                "merged in",
                f"`{extra['command'].strip()}` on {extra['date']}, "
                f"{extra['reps']} repetition{'s' if extra['reps'] != 1 else ''}, "
                f"{extra['minutes']} min (load average at start {extra['load_average_at_start']})",
            ]
        )
    return (
        "## Machine\n\n"
        + _table(["", ""], rows)
        + "\n\n## This run\n\n"
        + _table(["", ""], run)
        + "\n\nThe machine is shared (other jobs ran at the same time), so single numbers are "
        "noisy, by 10–30 % on this machine; ratios between contenders measured side by side are "
        "steadier than absolute times."
    )


def targets_section(doc: dict) -> str:
    r = Results(doc)
    return (
        "## Targets (DESIGN.md)\n\nEach target at the largest size measured up to 1M (ratios of "
        "medians; "
        "against a peer, at the largest size both ran).\n\n"
        + _table(["workload", "target", "measured", "result"], targets(r))
    )


def details(doc: dict) -> str:
    r = Results(doc)
    parts = ["## Results"]
    for w in ("w1", "w2", "w3"):
        if r.sizes(w):
            parts.append(_store_table(r, w))
    parts.append(_w4_table(r))
    parts.append(_tasks_table(r, "w5"))
    parts.append(_w6_table(r))
    parts.append(_tasks_table(r, "w7"))
    parts.append(_w8_table(r))
    parts.append(_w9_table(r))
    parts.append(_scale_table(r))
    return "\n\n".join(parts)


def tables(doc: dict) -> str:
    return targets_section(doc) + "\n\n" + details(doc)


def markdown(doc: dict, notes: str = "") -> str:
    r = Results(doc)
    head = (
        "# Benchmarks\n\n"
        "tastypy against the raw limit (orjson JSON lines, the fastest way to keep these records "
        "on disk as JSON), diskcache, sqlitedict and shelve (and joblib for W9), on the workloads "
        "W1–W9 of the design and on growing sizes. This file is written by `python -m bench`; "
        "run it yourself (from the repository root):\n\n"
        "```bash\n"
        'pip install -e ".[bench]"\n'
        "python -m bench              # sizes 10k, 100k, 1M, 3 repetitions: 15-20 minutes\n"
        "python -m bench --quick      # smoke run, small sizes, prints the tables only\n"
        "python -m bench --workloads w1,w2 --sizes 100k --reps 5\n"
        "python -m bench --scale-10m  # also measure open/sync/memory at 10M entries (slow)\n"
        "python -m bench.profile      # cProfile of set, get, sync and load\n"
        "```\n\n"
        f"![time against size, log-log]({PLOT_TIMES})\n\n"
        f"![open time, sync time and memory against size]({PLOT_SCALE})\n"
    )
    body = "\n\n".join([head, targets_section(doc), _machine(r), details(doc), DEFINITIONS])
    return body.rstrip() + "\n\n" + NOTES_MARK + "\n" + notes


#: One colour per contender in every panel.
COLORS: Final = {
    "tastypy": "#1f77b4",
    "tastypy-mutate": "#17becf",
    "raw": "#2ca02c",
    "raw-lines": "#98df8a",
    "raw-dict": "#bcbd22",
    "py-setitem": "#ff7f0e",
    "raw-locked": "#e377c2",
    "diskcache": "#d62728",
    "sqlitedict": "#9467bd",
    "shelve": "#8c564b",
}

_SHORT: Final = {
    "w1": "write 2N records",
    "w2": "reopen N records",
    "w3": "N/10 random updates",
    "w7": "N try_it + mark_done",
}


def plot(doc: dict, docs_dir: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    r = Results(doc)
    written = []
    panels = [w for w in ("w1", "w2", "w3", "w7") if r.sizes(w)]
    if panels:
        cols = min(2, len(panels))
        rows = (len(panels) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.5 * rows), squeeze=False)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        for ax, w in zip(axes.flat, panels):
            for who in r.contenders(w):
                pts = [(n, r.value(w, who, n)) for n in r.sizes(w) if r.value(w, who, n)]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(
                        xs,
                        ys,
                        marker="o",
                        color=COLORS.get(who),
                        linewidth=2.5 if who == "tastypy" else 1.3,
                        label=LABELS.get(who, who).replace("`", ""),
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(TITLES[w].split(" — ")[0] + " — " + _SHORT[w], fontsize=10)
            ax.set_xlabel("N (records)")
            ax.set_ylabel("seconds (median)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("time against size (lower is better)", fontsize=11)
        fig.tight_layout()
        path = os.path.join(docs_dir, PLOT_TIMES)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    sizes = r.sizes("scale")
    if sizes:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for field, ax, title, unit in (
            ("seconds", axes[0], "open (load everything)", "seconds"),
            ("sync_s", axes[1], "one sync of 1000 changed keys", "seconds"),
            ("rss_mb", axes[2], "memory held by the loaded data", "MB"),
        ):
            for who, label in (("tastypy", "tastypy"), ("raw", "raw limit / plain dict")):
                pts = [
                    (n, r.value("scale", who, n, field))
                    for n in sizes
                    if r.value("scale", who, n, field)
                ]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, marker="o", color=COLORS[who], label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("N (entries)")
            ax.set_ylabel(unit)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(docs_dir, PLOT_SCALE)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(doc: dict, root: str) -> None:
    path = os.path.join(root, REPORT)
    notes = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if NOTES_MARK in old:
            notes = old.split(NOTES_MARK, 1)[1].lstrip("\n")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown(doc, notes))
    plot(doc, os.path.dirname(path))
