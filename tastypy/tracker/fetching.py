"""Compute once: :meth:`fetch`, and :func:`compute_once` under it and ``memoize``.

A result is computed by the first process (and thread) that asks for it, as
an :meth:`attempt` at the task: claimed under the lock with a lease, its
result, error, times and log recorded in the task's record. Whoever asks
meanwhile waits for the holder to finish (polling, as the holder's lease
keeps others off while it lives) and then gets the stored result; if the
holder dies, its lease ends and the next one asking computes it. Only the
tracker's public calls are used, so a tracker in parts does the same.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from tastypy.codec import encode_value, loads
from tastypy.errors import TaskFailedError

__all__ = ["FetchMixin", "compute_once"]

#: The record's field holding a fetched result.
RESULT_FIELD: Final = "result"
#: Seconds between two looks at a task another process is computing: from
#: the first to the last, growing by half each time.
_FIRST_WAIT: Final = 0.02
_LAST_WAIT: Final = 1.0

# One lock per (tracker directory, key) being computed in this process: its
# threads hold leases as one holder, whichever handle on the directory they
# use (clone=True or not), so the lease cannot keep them apart.
_gates: dict = {}
_gates_lock = threading.Lock()


@contextmanager
def _gate(tracker: Any, key: Any) -> Iterator[None]:
    name = (os.path.realpath(tracker.path), key)
    with _gates_lock:
        entry = _gates.get(name)
        if entry is None:
            entry = _gates[name] = [threading.Lock(), 0]
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _gates_lock:
            entry[1] -= 1
            if entry[1] == 0:
                del _gates[name]


class FetchMixin:
    """:meth:`fetch`: a task's result, computed once."""

    def fetch(self, key: Any, fn: Callable[..., Any], /, *args: Any, recompute: bool = False,
              **kwargs: Any) -> Any:  # fmt: skip
        """The result of the task ``key``: ``fn(*args, **kwargs)``, run only if
        the task is not done (hadrosaur's ``fetch``).

        The run is an :meth:`attempt` at the task (added if absent): its
        return value goes to the record's ``result`` field, as JSON stores
        it (a tuple comes back a list, every time, the first included);
        start and end times to ``_started`` and ``_ended``; what it prints
        and logs to the attempt's log file (and to the screen as usual; see
        :meth:`paths`). If ``fn`` raises, the error is recorded in
        ``_error`` and raised again; the next fetch tries again. A result
        JSON cannot hold fails the attempt with ``InvalidValueError``.

        If the task is done, its stored ``result`` is returned without
        running anything (None if it was marked done without one);
        ``recompute=True`` runs ``fn`` again and stores the new result.
        (``key`` and ``fn`` are positional only: ``fn`` may take keyword
        arguments of those names.)
        While another process (or thread) computes the task, this waits
        for it and returns what it stored. A task aborted, or out of tries
        (``max_tries``), raises :class:`~tastypy.TaskFailedError`. Example::

            def area(name, side):
                print("computing", name)
                return {"area": side * side}

            tracker.fetch("square-3", area, "square-3", 3.0)   # runs area
            tracker.fetch("square-3", area, "square-3", 3.0)   # {'area': 9.0}
        """
        return compute_once(
            self, key, lambda: fn(*args, **kwargs), recompute=recompute, capture=True, echo=True
        )


def compute_once(
    tracker: Any,
    key: Any,
    call: Callable[[], Any],
    *,
    recompute: bool = False,
    capture: bool = False,
    echo: bool = False,
) -> Any:
    """``call()``'s result for the task ``key`` of ``tracker``, computed only
    if the task is not done (see :meth:`FetchMixin.fetch`)."""
    with _gate(tracker, key):
        if recompute:
            _reset(tracker, key)
        wait = _FIRST_WAIT
        while True:
            with tracker.sync_lock:
                if tracker.done(key):
                    return _stored(tracker, key)
                task = tracker.attempt(key, reraise=True, capture=capture, echo=echo)
            if task:
                return _run(tracker, task, call)
            # Not granted: done meanwhile, leased to another process, or
            # not to be run at all.
            with tracker.sync_lock:
                if tracker.done(key):
                    return _stored(tracker, key)
                _refuse_stuck(tracker, key)
            time.sleep(wait)
            wait = min(wait * 1.5, _LAST_WAIT)


def _run(tracker: Any, task: Any, call: Callable[[], Any]) -> Any:
    """Run ``call`` as ``task``; record and return its result as stored."""
    with task:
        value = call()
        # What a reader gets back from the file, the first time too.
        stored = loads(encode_value(task.key, value))
        with tracker.sync_lock:
            task[RESULT_FIELD] = stored
    # Written now (not fsynced), for those waiting in other processes.
    with tracker.sync_lock:
        tracker.flush()
    return stored


def _stored(tracker: Any, key: Any) -> Any:
    rec = tracker[key]
    return rec.get(RESULT_FIELD) if isinstance(rec, dict) else None


def _reset(tracker: Any, key: Any) -> None:
    """Have a done task run again, with its tries given back."""
    with tracker.sync_lock:
        if key not in tracker:
            return
        tracker.mark_not_done(key)
        if tracker.max_tries and tracker.tries(key):
            tracker.retry([key])


def _refuse_stuck(tracker: Any, key: Any) -> None:
    """Raise if ``key``'s task will not run however long one waits."""
    if tracker.aborted(key):
        raise TaskFailedError(
            f"the task {key!r} in {tracker.path} is aborted, so it is not run; "
            f"tracker.unabort({key!r}) lets it run again.",
            key,
        )
    most = tracker.max_tries
    tries = tracker.tries(key)
    if most and tries >= most:
        rec = tracker[key]
        error = rec.get("_error") if isinstance(rec, dict) else None
        last = f" Its last error: {error['type']}: {error['message']}." if error else ""
        raise TaskFailedError(
            f"the task {key!r} in {tracker.path} was tried {tries} times, its max_tries.{last} "
            f"tracker.retry([{key!r}]) gives its tries back (or fetch with recompute=True).",
            key,
            error,
        )
