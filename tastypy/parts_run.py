"""Running tasks on a tracker split into parts: ``attempts()`` and ``run()``.

A mixin of :class:`~tastypy.parts.PartedTracker`, kept apart so that the
tracker's class stays about parts; ``run`` hands the work to
:mod:`tastypy.executor` as :meth:`ProgressTracker.run` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tastypy.errors import InvalidArgumentError
from tastypy.tracker import Task
from tastypy.tracker._common import _check_span
from tastypy.tracker.attempts import _Progress

__all__ = ["Running"]


class Running:
    """What :class:`~tastypy.parts.PartedTracker` offers to run its tasks."""

    # Set by PartedTracker.
    _closed: bool
    _options: dict
    _lock: Any
    _open: dict

    # -- running tasks -------------------------------------------------------------

    def attempts(
        self,
        keys: Iterable | None = None,
        *,
        reraise: bool = False,
        allow_aborted: bool = False,
        lease: float | None = None,
        progress: bool | str = False,
        capture: bool = False,
        echo: bool = False,
    ) -> Iterator[Task]:
        """One :class:`~tastypy.tracker.Task` per task to try now (see
        :meth:`ProgressTracker.attempts`), part by part for ``keys=None``.
        ``progress=True`` shows done / total, rate and ETA, counted from
        the parts' summaries and the tasks ended here. With ``capture=True``
        each attempt's log goes under the top directory (see :meth:`paths`)."""
        if keys is not None:
            keys = list(keys)
            self.add_many_if_absent(keys)
        bar = _Progress(_Counts(self), progress) if progress else None
        try:
            for key in self if keys is None else keys:
                part = self._for(key)
                self._write_others(part)
                task = part.attempt(
                    key, reraise=reraise, allow_aborted=allow_aborted, lease=lease,
                    capture=capture, echo=echo,
                )  # fmt: skip
                if task:
                    yield task
                    if bar is not None:
                        bar.step(task.outcome or "")
        finally:
            if bar is not None:
                bar.close()

    def run(
        self,
        fn: Callable[[Any], Any],
        keys: Iterable | None = None,
        *,
        executor: Any = None,
        lease: float | None = None,
        chunksize: int = 1,
        max_pending: int | None = None,
        progress: bool | str = False,
        result_field: str | None = "result",
        allow_aborted: bool = False,
        capture: bool = False,
        echo: bool = False,
    ) -> dict:
        """Run ``fn(key)`` for every task not done, through ``executor`` (see
        :meth:`ProgressTracker.run`: the same arguments and summary).

        The tasks are handed out part by part (in ``keys``' order within a
        part), so that each worker holds one or two parts at a time. Each
        worker opens the tracker by its path, as for a tracker in one
        store. At the end the parts the workers wrote are counted again, so
        that :meth:`num_done` and :meth:`stats` say what was done.
        """
        from tastypy.executor import run_tasks

        if self._closed:
            raise InvalidArgumentError(f"{self!r} is closed; open it again to use it.")
        if lease is not None:
            _check_span(lease, "lease")
        try:
            return run_tasks(
                self,
                fn,
                keys,
                executor,
                lease=lease,
                chunksize=chunksize,
                max_pending=max_pending,
                progress=(lambda: _Progress(_Counts(self), progress)) if progress else None,
                result_field=result_field,
                allow_aborted=allow_aborted,
                options=self._worker_options(),
                capture=capture,
                echo=echo,
            )
        finally:
            if executor is not None and not self._closed:
                # A worker's last parts get no summary when its process ends
                # without atexit (a process pool's workers do).
                self._totals(exact=True)

    def _worker_options(self) -> dict:
        """How a worker opens this tracker: with the same settings."""
        options = dict(self._options)
        for name in ("gzipped", "file_size"):
            options.pop(name)
        return options

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run, as for a file."""
        return self._closed

    @property
    def sync_lock(self) -> Any:
        """The re-entrant lock that threads sharing this object hold around
        a change made in several steps (see :attr:`ProgressTracker.sync_lock`);
        it also guards which parts are loaded."""
        return self._lock

    def flush(self) -> None:
        """Write every open part's changes to its journal now, without fsync
        (see :meth:`ProgressTracker.flush`)."""
        for part in list(self._open.values()):
            part.flush()


class _Counts:
    """What a progress display asks of a tracker (``len()`` and
    ``num_done()``), for a parted one: summed over the summaries at most
    every few seconds rather than at every task."""

    def __init__(self, tracker: Any, every: float = 2.0):
        self._tracker = tracker
        self._every = every
        self._at = -every
        self._totals: dict = {}

    def _get(self) -> dict:
        if time.monotonic() - self._at >= self._every:
            self._totals = self._tracker._totals()
            self._at = time.monotonic()
        return self._totals

    def __len__(self) -> int:
        return self._get()["total"]

    def num_done(self) -> int:
        return self._get()["done"]
