"""What each contender does in each workload, timed from the inside.

Every function takes a directory it owns and returns the seconds it spent
(``time.perf_counter``), so interpreter start-up and imports are never
counted. All contenders write the same records: a tracker record per key,
``{"_done": False, "_tries": 0, "_aborted": False}``, later marked done.

Durability is the same for all in W1-W3: every 1000 changes are on stable
storage (fsync) before going on. In W5 and W7 every change must survive the
death of the process (SIGKILL) before the task runs, so each try is its own
transaction (written to the OS, not fsynced), as a real job needs.
"""

from __future__ import annotations

import fcntl
import os
import random
import shelve
import time
from typing import Any, Callable, Final

import orjson

SYNC_EVERY: Final = 1000
MAX_TRIES: Final = 3

_NL: Final = orjson.OPT_APPEND_NEWLINE
dumps = orjson.dumps
loads = orjson.loads
now = time.perf_counter


def make_keys(n: int) -> list[str]:
    return [f"task{i:08d}" for i in range(n)]


def update_keys(n: int, seed: int = 0) -> list[str]:
    """The keys W3 updates: n/10 keys drawn uniformly (with repeats)."""
    return random.Random(seed).choices(make_keys(n), k=max(1, n // 10))


def tracker_class() -> Any:
    """tastypy.Tracker, or None while it does not exist yet."""
    import tastypy

    return getattr(tastypy, "Tracker", None)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_twice(store: Any, keys: list) -> None:
    """W1's writes through ``store[k] = v``: each key's new record, then
    each one marked done."""
    for k in keys:
        store[k] = {"_done": False, "_tries": 0, "_aborted": False}
    for k in keys:
        store[k] = {"_done": True, "_tries": 1, "_aborted": False}


# -- tastypy -----------------------------------------------------------------


class Tastypy:
    name = "tastypy"
    label = "tastypy POD"

    def __init__(self) -> None:
        import tastypy  # imported before any clock starts

        self.POD = tastypy.POD

    @staticmethod
    def _path(d: str) -> str:
        return os.path.join(d, "pod")

    def w1(self, d: str, keys: list) -> float:
        POD = self.POD
        t0 = now()
        pod = POD(self._path(d))
        _write_twice(pod, keys)
        pod.close()
        return now() - t0

    def build(self, d: str, keys: list) -> float:
        POD = self.POD
        t0 = now()
        pod = POD(self._path(d))
        for k in keys:
            pod[k] = {"_done": False, "_tries": 0, "_aborted": False}
        pod.close()
        return now() - t0

    def w2(self, d: str) -> tuple[float, int]:
        POD = self.POD
        t0 = now()
        pod = POD(self._path(d))
        elapsed = now() - t0
        n = len(pod)
        pod.close()
        return elapsed, n

    def w3(self, d: str, keys: list) -> float:
        pod = self.POD(self._path(d))
        t0 = now()
        for k in keys:
            pod[k] = {"_done": True, "_tries": 1, "_aborted": False}
        pod.close()
        return now() - t0


class TastypyMutate(Tastypy):
    """W1 written the way tracker code often is: mutate the record in place."""

    name = "tastypy-mutate"
    label = "tastypy POD, `pod[k]['_done'] = True`"

    def w1(self, d: str, keys: list) -> float:
        POD = self.POD
        t0 = now()
        pod = POD(self._path(d))
        for k in keys:
            pod[k] = {"_done": False, "_tries": 0, "_aborted": False}
        for k in keys:
            rec = pod[k]
            rec["_done"] = True
            rec["_tries"] = 1
        pod.close()
        return now() - t0


# -- the raw limit -------------------------------------------------------------


class Raw:
    """orjson JSON lines ``[key, value]``, appended, fsynced every 1000."""

    name = "raw"
    label = "raw limit (bulk parse)"

    @staticmethod
    def _path(d: str) -> str:
        return os.path.join(d, "data.jsonl")

    @staticmethod
    def _append(path: str, passes: list[tuple[list, dict]]) -> None:
        """Each line added to one buffer, written and fsynced every 1000 lines.

        The buffer is one ``bytearray``, not a list of 1000 lines joined:
        with the list, glibc's heap grew and shrank at every batch (22,400
        ``brk`` calls for 400k lines against 3,000, system time 1.0 s
        against 0.04 s), and the raw limit took 4× as long as it must."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            buf = bytearray()
            count = 0
            for keys, value in passes:
                done, tries = value["_done"], value["_tries"]
                for k in keys:
                    rec = {"_done": done, "_tries": tries, "_aborted": False}
                    buf += dumps([k, rec], option=_NL)
                    count += 1
                    if count == SYNC_EVERY:
                        _write_all(fd, buf)
                        os.fsync(fd)
                        buf.clear()
                        count = 0
            if count:
                _write_all(fd, buf)
                os.fsync(fd)
        finally:
            os.close(fd)

    def w1(self, d: str, keys: list) -> float:
        t0 = now()
        self._append(
            self._path(d),
            [(keys, {"_done": False, "_tries": 0}), (keys, {"_done": True, "_tries": 1})],
        )
        return now() - t0

    def build(self, d: str, keys: list) -> float:
        t0 = now()
        self._append(self._path(d), [(keys, {"_done": False, "_tries": 0})])
        return now() - t0

    @staticmethod
    def read(path: str) -> dict:
        """Parse 64 KiB of lines at a time as one JSON array (one whole-file
        array was slower still: a 1M-element list to build and throw away).
        From a few million lines the per-line parse (RawLines) is faster."""
        with open(path, "rb") as f:
            text = f.read()
        data: dict = {}
        update = data.update
        find = text.find
        start, end = 0, len(text)
        while start < end:
            stop = find(b"\n", min(start + 65536, end - 1))
            update(loads(b"[" + text[start:stop].replace(b"\n", b",") + b"]"))
            start = stop + 1
        return data

    def w2(self, d: str) -> tuple[float, int]:
        t0 = now()
        data = self.read(self._path(d))
        return now() - t0, len(data)

    def w3(self, d: str, keys: list) -> float:
        t0 = now()
        self._append(self._path(d), [(keys, {"_done": True, "_tries": 1})])
        return now() - t0


class RawLines(Raw):
    """The same file, read one ``orjson.loads`` per line."""

    name = "raw-lines"
    label = "raw limit (per-line parse)"

    @staticmethod
    def read(path: str) -> dict:
        """``orjson.loads`` per line, fed straight into ``dict.update``, 64 KiB
        of lines at a time (splitting the whole file at once costs a bytes
        object per line held all together: slower from a few million lines)."""
        with open(path, "rb") as f:
            text = f.read()
        data: dict = {}
        update = data.update
        find = text.find
        start, end = 0, len(text)
        while start < end:
            stop = find(b"\n", min(start + 65536, end - 1))
            update(map(loads, text[start:stop].split(b"\n")))
            start = stop + 1
        return data


class RawDict(Raw):
    """The raw limit that also keeps every record in a dict, as a library that
    hands you a dict must: the bound for W1 and W3 of any such design."""

    name = "raw-dict"
    label = "raw limit + dict in memory"

    @staticmethod
    def _append_keep(path: str, data: dict, passes: list[tuple[list, dict]]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            buf = bytearray()  # one buffer, as Raw._append says why
            count = 0
            for keys, value in passes:
                done, tries = value["_done"], value["_tries"]
                for k in keys:
                    rec = data[k] = {"_done": done, "_tries": tries, "_aborted": False}
                    buf += dumps([k, rec], option=_NL)
                    count += 1
                    if count == SYNC_EVERY:
                        _write_all(fd, buf)
                        os.fsync(fd)
                        buf.clear()
                        count = 0
            if count:
                _write_all(fd, buf)
                os.fsync(fd)
        finally:
            os.close(fd)

    def w1(self, d: str, keys: list) -> float:
        t0 = now()
        data: dict = {}
        self._append_keep(
            self._path(d),
            data,
            [(keys, {"_done": False, "_tries": 0}), (keys, {"_done": True, "_tries": 1})],
        )
        return now() - t0

    def w3(self, d: str, keys: list) -> float:
        data = self.read(self._path(d))
        t0 = now()
        self._append_keep(self._path(d), data, [(keys, {"_done": True, "_tries": 1})])
        return now() - t0


class _Minimal:
    """The least a dict-like store written in Python does per
    ``store[k] = v`` if it validates the value and keeps it: encode the line
    (orjson raises on what JSON cannot hold), keep the value, add the line
    to the buffer; every 1000 lines one write and an fsync. No key check,
    no change detection, no lock, no reading of what others wrote."""

    __slots__ = ("fd", "data", "buf", "count")

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        self.data: dict = {}
        self.buf = bytearray()
        self.count = 0

    def __setitem__(self, key: str, value: dict) -> None:
        self.buf += dumps((key, value), option=_NL)
        self.data[key] = value
        self.count += 1
        if self.count == SYNC_EVERY:
            self.flush()

    def flush(self) -> None:
        _write_all(self.fd, self.buf)
        os.fsync(self.fd)
        self.buf.clear()
        self.count = 0

    def close(self) -> None:
        if self.count:
            self.flush()
        os.close(self.fd)


class PySetitem(Raw):
    """The floor of W1 for any store whose ``store[k] = v`` is a method
    written in Python: :class:`_Minimal`. Its distance to *raw + dict* is
    what the call of a Python ``__setitem__`` costs (the raw rows write
    from the loop itself)."""

    name = "py-setitem"
    label = "floor: `store[k] = v` in Python"

    def w1(self, d: str, keys: list) -> float:
        t0 = now()
        store = _Minimal(self._path(d))
        _write_twice(store, keys)
        store.close()
        return now() - t0


# -- peers ---------------------------------------------------------------------


def _chunks(keys: list, size: int = SYNC_EVERY):
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


class Diskcache:
    """diskcache.Cache, one transaction per 1000 writes.

    ``sqlite_synchronous=2`` (FULL) makes each commit reach the disk, as our
    fsync does (diskcache's default, NORMAL in WAL mode, survives a killed
    process but not a power cut). ``eviction_policy="none"``: a tracker must
    not lose records to the default 1 GB size limit.
    """

    name = "diskcache"
    label = "diskcache.Cache"
    settings: dict = {"sqlite_synchronous": 2, "eviction_policy": "none"}

    def __init__(self) -> None:
        import diskcache  # imported before any clock starts

        self.Cache = diskcache.Cache

    def _open(self, d: str, **extra: Any) -> Any:
        return self.Cache(os.path.join(d, "cache"), **{**self.settings, **extra})

    def _write(self, d: str, passes: list[tuple[list, dict]]) -> None:
        cache = self._open(d)
        for keys, value in passes:
            done, tries = value["_done"], value["_tries"]
            for chunk in _chunks(keys):
                with cache.transact():
                    for k in chunk:
                        cache[k] = {"_done": done, "_tries": tries, "_aborted": False}
        cache.close()

    def w1(self, d: str, keys: list) -> float:
        t0 = now()
        self._write(
            d, [(keys, {"_done": False, "_tries": 0}), (keys, {"_done": True, "_tries": 1})]
        )
        return now() - t0

    def build(self, d: str, keys: list) -> float:
        t0 = now()
        self._write(d, [(keys, {"_done": False, "_tries": 0})])
        return now() - t0

    def w2(self, d: str) -> tuple[float, int]:
        t0 = now()
        cache = self._open(d)
        with cache.transact():
            data = {k: cache[k] for k in cache}
        elapsed = now() - t0
        cache.close()
        return elapsed, len(data)

    def w3(self, d: str, keys: list) -> float:
        cache = self._open(d)
        t0 = now()
        for chunk in _chunks(keys):
            with cache.transact():
                for k in chunk:
                    cache[k] = {"_done": True, "_tries": 1, "_aborted": False}
        cache.close()
        return now() - t0


class Sqlitedict:
    """sqlitedict.SqliteDict, autocommit off, ``commit()`` every 1000 writes
    (SQLite's default synchronous=FULL: a commit is on disk)."""

    name = "sqlitedict"
    label = "sqlitedict.SqliteDict"

    def __init__(self) -> None:
        from sqlitedict import SqliteDict  # imported before any clock starts

        self.SqliteDict = SqliteDict

    def _open(self, d: str, **kw: Any) -> Any:
        return self.SqliteDict(os.path.join(d, "db.sqlite"), autocommit=False, **kw)

    def _write(self, d: str, passes: list[tuple[list, dict]]) -> None:
        db = self._open(d)
        for keys, value in passes:
            done, tries = value["_done"], value["_tries"]
            for chunk in _chunks(keys):
                for k in chunk:
                    db[k] = {"_done": done, "_tries": tries, "_aborted": False}
                db.commit()
        db.close()

    def w1(self, d: str, keys: list) -> float:
        t0 = now()
        self._write(
            d, [(keys, {"_done": False, "_tries": 0}), (keys, {"_done": True, "_tries": 1})]
        )
        return now() - t0

    def build(self, d: str, keys: list) -> float:
        t0 = now()
        self._write(d, [(keys, {"_done": False, "_tries": 0})])
        return now() - t0

    def w2(self, d: str) -> tuple[float, int]:
        t0 = now()
        db = self._open(d, flag="r")
        data = dict(db.items())
        elapsed = now() - t0
        db.close()
        return elapsed, len(data)

    def w3(self, d: str, keys: list) -> float:
        db = self._open(d)
        t0 = now()
        for chunk in _chunks(keys):
            for k in chunk:
                db[k] = {"_done": True, "_tries": 1, "_aborted": False}
            db.commit()
        db.close()
        return now() - t0


class Shelve:
    """shelve (stdlib), ``sync()`` every 1000 writes, with the dbm backend this
    Python has (see the machine section of the report)."""

    name = "shelve"
    label = "shelve"

    def _write(self, d: str, passes: list[tuple[list, dict]]) -> None:
        db = shelve.open(os.path.join(d, "shelf"))
        for keys, value in passes:
            done, tries = value["_done"], value["_tries"]
            for chunk in _chunks(keys):
                for k in chunk:
                    db[k] = {"_done": done, "_tries": tries, "_aborted": False}
                db.sync()
        db.close()

    def w1(self, d: str, keys: list) -> float:
        t0 = now()
        self._write(
            d, [(keys, {"_done": False, "_tries": 0}), (keys, {"_done": True, "_tries": 1})]
        )
        return now() - t0

    def build(self, d: str, keys: list) -> float:
        t0 = now()
        self._write(d, [(keys, {"_done": False, "_tries": 0})])
        return now() - t0

    def w2(self, d: str) -> tuple[float, int]:
        t0 = now()
        db = shelve.open(os.path.join(d, "shelf"), flag="r")
        data = dict(db.items())
        elapsed = now() - t0
        db.close()
        return elapsed, len(data)

    def w3(self, d: str, keys: list) -> float:
        db = shelve.open(os.path.join(d, "shelf"))
        t0 = now()
        for chunk in _chunks(keys):
            for k in chunk:
                db[k] = {"_done": True, "_tries": 1, "_aborted": False}
            db.sync()
        db.close()
        return now() - t0


CONTENDERS: Final[dict[str, Any]] = {
    c.name: c
    for c in (
        Tastypy,
        TastypyMutate,
        Raw,
        RawLines,
        RawDict,
        PySetitem,
        Diskcache,
        Sqlitedict,
        Shelve,
    )
}
PEERS: Final = ("diskcache", "sqlitedict", "shelve")


# -- task loops (W5, W7): try a task, run it (nothing here), mark it done --------


def _nothing() -> None:
    return None


def tracker_loop(d: str, keys: list, ready: Callable[[], None] = _nothing) -> tuple[float, float]:
    """``try_it`` + ``mark_done`` per key on a tastypy Tracker; (start, end).

    ``ready`` is called once the store is open, before the clock starts."""
    Tracker = tracker_class()
    t = Tracker(os.path.join(d, "tracker"), max_tries=MAX_TRIES)
    ready()
    t0 = now()
    for k in keys:
        if t.try_it(k):
            t.mark_done(k)
    t.close()
    return t0, now()


def diskcache_loop(d: str, keys: list, ready: Callable[[], None] = _nothing) -> tuple[float, float]:
    """The same with diskcache, doing what tastypy's Tracker does: each try is
    one transaction (read-modify-write, atomic across processes) committed
    before the task runs, and it also writes the done mark of the task
    before it (the last one is written at the end). diskcache's default
    synchronous=NORMAL in WAL mode: a commit survives SIGKILL."""
    import diskcache

    cache = diskcache.Cache(os.path.join(d, "cache"), eviction_policy="none")
    ready()
    t0 = now()
    pending = None
    for k in keys:
        with cache.transact():
            if pending is not None:
                cache[pending[0]] = pending[1]
                pending = None
            rec = cache.get(k)
            if rec is None:
                rec = {"_done": False, "_tries": 0, "_aborted": False}
            ok = not rec["_done"] and not rec["_aborted"] and rec["_tries"] < MAX_TRIES
            if ok:
                rec["_tries"] += 1
                cache[k] = rec
        if ok:
            rec["_done"] = True  # the task ran; mark_done
            pending = (k, rec)
    if pending is not None:
        cache[pending[0]] = pending[1]
    cache.close()
    return t0, now()


def raw_loop(d: str, keys: list, ready: Callable[[], None] = _nothing) -> tuple[float, float]:
    """The limit: records in a dict; each try is one ``write`` to an O_APPEND
    file (in the OS's hands, so it survives SIGKILL) of the try's JSON line,
    preceded by the previous task's done line."""
    fd = os.open(os.path.join(d, "tasks.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    data: dict = {}
    write = os.write
    ready()
    t0 = now()
    pending = b""
    for k in keys:
        rec = data.get(k)
        if rec is None:
            rec = data[k] = {"_done": False, "_tries": 0, "_aborted": False}
        if not rec["_done"] and not rec["_aborted"] and rec["_tries"] < MAX_TRIES:
            rec["_tries"] += 1
            write(fd, pending + dumps([k, rec], option=_NL))
            rec["_done"] = True  # the task ran; mark_done
            pending = dumps([k, rec], option=_NL)
    if pending:
        write(fd, pending)
    os.close(fd)
    return t0, now()


def raw_locked_loop(
    d: str, keys: list, ready: Callable[[], None] = _nothing
) -> tuple[float, float]:
    """The floor of a tracker written in Python that decides each try under
    a lock, as tastypy does: per try, ``flock`` a lock file, look at the
    journal's end (``lseek``) for what another process appended (nothing,
    with one process), decide on the record in a dict, ``pwrite`` the
    previous task's done line and the try line at the end, unlock. Nothing
    more: no leases, no counts, nothing taken back if the write fails, no
    threads, no signal put off while the lock is held."""
    fd = os.open(os.path.join(d, "tasks.jsonl"), os.O_RDWR | os.O_CREAT, 0o666)
    lock = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT, 0o666)
    flock, lseek, pwrite = fcntl.flock, os.lseek, os.pwrite
    ex, un, seek_end = fcntl.LOCK_EX, fcntl.LOCK_UN, os.SEEK_END
    data: dict = {}
    ready()
    t0 = now()
    end = lseek(fd, 0, seek_end)
    pending = b""
    for k in keys:
        flock(lock, ex)
        try:
            if lseek(fd, 0, seek_end) != end:
                raise RuntimeError("another process appended: this loop is for one process")
            rec = data.get(k)
            if rec is None:
                rec = data[k] = {"_done": False, "_tries": 0, "_aborted": False}
            ok = not rec["_done"] and not rec["_aborted"] and rec["_tries"] < MAX_TRIES
            if ok:
                rec["_tries"] += 1
                end += pwrite(fd, pending + dumps([k, rec], option=_NL), end)
                pending = b""
        finally:
            flock(lock, un)
        if ok:
            rec["_done"] = True  # the task ran; mark_done
            pending = dumps([k, rec], option=_NL)
    if pending:
        pwrite(fd, pending, end)
    os.close(lock)
    os.close(fd)
    return t0, now()


TASK_LOOPS: Final[dict[str, Callable[..., tuple[float, float]]]] = {
    "tastypy": tracker_loop,
    "diskcache": diskcache_loop,
    "raw": raw_loop,
    "raw-locked": raw_locked_loop,
}


def count_done(contender: str, d: str, keys: list) -> int:
    """How many of ``keys`` are on disk as done (to check nothing was lost)."""
    if contender == "tastypy":
        Tracker = tracker_class()
        t = Tracker(os.path.join(d, "tracker"), max_tries=MAX_TRIES)
        try:
            return sum(1 for k in keys if k in t and t[k]["_done"])
        finally:
            t.close()
    if contender == "diskcache":
        import diskcache

        with diskcache.Cache(os.path.join(d, "cache"), eviction_policy="none") as cache:
            return sum(1 for k in keys if (cache.get(k) or {}).get("_done"))
    data = Raw.read(os.path.join(d, "tasks.jsonl"))
    return sum(1 for k in keys if k in data and data[k]["_done"])
