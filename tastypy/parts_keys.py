"""A parted tracker's per-key operations: the key's part answers.

A mixin of :class:`~tastypy.parts.PartedTracker` (which lists the others):
the mapping (``tracker[key]``, ``in``, ``update``), the reads of one task
(``done``, ``tries``, ``aborted``, answered from the part's files when it
is not loaded here), the calls on one key that the part's tracker makes
(``mark_done``, ``try_it``, ...: made here from a list of names), and the
calls on many keys, grouped by part (``add_many``, ``release``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from tastypy.errors import DuplicateKeyError
from tastypy.tracker import ProgressTracker

__all__ = ["KeysMixin"]


def _keys(keys: Any) -> list:
    if isinstance(keys, (str, int)) and not isinstance(keys, bool):
        return [keys]
    return list(keys)


class KeysMixin:
    """What acts on given keys, each in the part that holds it."""

    # Set by PartedTracker; from ManifestMixin and LoadingMixin.
    _path: str
    _n: int
    _settle: Any
    _by_part: Any
    _part: Any
    _for: Any
    _peek: Any
    _visiting: Any

    # -- the mapping ---------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        if not self._n:
            raise KeyError(key)
        return self._for(key)[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._for(key)[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._for(key)[key]

    def __contains__(self, key: object) -> bool:
        found = self._peek(key)
        if found is not None:
            return found[0]
        return key in self._for(key)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Set the items given (as :meth:`dict.update`), one part at a time."""
        items = dict(*args, **kwargs)
        for index, keys in self._by_part(items).items():
            self._part(index).update({k: items[k] for k in keys})

    # -- tasks, one key --------------------------------------------------------

    def done(self, key: Any) -> bool:
        """Whether ``key`` is done (False if it is not a task). Answered from the
        part's files when the part is not loaded here, without loading it."""
        found = self._peek(key)
        if found is not None:
            rec = found[1]
            return found[0] and type(rec) is dict and bool(rec.get("_done"))
        return self._for(key).done(key)

    check = done

    def tries(self, key: Any) -> int:
        found = self._peek(key)
        if found is not None and found[0] and type(found[1]) is dict:
            return found[1].get("_tries", 0)
        return self._for(key).tries(key)

    def aborted(self, key: Any) -> bool:
        found = self._peek(key)
        if found is not None and found[0] and type(found[1]) is dict:
            return bool(found[1].get("_aborted"))
        return self._for(key).aborted(key)

    # -- tasks, several keys -------------------------------------------------------

    def add_many(self, keys: Iterable) -> None:
        """Add every key as a new task; if any is there already, raise
        :class:`~tastypy.DuplicateKeyError` and add none (checked in every
        part first; a key another process adds meanwhile can still make the
        add of its part fail alone). On a tracker made with ``shards="auto"``,
        the first one fixes the part count (see ``docs/parts.md``)."""
        keys = list(keys)
        if keys:
            self._settle(len(keys))
        groups = self._by_part(keys)
        for index, group in groups.items():
            with self._visiting(index) as part:
                taken = None if part is None else next((k for k in group if k in part), None)
                if taken is None and len(set(group)) < len(group):
                    taken = next(k for k in group if group.count(k) > 1)
            if taken is not None:
                raise DuplicateKeyError(
                    f"{taken!r} is already a task of {self._path}, or given twice; nothing "
                    "was added. Use add_many_if_absent to skip the tasks already there."
                )
        self._add_groups(groups, "add_many")

    def add_many_if_absent(self, keys: Iterable) -> None:
        """Add the keys that are not tasks yet (the first call on a tracker made
        with ``shards="auto"`` fixes its part count, as :meth:`add_many` does)."""
        keys = list(keys)
        if keys:
            self._settle(len(keys))
        self._add_groups(self._by_part(keys), "add_many_if_absent")

    def _add_groups(self, groups: dict, how: str) -> None:
        for index in sorted(groups):
            with self._visiting(index, create=True) as part:
                getattr(part, how)(groups[index])

    def _each_part(self, keys: Iterable, how: Callable[[ProgressTracker, list], Any]) -> list:
        out: list = []
        for index, group in self._by_part(_keys(keys)).items():
            result = how(self._part(index), group)
            if result:
                out.extend(result)
        return out

    def release(self, keys: Iterable, *, tried: bool = False) -> list:
        """End this process's leases of ``keys`` (see :meth:`ProgressTracker.release`)."""
        return self._each_part(keys, lambda p, g: p.release(g, tried=tried))

    def renew(self, keys: Iterable, lease: float | None = None) -> list:
        """Extend this process's leases of ``keys`` (see :meth:`ProgressTracker.renew`)."""
        return self._each_part(keys, lambda p, g: p.renew(g, lease))

    def bump(self, keys: Iterable, lease: float = 0) -> list:
        """Move tasks ahead (see :meth:`ProgressTracker.bump`)."""
        return self._each_part(keys, lambda p, g: p.bump(g, lease))

    def retry(self, keys: Iterable) -> list:
        """Give the tasks their tries back (see :meth:`ProgressTracker.retry`)."""
        return self._each_part(keys, lambda p, g: p.retry(g))

    def ages(self, keys: Iterable) -> dict:
        """Seconds since done and of lease left, per key (see :meth:`ProgressTracker.ages`)."""
        out: dict = {}
        for index, group in self._by_part(_keys(keys)).items():
            out.update(self._part(index).ages(group))
        return out

    def lease_info(self, keys: Iterable | None = None) -> dict:
        """Leases of ``keys``, or of every task with one (visits every part)."""
        out: dict = {}
        if keys is not None:
            for index, group in self._by_part(_keys(keys)).items():
                out.update(self._part(index).lease_info(group))
            return out
        for index in range(self._n):
            with self._visiting(index) as part:
                if part is not None:
                    out.update(part.lease_info())
        return out


def _per_key(name: str) -> Callable:
    if name in _TRIES:

        def method(self: KeysMixin, key: Any, *args: Any, **kwargs: Any) -> Any:
            part = self._for(key)
            self._write_others(part)
            return getattr(part, name)(key, *args, **kwargs)

    else:

        def method(self: KeysMixin, key: Any, *args: Any, **kwargs: Any) -> Any:
            return getattr(self._for(key), name)(key, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(ProgressTracker, name).__doc__
    return method


#: Per-key methods that may grant a try: in one store, a granted try writes
#: every change made before it (a worker's last mark_done), so the same is
#: done for the changes waiting in the other parts loaded here.
_TRIES: Final = frozenset({"try_it", "attempt", "should_try_add"})

#: Methods that act on one key: the key's part answers.
_PER_KEY: Final = (
    "add",
    "add_if_absent",
    "mark_done",
    "mark_not_done",
    "increment_tries",
    "decrement_tries",
    "reset_tries",
    "abort",
    "unabort",
    "should_do",
    "should_do_add",
    "should_try",
    "should_try_add",
    "try_it",
    "attempt",
    "mark_dirty",
    "sync_key",
)
for _name in _PER_KEY:
    setattr(KeysMixin, _name, _per_key(_name))
