"""``@tastypy.memoize(path)``: a function's results kept in a tracker, computed once.

The key of a call is its arguments as JSON text, in the form of the call:
``area(3,2.5,unit="cm")`` (positional arguments as the items of a JSON
array, then keyword arguments sorted by name, ``name=<JSON>``; nested dicts
with their keys sorted). So a float is keyed by its exact JSON text
(``0.1`` and ``0.1000000000000001`` differ, ``1`` and ``1.0`` differ), and
the keys read well in the tracker's files. Each result is a task of the
tracker at ``path`` (its ``result`` field), computed by
:func:`~tastypy.tracker.fetching.compute_once`: once across processes.

A hit is a lookup in a dict of the results loaded, keyed by that text; the
key of plain arguments (str, int, float, bool, None) is built in one orjson
call. Only a miss goes to the tracker: it takes in what other processes
stored, and computes the result if nobody has, or waits for whoever is
computing it.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import orjson

from tastypy.errors import InvalidKeyError

__all__ = ["memoize"]

F = TypeVar("F", bound=Callable[..., Any])

_MISSING: Final = object()
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_SORTED: Final = orjson.OPT_SORT_KEYS

#: Trackers opened for memoized functions, per (path, process): functions
#: sharing a path share one.
_trackers: dict = {}
_trackers_lock = threading.Lock()


def _tracker_at(path: str) -> Any:
    from tastypy.tracker import Tracker

    name = (path, os.getpid())
    with _trackers_lock:
        tracker = _trackers.get(name)
        if tracker is None or tracker.closed:
            tracker = _trackers[name] = Tracker(path)
        return tracker


def _why(value: Any) -> str:
    """Why ``value`` cannot be (part of) a key, and what to pass instead."""
    t = type(value)
    if isinstance(value, (set, frozenset)):
        return "a set cannot be a key; pass a sorted list"
    if isinstance(value, float):
        return f"{value!r} cannot be a key (JSON has no NaN or infinity); pass None or a str"
    if isinstance(value, int):
        return "an int beyond 64 bits cannot be a key; pass str(it)"
    if isinstance(value, str):
        return "a str with a lone surrogate cannot be a key; pass valid text"
    if isinstance(value, (bytes, bytearray)):
        return "bytes cannot be a key; pass a str (e.g. data.decode() or data.hex())"
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return (
        f"{_a(name)} cannot be a key; pass a str, int, float, bool, None, or a list or a "
        "dict with str keys of those"
    )


def _a(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def _plain(value: Any, where: str, call: str) -> Any:
    """``value`` as plain JSON types, or ``InvalidKeyError`` naming the argument."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is list or t is tuple:
        return [_plain(v, f"{where}[{i}]", call) for i, v in enumerate(value)]
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise InvalidKeyError(
                    f"argument {where} of {call}: a dict with {_a(type(k).__qualname__)} key "
                    f"({k!r}) cannot be a key; use str keys"
                )
            out[k] = _plain(v, f"{where}[{k!r}]", call)
        return out
    if isinstance(value, int) and _INT_MIN <= value <= _INT_MAX:
        return int(value)
    if isinstance(value, float) and value - value == 0.0:
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (list, tuple)):
        return _plain(list(value), where, call)
    if isinstance(value, dict):
        return _plain(dict(value), where, call)
    raise InvalidKeyError(f"argument {where} of {call}: {_why(value)}")


def _text(value: Any, where: str, call: str) -> str:
    plain = _plain(value, where, call)
    try:
        return orjson.dumps(plain, option=_SORTED).decode()
    except TypeError:  # a str with a lone surrogate
        raise InvalidKeyError(f"argument {where} of {call}: {_why('')}") from None


class _KeyMaker:
    """Builds the key of a call the long way, naming any argument that cannot be one."""

    def __init__(self, fn: Callable, name: str):
        self.head = name + "("
        self.call = name + "()"
        self.names: list[str] = []
        self.star: str | None = None
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            params = []
        for p in params:
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                self.names.append(p.name)
            elif p.kind is p.VAR_POSITIONAL:
                self.star = p.name

    def _where(self, i: int) -> str:
        if i < len(self.names):
            return repr(self.names[i])
        if self.star is not None:
            return f"{i - len(self.names)} of *{self.star}"
        return str(i)

    def __call__(self, args: tuple, kwargs: dict) -> str:
        parts = [_text(a, self._where(i), self.call) for i, a in enumerate(args)]
        for name in sorted(kwargs):
            label = name if name.isidentifier() else orjson.dumps(name).decode()
            parts.append(f"{label}={_text(kwargs[name], repr(name), self.call)}")
        return self.head + ",".join(parts) + ")"


