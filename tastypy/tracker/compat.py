"""The tastypy 0.0.3 API kept as it was: ``should_do``, ``should_try``
and their ``_add`` forms, the ``todo_*``, ``try_*`` and ``aborted_*``
iterators, tries counted by hand and ``check``. Each asks the one run rule
(:func:`tastypy.records.may_run`) or :meth:`try_it`'s decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tastypy import records
from tastypy.errors import InvalidArgumentError


class CompatMixin:
    """The 0.0.3 API: should_do, should_try, the todo/try/aborted iterators."""

    # -- deciding what to do ---------------------------------------------------------

    def should_do(self, key: Any, allow_aborted: bool = False) -> bool:
        """True if the task is not done (or done and due again, with
        :attr:`redo_after`), not aborted (unless ``allow_aborted``) and
        tried fewer than ``max_tries`` times."""
        return records.may_run(
            self._rec(key), self._max_tries, allow_aborted, redo=self._redo(self._clock())
        )

    def should_do_add(self, key: Any, allow_aborted: bool = False) -> bool:
        """Like :meth:`should_do`, adding the key first if it is not there."""
        self.add_if_absent(key)
        return self.should_do(key, allow_aborted)

    def should_try(self, key: Any, allow_aborted: bool = False) -> bool:
        """Like :meth:`should_do`, and if True, count a try (as :meth:`try_it`)."""
        return self._try(key, False, allow_aborted)

    def should_try_add(self, key: Any, allow_aborted: bool = False) -> bool:
        """Like :meth:`should_try`, adding the key first if it is not there."""
        return self._try(key, True, allow_aborted)

    def check(self, key: Any) -> bool:
        """Whether the task is done (False if it is not there), as in the 0.0.3 manual."""
        return self.done(key)

    def convert_to_tracker(self, max_tries: Any = None) -> Any:
        """A tracker is one already (``POD.convert_to_tracker`` makes one):
        returns itself, with ``max_tries`` set when given."""
        if max_tries is not None:
            self.max_tries = max_tries
        return self

    # -- tries counted by hand ---------------------------------------------------

    def increment_tries(self, key: Any) -> None:
        """Count one more try (without the checks and the write of :meth:`try_it`)."""
        with self._sync_lock:  # see mark_done
            rec = self._rec(key)
            tries = rec["_tries"]
            rec["_tries"] = tries + 1
            if not tries:
                self._n_tried += 1
            self._touch(key)

    def decrement_tries(self, key: Any) -> None:
        """Count one try less; a task never tried is refused."""
        with self._sync_lock:  # see mark_done
            rec = self._rec(key)
            tries = rec["_tries"]
            if tries <= 0:
                raise InvalidArgumentError(
                    f"{key!r} has 0 tries; tries cannot go below 0 (see reset_tries)."
                )
            rec["_tries"] = tries - 1
            if tries == 1:
                self._n_tried -= 1
            self._touch(key)

    def reset_tries(self, key: Any) -> None:
        """Set the task's tries back to 0."""
        with self._sync_lock:  # see mark_done
            rec = self._rec(key)
            if rec["_tries"]:
                rec["_tries"] = 0
                self._n_tried -= 1
                self._touch(key)

    # -- iterating -------------------------------------------------------------------

    def todo_keys(self, allow_aborted: bool = False, keys: Iterable | None = None) -> Iterator:
        """The keys of tasks to do: not done (or done and due again, with
        :attr:`redo_after`), not aborted (unless ``allow_aborted``), tried
        fewer than ``max_tries`` times. In order; with ``keys``, those of
        them (in their order; keys not here are not to do)."""
        data = self._data
        redo = self._redo(self._clock())
        for key in list(data) if keys is None else list(keys):
            if records.may_run(data.get(key), self._max_tries, allow_aborted, redo=redo):
                yield key

    def todo_items(self, allow_aborted: bool = False) -> Iterator[tuple]:
        """``(key, record)`` for each of :meth:`todo_keys`."""
        for key in self.todo_keys(allow_aborted):
            yield key, self[key]

    def todo_values(self, allow_aborted: bool = False) -> Iterator[dict]:
        """The record of each of :meth:`todo_keys`."""
        for key in self.todo_keys(allow_aborted):
            yield self[key]

    def try_keys(self, allow_aborted: bool = False) -> Iterator:
        """Like :meth:`todo_keys`, counting a try (as :meth:`try_it`) for each key yielded."""
        data = self._data
        for key in list(data):
            if key in data and self._try(key, False, allow_aborted):
                yield key

    def try_items(self, allow_aborted: bool = False) -> Iterator[tuple]:
        """``(key, record)`` for each of :meth:`try_keys`."""
        for key in self.try_keys(allow_aborted):
            yield key, self[key]

    def try_values(self, allow_aborted: bool = False) -> Iterator[dict]:
        """The record of each of :meth:`try_keys`."""
        for key in self.try_keys(allow_aborted):
            yield self[key]

    def aborted_keys(self) -> Iterator:
        """The keys of aborted tasks, in order."""
        data = self._data
        for key in list(data):
            rec = data.get(key)
            if records.is_record(rec) and rec.get("_aborted"):
                yield key

    def aborted_items(self) -> Iterator[tuple]:
        """``(key, record)`` for each aborted task."""
        for key in self.aborted_keys():
            yield key, self[key]

    def aborted_values(self) -> Iterator[dict]:
        """The record of each aborted task."""
        for key in self.aborted_keys():
            yield self[key]
