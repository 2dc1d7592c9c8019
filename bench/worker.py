"""One measurement in a fresh interpreter: ``python -m bench.worker '<json spec>'``.

The spec names the workload, the contender, the size and a directory the
worker owns. The last line printed is the result as JSON: seconds (timed
from the inside), peak RSS, and what the workload adds.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import resource
import sys
from typing import Any

import orjson

from bench import contenders as c

_PAGE: int = os.sysconf("SC_PAGE_SIZE")
_MB = 1024 * 1024


def rss() -> int:
    """Resident memory of this process now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_rss() -> int:
    """Highest resident memory of this process so far, in bytes (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _skip_without_tracker(contender: str) -> dict | None:
    if contender == "tastypy" and c.tracker_class() is None:
        return {"skipped": "tastypy.Tracker does not exist yet"}
    return None


# -- W1-W3 and set-up ------------------------------------------------------------


def run_store(spec: dict) -> dict:
    impl = c.CONTENDERS[spec["contender"]]()
    d, n, what = spec["dir"], spec["n"], spec["workload"]
    if what == "build":
        return {"seconds": impl.build(d, c.make_keys(n))}
    if what == "w1":
        return {"seconds": impl.w1(d, c.make_keys(n))}
    if what == "w2":
        seconds, count = impl.w2(d)
        if count != n:
            raise SystemExit(f"{spec['contender']} reopened {count} entries, expected {n}")
        return {"seconds": seconds}
    if what == "w3":
        keys = c.update_keys(n)
        return {"seconds": impl.w3(d, keys), "updates": len(keys)}
    raise SystemExit(f"unknown workload {what!r}")


# -- W4: in-memory operations, tastypy against a dict -------------------------------


def _get(m: Any, order: list) -> float:
    t0 = c.now()
    for k in order:
        m[k]
    return c.now() - t0


def _contains(m: Any, order: list) -> float:
    t0 = c.now()
    for k in order:
        k in m  # noqa: B015
    return c.now() - t0


def _set(m: Any, order: list, tries: int) -> float:
    t0 = c.now()
    for k in order:
        m[k] = {"_done": True, "_tries": tries, "_aborted": False}
    return c.now() - t0


def run_w4(spec: dict) -> dict:
    """Each operation once per key, in a shuffled order, same loop for both."""
    from tastypy import POD

    d, n = spec["dir"], spec["n"]
    keys = c.make_keys(n)
    order = keys[:]
    random.Random(1).shuffle(order)
    out: dict[str, dict[str, float]] = {}

    plain_int = {k: i for i, k in enumerate(keys)}
    pod_int = POD(os.path.join(d, "ints"))
    with pod_int.holding():
        for i, k in enumerate(keys):
            pod_int[k] = i
    out["get_immutable"] = {"dict": _get(plain_int, order), "tastypy": _get(pod_int, order)}
    out["contains"] = {"dict": _contains(plain_int, order), "tastypy": _contains(pod_int, order)}
    pod_int.close()
    del plain_int, pod_int

    plain = {k: {"_done": False, "_tries": 0, "_aborted": False} for k in keys}
    pod = POD(os.path.join(d, "records"))
    with pod.holding():
        for k in keys:
            pod[k] = {"_done": False, "_tries": 0, "_aborted": False}
    # Reads of dict values mark keys dirty; every 1000 of them cause a sync
    # (which finds the bytes unchanged and writes nothing): counted here.
    out["get_dict"] = {"dict": _get(plain, order), "tastypy": _get(pod, order)}
    pod.sync()
    pod.hold()
    out["get_dict_held"] = {"dict": _get(plain, order), "tastypy": _get(pod, order)}
    pod.unhold()
    pod.sync()
    pod.hold()
    out["set_held"] = {"dict": _set(plain, order, 1), "tastypy": _set(pod, order, 1)}
    pod.unhold()
    pod.sync()
    # Assignment with the default sync policy: includes an fsync per 1000.
    t_dict = _set(plain, order, 2)
    t0 = c.now()
    _set(pod, order, 2)
    pod.sync()
    out["set_synced"] = {"dict": t_dict, "tastypy": c.now() - t0}
    pod.close()
    return {"ops": out}


# -- W5 / W7: task loops ------------------------------------------------------------


def _child(contender: str, d: str, keys: list, barrier: Any, queue: Any) -> None:
    try:
        t0, t1 = c.TASK_LOOPS[contender](d, keys, barrier.wait)
        queue.put((t0, t1, None))
    except BaseException as exc:  # reported to the parent, which fails the run
        queue.put((0.0, 0.0, repr(exc)))
        raise


def run_tasks(spec: dict) -> dict:
    """``procs`` processes share ``tasks`` tasks (disjoint slices), each task
    tried and marked done; seconds from the first start to the last end."""
    contender, d, procs = spec["contender"], spec["dir"], spec["procs"]
    skipped = _skip_without_tracker(contender)
    if skipped:
        return skipped
    keys = c.make_keys(spec["tasks"])
    # Create the store before the workers race to.
    if contender not in ("raw", "raw-locked"):
        c.TASK_LOOPS[contender](d, [])
    if procs == 1:
        t0, t1 = c.TASK_LOOPS[contender](d, keys)
        starts, ends = [t0], [t1]
    else:
        ctx = multiprocessing.get_context("fork")
        barrier = ctx.Barrier(procs)
        queue = ctx.Queue()
        workers = [
            ctx.Process(target=_child, args=(contender, d, keys[i::procs], barrier, queue))
            for i in range(procs)
        ]
        for w in workers:
            w.start()
        results = [queue.get() for _ in workers]
        for w in workers:
            w.join()
        errors = [r[2] for r in results if r[2]]
        if errors:
            raise SystemExit(f"a worker failed: {errors[0]}")
        starts = [r[0] for r in results]
        ends = [r[1] for r in results]
    seconds = max(ends) - min(starts)
    done = c.count_done(contender, d, keys)
    return {
        "seconds": seconds,
        "tasks": len(keys),
        "per_second": len(keys) / seconds,
        "lost": len(keys) - done,
    }


# -- W6 and scale: memory, open time, sync time ----------------------------------------


def _open(kind: str, d: str) -> tuple[Any, Any]:
    """(object holding the data, closer). tastypy is imported by the caller
    before it measures anything."""
    if kind == "dict":
        return c.RawLines.read(os.path.join(d, "data.jsonl")), None
    if kind == "tastypy":
        import tastypy

        pod = tastypy.POD(os.path.join(d, "pod"))
        return pod, pod.close
    tracker = c.tracker_class()(os.path.join(d, "tracker"), max_tries=c.MAX_TRIES)
    return tracker, tracker.close


def run_memory(spec: dict) -> dict:
    """RSS held by the loaded data: measured after imports and a collection,
    and again after loading and a collection."""
    kind, d, n = spec["contender"], spec["dir"], spec["n"]
    if kind == "tracker" and c.tracker_class() is None:
        return {"skipped": "tastypy.Tracker does not exist yet"}
    gc.collect()
    base = rss()
    t0 = c.now()
    obj, closer = _open(kind, d)
    seconds = c.now() - t0
    gc.collect()
    held = rss() - base
    if len(obj) != n:
        raise SystemExit(f"{kind} holds {len(obj)} entries, expected {n}")
    result = {
        "seconds": seconds,
        "rss_mb": held / _MB,
        "bytes_per_entry": held / n,
        "load_peak_mb": max(0, peak_rss() - base) / _MB,
    }
    if closer:
        closer()
    return result


def build_tracker(spec: dict) -> dict:
    Tracker = c.tracker_class()
    if Tracker is None:
        return {"skipped": "tastypy.Tracker does not exist yet"}
    keys = c.make_keys(spec["n"])
    t0 = c.now()
    t = Tracker(os.path.join(spec["dir"], "tracker"), max_tries=c.MAX_TRIES)
    with t.holding():
        add_many = getattr(t, "add_many", None)
        if add_many is not None:
            add_many(keys)
        else:
            for k in keys:
                t[k] = {"_done": False, "_tries": 0, "_aborted": False}
    t.close()
    return {"seconds": c.now() - t0}


def run_scale(spec: dict) -> dict:
    """Open time, resident memory, and the time of one sync of 1000 changed
    keys (median of 9), for a store of ``n`` entries."""
    kind, d, n = spec["contender"], spec["dir"], spec["n"]
    gc.collect()
    base = rss()
    t0 = c.now()
    obj, closer = _open("tastypy" if kind == "tastypy" else "dict", d)
    open_s = c.now() - t0
    gc.collect()
    held = rss() - base
    peak = peak_rss() - base
    rng = random.Random(2)
    keys = c.make_keys(n)
    syncs = []
    fd = None
    if kind == "raw":
        fd = os.open(os.path.join(d, "data.jsonl"), os.O_WRONLY | os.O_APPEND)
    for r in range(9):
        batch = rng.sample(keys, min(1000, n))
        if kind == "tastypy":
            obj.hold()
            for k in batch:
                obj[k] = {"_done": True, "_tries": r + 1, "_aborted": False}
            t0 = c.now()
            obj.sync()
            syncs.append(c.now() - t0)
            obj.unhold()
        else:
            lines = []
            for k in batch:
                rec = obj[k] = {"_done": True, "_tries": r + 1, "_aborted": False}
                lines.append(c.dumps([k, rec], option=c._NL))
            t0 = c.now()
            c._write_all(fd, b"".join(lines))
            os.fsync(fd)
            syncs.append(c.now() - t0)
    if fd is not None:
        os.close(fd)
    if closer:
        closer()
    syncs.sort()
    return {
        "seconds": open_s,
        "sync_s": syncs[len(syncs) // 2],
        "rss_mb": held / _MB,
        "bytes_per_entry": held / n,
        "peak_mb": peak / _MB,
    }


def main() -> None:
    import tastypy  # noqa: F401  (every measurement starts with it imported)

    spec = orjson.loads(sys.argv[1])
    what = spec["workload"]
    if what == "w4":
        result = run_w4(spec)
    elif what == "tasks":
        result = run_tasks(spec)
    elif what == "w6":
        result = run_memory(spec)
    elif what == "build-tracker":
        result = build_tracker(spec)
    elif what == "scale":
        result = run_scale(spec)
    elif what == "w9":
        from bench.w9_memoize import run_w9

        result = run_w9(spec)
    else:
        result = run_store(spec)
    result.setdefault("peak_rss_mb", peak_rss() / _MB)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