def _simple(value: Any) -> bool:
    """Whether ``value`` is of plain JSON types only (exactly), with finite
    floats and str dict keys: orjson then spells it as the key's text (or
    refuses it: a big int, a lone surrogate, and the long way says why)."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return not (value - value)
    if t is list or t is tuple:
        return all(map(_simple, value))
    if t is dict:
        return all(type(k) is str for k in value) and all(map(_simple, value.values()))
    return False


def _with_keywords(positional: str, kwargs: dict) -> str:
    """The inside of a key: the positional arguments' text, then the
    keyword arguments of plain values (ValueError for an odd name)."""
    parts = [positional] if positional else []
    for name in sorted(kwargs):
        if not name.isidentifier():
            raise ValueError(name)
        parts.append(name + "=" + orjson.dumps(kwargs[name], option=_SORTED).decode())
    return ",".join(parts)


def memoize(path: str | os.PathLike[str], *, name: str | None = None) -> Callable[[F], F]:
    """Keep the results of the decorated function in the tracker at ``path``.

    A call whose result is stored returns it (from memory, in microseconds);
    else the function runs, once across every process using ``path`` (the
    others wait for it, then get its result), and its result is stored as
    JSON keeps it (a tuple comes back a list; the first call returns the
    same). Arguments must be what JSON holds: str, int, float, bool, None,
    and lists, tuples and str-keyed dicts of those; anything else raises
    ``InvalidKeyError`` naming the argument. Keyword arguments count in any
    order, but ``f(1, b=2)`` and ``f(1, 2)`` are two keys. An exception is
    recorded in the task's ``_error`` and raised; nothing is stored, and
    the next call runs again. ``name`` (default: the function's qualified
    name, ``Class.method``, without the functions around a nested one)
    starts every key, so functions may share one ``path``. Example::

        @tastypy.memoize("results.tracker")
        def simulate(size, rate=0.5):
            ...
            return {"mean": 1.25}

        simulate(100, rate=0.1)      # runs; the key is 'simulate(100,rate=0.1)'
        simulate(100, rate=0.1)      # {'mean': 1.25}, from memory

    The decorated function has ``.key(*args, **kwargs)`` (the key of a
    call), ``.forget(*args, **kwargs)`` (drop that call's result, here and
    on disk, so that the next call computes it again; True if there was
    one), ``.tracker()`` (the tracker, opened on first use) and
    ``.__wrapped__``. A hit returns the stored object itself, as
    ``functools.lru_cache`` does: change a copy.
    """
    from tastypy._args import check_path

    return functools.partial(_memoized, os.path.abspath(check_path(path)), name)


class _Results:
    """The results of one memoized function: in memory, and the tracker
    they are kept in, opened on first use (again in a forked child)."""

    def __init__(self, where: str, head: str):
        self.where = where
        self.head = head
        self.memory: dict = {}
        self._tracker: Any = None
        self._pid: int | None = None

    def tracker(self) -> Any:
        pid = os.getpid()
        if self._pid != pid or self._tracker.closed:
            self._tracker = _tracker_at(self.where)
            self._pid = pid
            self._load()
        return self._tracker

    def _load(self) -> None:
        """Take the results the tracker holds (of this function's keys)."""
        tracker, head, memory = self._tracker, self.head, self.memory
        with tracker.sync_lock:
            for key, rec in tracker.to_dict().items():
                if isinstance(rec, dict) and rec.get("_done") and type(key) is str:
                    if key.startswith(head):
                        memory[key] = rec.get("result")

    def compute(self, key: str, call: Callable[[], Any]) -> Any:
        """A miss: what another process stored, or ``call()``'s result, computed once."""
        from tastypy.tracker.fetching import compute_once

        value = compute_once(self.tracker(), key, call)
        self.memory[key] = value
        return value

    def forget(self, key: str) -> bool:
        self.memory.pop(key, None)
        tracker = self.tracker()
        with tracker.sync_lock:
            if key not in tracker:
                return False
            del tracker[key]
            tracker.flush()
        return True


def _memoized(where: str, name: str | None, fn: F) -> F:
    """``fn`` memoized in the tracker at ``where`` (see :func:`memoize`)."""
    # A nested function is named without the functions around it.
    default = fn.__qualname__.rsplit("<locals>.", 1)[-1]
    make_key = _KeyMaker(fn, name if name is not None else default)
    head = make_key.head
    store = _Results(where, head)
    memory = store.memory
    dumps = orjson.dumps

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The key of plain arguments in one orjson call (the same text
        # make_key builds the long way, which names a bad argument).
        key = None
        for a in (*args, *kwargs.values()) if kwargs else args:
            t = type(a)
            if t is float:
                if a - a:  # NaN or infinity
                    break
            elif t is not str and t is not int and t is not bool and a is not None:
                if not ((t is list or t is tuple or t is dict) and _simple(a)):
                    break
        else:
            try:
                key = dumps(args, option=_SORTED)[1:-1].decode()
                if kwargs:
                    key = _with_keywords(key, kwargs)
                key = head + key + ")"
            except (TypeError, ValueError):
                key = None
        if key is None:
            key = make_key(args, kwargs)
        value = memory.get(key, _MISSING)
        if value is _MISSING:
            return store.compute(key, functools.partial(fn, *args, **kwargs))
        return value

    wrapper.key = lambda *args, **kwargs: make_key(args, kwargs)  # type: ignore[attr-defined]
    wrapper.forget = lambda *args, **kwargs: store.forget(make_key(args, kwargs))  # type: ignore[attr-defined]
    wrapper.tracker = store.tracker  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
