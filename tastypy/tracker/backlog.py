"""Others' records, filed by key as they are read and taken in only when
needed (the backlog), so a worker that only claims and marks done never
parses what the other workers did.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import repeat
from typing import Any, Final

import orjson

from tastypy.codec import holds_unwritable
from tastypy.storage import DELETED
from tastypy.storage.tail import changes_of
from tastypy.tracker._common import _ANY, _NOT_OURS

#: Keys of others' records kept filed, not taken in, at most (a line each:
#: some 200 bytes); past that they are taken in.
_BACKLOG_MAX: Final = 250_000


#: In committed batches (searched with a newline put before the first
#: line): the key of a record line whose key is a string (written without
#: escapes: a text with a backslash is parsed instead), and the count of a
#: commit line. The key's pattern starts with a fixed text, which the
#: regular expression engine looks for with a fast scan, and stops after
#: the key: 30 % less than a pattern that takes the whole line.
_KEY: Final = re.compile(rb'\n\["([^"\n]*)"[,\]]')
_COMMIT: Final = re.compile(rb'\{"sync":(\d+)\}\n')


def _last_line(text: bytes, kb: bytes) -> bytes:
    """The last line of the key ``kb`` in a text filed for it."""
    needle = b'\n["' + kb + b'"'
    start = text.rfind(needle) + 1
    if not start and not text.startswith(needle[1:]):
        return b""
    return text[start : text.index(b"\n", start)]


def _lines_by_key(text: bytes) -> dict:
    """The last line of each key in a text filed (by the key's bytes)."""
    return {line[2 : line.index(b'"', 2)]: line for line in text.split(b"\n") if line[:2] == b'["'}


class BacklogMixin:
    """Others' records filed by key, and taken in when needed."""

    def _init_backlog(self) -> None:
        """Start with none of others' records filed."""
        # Others' records read and not yet taken in (see _data): by the
        # key's UTF-8 bytes, the batches read at once (bytes) that hold the
        # key's last line.
        self._backlog: dict = {}
        # Set at close when the backlog was left aside: a read loads afresh.
        self._stale = False
        self._closing = False

    # -- others' records, taken in when needed -------------------------------

    # With many processes, each reads every record the others write: a
    # claim and a done mark per task. Parsing them and taking them in cost
    # ~2.5 µs each, so N processes spent most of their time on the N - 1
    # others' records. Instead, batches read while claiming are only split
    # for their keys, each filed with the text that holds it (the backlog,
    # ~0.3 µs a line: no line is cut out, no object made but the key); a
    # claim looks up its key there and cuts its line out of that text, and
    # everything else reads ``_data``, which takes the backlog in first. So
    # a worker that only claims and marks done never parses what the
    # others did.

    @property
    def _data(self) -> dict:
        if (self._backlog or self._stale) and not self._closing:
            self._take_backlog()
        return self._d

    @_data.setter
    def _data(self, value: dict) -> None:
        # A load: it holds everything the backlog held.
        self._d = value
        self._backlog = {}

    def _take_backlog(self) -> None:
        # Under the sync lock, like every change to the backlog: a read in
        # one thread must not take it in while another thread is between
        # filing what it read and dropping what it wrote over.
        with self._sync_lock:
            if self._backlog:
                self._flush_backlog()
            elif self._stale:
                self._load_stale()

    def _file(self, chunk: bytes) -> int | None:
        """File the committed batches ``chunk`` (others') into the backlog:
        how many records they hold; None, with nothing filed, if they are
        not all plain records of keys written without escapes (then the
        caller parses them)."""
        if b"\\" in chunk or chunk[-1:] != b"\n":
            return None
        keys = _KEY.findall(b"\n" + chunk)
        commits = _COMMIT.findall(chunk)
        if len(keys) + len(commits) != chunk.count(b"\n"):
            return None  # a line that is neither
        if sum(map(int, commits)) != len(keys):
            return None
        self._backlog.update(zip(keys, repeat(chunk)))
        return len(keys)

    def _known(self, key: Any) -> dict:
        """The data, with whatever others wrote of ``key`` taken in."""
        if self._closing:
            return self._d
        if self._stale:
            self._load_stale()
        elif self._backlog:
            self._take_key(key)
        return self._d

    def _flush_backlog(self, claims: Any = ()) -> None:
        """Take in the backlog (see :meth:`_absorb` for ``claims``)."""
        with self._sync_lock:
            self._flush_backlog_locked(claims)

    def _flush_backlog_locked(self, claims: Any) -> None:
        backlog = self._backlog
        self._backlog = {}
        by_text: dict = {}  # id of a text filed -> its lines by key
        lines = []
        for kb, text in backlog.items():
            found = by_text.get(id(text))
            if found is None:
                # Filed unchecked (see tail.peek): a line another tool wrote
                # that could not be written back makes the files load, which
                # refuses it.
                found = by_text[id(text)] = {} if holds_unwritable(text) else _lines_by_key(text)
            lines.append(found.get(kb, b"?"))  # (?: not JSON, so reloaded)
        text = b"[" + b",".join(lines) + b"]"
        paused = gc.isenabled()
        if paused:
            gc.disable()  # see tail.changes_of
        try:
            try:
                items = orjson.loads(text)
            except ValueError:
                items = None
            changes: list | None = None if items is None else []
            if items is not None:
                append = changes.append
                for item in items:
                    if type(item) is not list or type(item[0]) is not str or len(item) > 2:
                        changes = None
                        break
                    append((item[0], item[1] if len(item) == 2 else DELETED))
        finally:
            if paused:
                gc.enable()
        if changes is None:
            # Not what was filed as records: load the files, which names a
            # damaged line (and refuses it again at every later read).
            try:
                self._reload_merging(claims)
            except BaseException:
                self._backlog = backlog
                raise
        else:
            self._absorb(changes, claims)

    def _take_in_text(self, new: tuple, claims: Any) -> None:
        """Others' committed batches read by the store (``(text, bytes or
        commits consumed, first line)``, see :meth:`Store.read_new_text`):
        filed into the backlog, or parsed and taken in, and counted."""
        text, consumed, first_line = new
        self._store.took(consumed, self._take_in_bytes(text, claims, first_line))

    def _take_in_bytes(self, text: bytes, claims: Any, first_line: Any = None) -> int:
        """Others' whole committed batches ``text``: filed into the backlog
        (the records of ``claims`` taken in at once), or parsed and taken
        in. Returns how many records they hold."""
        filed = self._file(text)
        if filed is None:
            changes, count = changes_of(text, self._store.journal_path, first_line)
            self._absorb(changes, claims)
            return count
        if claims is _ANY or len(self._backlog) > _BACKLOG_MAX:
            self._flush_backlog(claims)  # memory stays bounded
        else:
            for key in claims:
                self._take_key(key, claims)
        return filed

    def _take_key(self, key: Any, claims: Any = ()) -> None:
        """Take in others' last record of ``key`` if the backlog holds one
        (only that one: the others wait)."""
        if type(key) is not str or key.encode() not in self._backlog:
            # (Read without the sync lock: a line another thread files
            # meanwhile is as if filed just after this call.)
            return
        with self._sync_lock:
            self._take_key_locked(key, claims)

    def _take_key_locked(self, key: str, claims: Any) -> None:
        kb = key.encode()
        text = self._backlog.pop(kb, None)
        if text is None:
            return
        line = _last_line(text, kb)
        try:
            # Filed unchecked (see tail.peek): a line another tool wrote
            # that could not be written back is refused here.
            item = None if holds_unwritable(line) else orjson.loads(line)
        except ValueError:
            item = None
        if type(item) is not list or item[0] != key or not 0 < len(item) < 3:
            self._backlog[kb] = text
            self._flush_backlog(claims)  # which reloads, naming the damage
            return
        change = [(key, item[1] if len(item) == 2 else DELETED)]
        if key in self._dirty or self._pending_keys:
            self._absorb(change, claims)  # ours may win, or merge
        else:
            self._take_in(change, _NOT_OURS)

    def _live_count(self) -> int:
        # Those held, and at most one per key waiting in the backlog
        # (counting some twice only puts a compaction off).
        return len(self._d) + len(self._backlog)

    def _as_on_disk(self, bad: list) -> dict | None:
        if self._backlog or self._stale:
            return None  # others' records are not all in memory
        return super()._as_on_disk(bad)

    def _load_stale(self) -> None:
        """A read after close, whose backlog was left aside: load afresh."""
        self._stale = False
        self._data = self._store.load()
        self._dirty = {}
        self._added = {}
        self._pending = bytearray()
        self._pending_keys = []
        self._loaded()

    @contextmanager
    def _leaving_backlog(self) -> Iterator[None]:
        """For the last sync (close, exit): others' records in the backlog
        are not taken in (with many processes that would parse everything
        the others did, only to throw it away), except those of the keys
        this process writes, which are merged with its changes (see
        :meth:`_take_ours`). A read afterwards loads afresh."""
        if not self._backlog or self._closing:
            yield
            return
        self._closing = True
        try:
            yield
        finally:
            self._closing = False
            self._backlog = {}
            self._stale = True

    def _take_ours(self) -> None:
        """Before this process writes its changes (under the sync lock):
        others' records of the same keys, filed in the backlog, are taken in
        first and merged with ours. Left there, ours would be written over
        them unmerged, and the write would drop them as older."""
        backlog = self._backlog
        keys = [
            key
            for key in (*self._dirty, *self._pending_keys, *self._added)
            if type(key) is str and key.encode() in backlog
        ]
        for key in keys:
            self._take_key_locked(key, ())
