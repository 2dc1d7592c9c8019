"""What a POD kept from tastypy 0.0.3 beyond the mapping: ``iterkeys``,
``itervalues``, ``iteritems`` and ``convert_to_tracker``.

0.0.3 had no kind of directory: a POD whose values were rewritten into task
records could be opened as a tracker. Now the manifest says which it is
(``docs/format.md``), so the conversion also rewrites the manifest, in the
same compaction that writes the records.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tastypy import clones

__all__ = ["PODCompatMixin"]


class PODCompatMixin:
    """The 0.0.3 iterators and ``convert_to_tracker()`` of a POD (a tracker is
    one already)."""

    _data: dict
    _store: Any
    _closed: bool

    def iterkeys(self) -> Iterator:
        """Same as ``iter(pod.keys())``; kept for code written for tastypy 0.0.3."""
        return iter(self.keys())  # type: ignore[attr-defined]

    def itervalues(self) -> Iterator:
        """Same as ``iter(pod.values())``; kept for code written for tastypy 0.0.3."""
        return iter(self.values())  # type: ignore[attr-defined]

    def iteritems(self) -> Iterator:
        """Same as ``iter(pod.items())``; kept for code written for tastypy 0.0.3."""
        return iter(self.items())  # type: ignore[attr-defined]

    def convert_to_tracker(self, max_tries: int | None = 0) -> Any:
        """Turn this POD into a progress tracker, on disk, for every process.

        As in 0.0.3, each value becomes a task record not done and never
        tried: a dict keeps its fields (``_done`` and ``_tries`` are reset,
        ``_aborted`` is kept if it is there), any other value is kept under
        ``"val"``. Everything is checked before anything changes. Done under
        :meth:`locked`, in one compaction that also makes the directory a
        tracker's. This POD is closed (a POD cannot write a tracker's
        directory), and so are the other handles of this process on its
        state (``clone=True``); returns ``Tracker(path, max_tries)``, opened with this
        POD's lock settings. Other processes that hold the POD open get
        :class:`~tastypy.KindMismatchError` at their next sync.
        """
        from tastypy.tracker import ProgressTracker
        from tastypy.tracker.core import _check_record

        if self._closed:
            self._refuse_closed()  # type: ignore[attr-defined]
        store = self._store
        lock = store._lock
        with self.locked():  # type: ignore[attr-defined]
            records = []
            for key, value in self._data.items():
                record = dict(value) if type(value) is dict else {"val": value}
                record["_done"] = False
                record["_tries"] = 0
                _check_record(key, record)
                records.append((key, record))
            for key, record in records:
                self[key] = record  # type: ignore[index]
            store.kind = "tracker"
            try:
                self._sync(True, compact=True)  # type: ignore[attr-defined]
            except BaseException:
                store.kind = "pod"
                raise
            # The other handles of this process on the same state
            # (clone=True) are closed with it: their store now writes a
            # tracker's directory, which POD values must not go to.
            for other in clones.others(self):
                other._end_handle()
        self.close()  # type: ignore[attr-defined]
        return ProgressTracker(
            store.path, max_tries, lock=lock.requested, lock_timeout=lock.timeout
        )
