"""What goes through a parted tracker's parts one at a time, each loaded only
for its visit: iteration, ``to_dict``, ``todo_keys`` and the other
iterators of the 0.0.3 API, and ``claim``.

A mixin of :class:`~tastypy.parts.PartedTracker` (which lists the others).
Keys come part by part, in insertion order within a part: a job's memory
then holds one part at a time, whatever the size of the tracker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tastypy.errors import InvalidArgumentError
from tastypy.tracker import ProgressTracker

__all__ = ["VisitsMixin"]


class VisitsMixin:
    """Passes over the parts: iterating, copying, claiming."""

    # Set by PartedTracker; from ManifestMixin, LoadingMixin and CountsMixin.
    _open: dict
    _claim_at: int
    _n: int
    _by_part: Any
    _part: Any
    _visiting: Any
    _write_others: Any
    _pinned: Any
    _drop: Any
    _finished: Any
    _each_part: Any

    def __iter__(self) -> Iterator:
        """Every key, part by part; within a part, in the order added."""
        for index in range(self._n):
            with self._visiting(index) as part:
                keys = list(part) if part is not None else []
            yield from keys

    def to_dict(self) -> dict:
        """Every task and its record, as a plain dict (loads every part in turn)."""
        out = {}
        for index in range(self._n):
            with self._visiting(index) as part:
                if part is not None:
                    out.update(part.to_dict())
        return out

    copy = to_dict

    def todo_keys(self, allow_aborted: bool = False, keys: Iterable | None = None) -> Iterator:
        """The keys of tasks to do (see :meth:`ProgressTracker.todo_keys`), part
        by part; with ``keys``, those of them, part by part and in their
        order within a part."""
        groups = None if keys is None else self._by_part(keys)
        for index in range(self._n) if groups is None else list(groups):
            some = None if groups is None else groups[index]
            with self._visiting(index) as part:
                found = [] if part is None else list(part.todo_keys(allow_aborted, some))
            yield from found

    def claim(self, n: int = 1, *, lease: float | None = None, peek: bool = False) -> list:
        """Lease up to ``n`` tasks to this process (see :meth:`ProgressTracker.claim`).

        Parts are visited one at a time, from where this process last found
        work (at first, a part chosen by this process's identity, so workers
        start apart), each loaded only while it is visited; parts whose
        up-to-date summary says every task is finished are skipped unread.
        The keys come from as few parts as possible, in each part's claim
        order. An empty list means no part has anything to claim now.
        ``peek=True``: the keys it would take, taking nothing.
        """
        if type(n) is not int or n < 0:
            raise InvalidArgumentError(f"n must be an int >= 0 (how many tasks), got {n!r}.")
        got: list = []
        for step in range(self._n if n else 0):
            index = (self._claim_at + step) % self._n
            if index not in self._open and self._finished(index):
                continue
            part = self._part(index)
            self._write_others(part)
            got += part.claim(n - len(got), lease=lease, peek=peek)
            if len(got) >= n:
                if not peek:
                    self._claim_at = index
                break
            if not self._pinned(part):
                self._drop(index)
        return got

    def end_leases(
        self, holder: str | None = None, *, expired: bool = False, keys: Iterable | None = None
    ) -> list:
        """End other processes' leases now (see :meth:`ProgressTracker.end_leases`);
        without ``keys``, in every part."""
        if keys is not None:
            return self._each_part(keys, lambda p, g: p.end_leases(holder, expired=expired, keys=g))
        out: list = []
        for index in range(self._n):
            with self._visiting(index) as part:
                if part is not None:
                    out += part.end_leases(holder, expired=expired)
        return out

    def errors(self) -> dict:
        """The last error of each task not done whose last attempt raised
        (see :meth:`ProgressTracker.errors`), part by part."""
        out: dict = {}
        for index in range(self._n):
            with self._visiting(index) as part:
                if part is not None:
                    out.update(part.errors())
        return out


def _per_part_iter(name: str) -> Callable:
    def method(self: VisitsMixin, *args: Any, **kwargs: Any) -> Iterator:
        for index in range(self._n):
            with self._visiting(index) as part:
                found = [] if part is None else list(getattr(part, name)(*args, **kwargs))
            yield from found

    method.__name__ = method.__qualname__ = name
    method.__doc__ = (getattr(ProgressTracker, name).__doc__ or "") + " (Part by part.)"
    return method


for _name in (
    "failed_keys",
    "todo_items",
    "todo_values",
    "try_keys",
    "try_items",
    "try_values",
    "aborted_keys",
    "aborted_items",
    "aborted_values",
):
    setattr(VisitsMixin, _name, _per_part_iter(_name))
