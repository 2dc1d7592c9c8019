"""cProfile of tastypy's hot paths: ``python -m bench.profile [--n 200k] [--top 12]``.

Profiles, each on its own fresh POD:

* ``set``: ``pod[k] = record`` for N new keys, then each marked done (W1),
  with the default sync policy;
* ``get``: ``pod[k]`` on N dict values with the default sync policy (each
  read marks the key dirty; every 1000 reads a sync finds nothing to write);
* ``sync``: 200 syncs of 1000 changed keys each into a POD of N keys;
* ``load``: opening a POD of N keys written 1000 per sync;
* ``tryit``: ``try_it`` + ``mark_done`` on N/10 tasks (when tastypy.Tracker exists);
* ``shared``: W5's shape, 8 processes sharing N/5 tasks; one of them is profiled.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import shutil
import tempfile
import time

from bench.contenders import make_keys, tracker_class
from bench.run import parse_size


def _fill(path: str, keys: list) -> None:
    from tastypy import POD

    with POD(path) as pod:
        for k in keys:
            pod[k] = {"_done": False, "_tries": 0, "_aborted": False}


def case_set(d: str, keys: list):
    from tastypy import POD

    def run() -> None:
        pod = POD(os.path.join(d, "set"))
        for k in keys:
            pod[k] = {"_done": False, "_tries": 0, "_aborted": False}
        for k in keys:
            pod[k] = {"_done": True, "_tries": 1, "_aborted": False}
        pod.close()

    return None, run


def case_get(d: str, keys: list):
    from tastypy import POD

    path = os.path.join(d, "get")
    _fill(path, keys)
    pod = POD(path)
    order = keys[:]
    random.Random(1).shuffle(order)

    def run() -> None:
        for k in order:
            pod[k]
        pod.close()

    return None, run


def case_sync(d: str, keys: list):
    from tastypy import POD

    path = os.path.join(d, "sync")
    _fill(path, keys)
    pod = POD(path)
    rng = random.Random(2)
    batches = [rng.sample(keys, min(1000, len(keys))) for _ in range(200)]

    def run() -> None:
        pod.hold()
        for i, batch in enumerate(batches):
            for k in batch:
                pod[k] = {"_done": True, "_tries": i + 1, "_aborted": False}
            pod.sync()
        pod.close()

    return None, run


def case_load(d: str, keys: list):
    from tastypy import POD

    path = os.path.join(d, "load")
    _fill(path, keys)

    def run() -> None:
        POD(path).close()

    return None, run


def case_tryit(d: str, keys: list):
    Tracker = tracker_class()
    if Tracker is None:
        return "tastypy.Tracker does not exist yet", None
    tasks = keys[: max(1, len(keys) // 10)]

    def run() -> None:
        t = Tracker(os.path.join(d, "tracker"), max_tries=3)
        for k in tasks:
            if t.try_it(k):
                t.mark_done(k)
        t.close()

    return None, run


def case_shared(d: str, keys: list):
    """W5's shape: 8 processes share N/5 tasks; the profile is of one of them."""
    Tracker = tracker_class()
    if Tracker is None:
        return "tastypy.Tracker does not exist yet", None
    import multiprocessing

    tasks = keys[: max(8, len(keys) // 5)]
    path = os.path.join(d, "tracker")
    Tracker(path, max_tries=3).close()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(8)
    dump = os.path.join(d, "child0.prof")

    def child(i: int) -> None:
        t = Tracker(path, max_tries=3)
        barrier.wait()
        prof = cProfile.Profile() if i == 0 else None
        if prof:
            prof.enable()
        for k in tasks[i::8]:
            if t.try_it(k):
                t.mark_done(k)
        t.close()
        if prof:
            prof.disable()
            prof.dump_stats(dump)

    def run() -> None:
        workers = [ctx.Process(target=child, args=(i,)) for i in range(1, 8)]
        for w in workers:
            w.start()
        child(0)
        for w in workers:
            w.join()

    return None, (run, dump)


CASES = {
    "set": case_set,
    "get": case_get,
    "sync": case_sync,
    "load": case_load,
    "tryit": case_tryit,
    "shared": case_shared,
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    p.add_argument("--n", default="200k", help="number of keys (default 200k)")
    p.add_argument("--top", type=int, default=12, help="rows per profile (default 12)")
    p.add_argument("--what", default=",".join(CASES), help="comma-separated: " + ",".join(CASES))
    p.add_argument("--sort", default="tottime", help="pstats sort key (default tottime)")
    args = p.parse_args()
    keys = make_keys(parse_size(args.n))
    for name in [w for w in args.what.split(",") if w]:
        d = tempfile.mkdtemp(prefix="tastypy-profile-")
        try:
            skipped, run = CASES[name](d, keys)
            if skipped:
                print(f"== {name}: skipped, {skipped}\n")
                continue
            out = io.StringIO()
            t0 = time.perf_counter()
            if isinstance(run, tuple):  # profiled inside a child process
                run, dump = run
                run()
                stats = pstats.Stats(dump, stream=out)
            else:
                prof = cProfile.Profile()
                prof.runcall(run)
                stats = pstats.Stats(prof, stream=out)
            elapsed = time.perf_counter() - t0
            stats.sort_stats(args.sort).print_stats(args.top)
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
            body = out.getvalue().replace(d, "<tmp>").replace(root, "")
            print(f"== {name}: {len(keys)} keys, {elapsed:.3f} s under the profiler")
            print(body[body.find("   ncalls") :].rstrip() + "\n")
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
