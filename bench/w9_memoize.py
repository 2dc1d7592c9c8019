"""W9: a memoized call that hits.

``tastypy.memoize`` against diskcache's ``Cache.memoize`` and
``joblib.Memory.cache`` (each skipped, with a note, if not installed), and
``functools.lru_cache`` (memory only, never on disk) for scale. In a fresh
interpreter each: a store in a new directory, ``KEYS`` calls of a small
function with two arguments (an int and a float) that each miss and store
a result (untimed), then the same calls again, every one a hit, in passes
over the keys until about half a second has gone (at least one pass):
microseconds per hit, from the inside.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any, Final

#: Results stored before the hits are timed.
KEYS: Final = 1000
#: Hits are timed in passes over the keys until this many seconds have gone.
_TIMED: Final = 0.5

ENTRANTS: Final = ("tastypy", "diskcache", "joblib", "lru_cache")


def work(x: int, y: float) -> dict:
    """The memoized function: cheap, so that the time is the cache's."""
    return {"x": x, "y": y * 1.5}


def _tastypy(d: str) -> tuple[Callable, str]:
    import tastypy

    return tastypy.memoize(os.path.join(d, "memo.tracker"))(work), tastypy.__version__


def _diskcache(d: str) -> tuple[Callable, str]:
    import diskcache

    cache = diskcache.Cache(os.path.join(d, "diskcache"))
    return cache.memoize()(work), diskcache.__version__


def _joblib(d: str) -> tuple[Callable, str]:
    import joblib

    memory = joblib.Memory(os.path.join(d, "joblib"), verbose=0)
    return memory.cache(work), joblib.__version__


def _lru_cache(d: str) -> tuple[Callable, str]:
    import sys

    return functools.lru_cache(maxsize=None)(work), sys.version.split()[0]


_MAKERS: Final[dict[str, Callable[[str], tuple[Callable, str]]]] = {
    "tastypy": _tastypy,
    "diskcache": _diskcache,
    "joblib": _joblib,
    "lru_cache": _lru_cache,
}


def run_w9(spec: dict) -> dict[str, Any]:
    """One repetition for ``spec["contender"]`` in ``spec["dir"]``."""
    who, d = spec["contender"], spec["dir"]
    try:
        fn, version = _MAKERS[who](d)
    except ImportError:
        return {"skipped": f"{who} is not installed (pip install {who})"}
    calls = [(i, i / 7) for i in range(spec.get("keys", KEYS))]
    started = time.perf_counter()
    for x, y in calls:
        fn(x, y)
    misses = time.perf_counter() - started
    expected = [work(x, y) for x, y in calls]
    if [fn(x, y) for x, y in calls] != expected:
        raise SystemExit(f"{who} returned other results on a hit")
    hits = 0
    started = time.perf_counter()
    while True:
        for x, y in calls:
            fn(x, y)
        hits += len(calls)
        seconds = time.perf_counter() - started
        if seconds >= _TIMED:
            break
    return {
        "seconds": seconds,
        "us_per_hit": seconds / hits * 1e6,
        "hits": hits,
        "keys": len(calls),
        "us_per_miss": misses / len(calls) * 1e6,
        "version": version,
    }
