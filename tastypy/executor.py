"""Run a function over a tracker's tasks through any ``concurrent.futures`` executor.

:meth:`ProgressTracker.run <tastypy.ProgressTracker.run>` is the public face;
this module holds what runs on each side. The calling process picks the
tasks not done and hands them out in chunks; each worker (a process of a
pool, a thread, a dask worker, an MPI rank) opens the tracker by its path
(once per process), claims each task itself (so two ``run`` calls, or a
``run`` and a plain ``try_it`` loop, never run one task twice), runs the
function, and writes the outcome into the task's record before it reports
back. So what was done survives the death of the calling process, and
running the same call again does only what is left. See ``docs/tracker.md``.

Imports point one way: the tracker calls in here, and this module uses only
the tracker's public API (``tests/test_public_api.py`` checks it). Flows
(``tastypy.flow``) hand their tasks to executors through the same worker
side: :func:`run_chunk`, :func:`worker_tracker`, :func:`serving` and
:func:`as_executor`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from tastypy.errors import InvalidArgumentError, InvalidValueError

__all__ = ["as_executor", "run_chunk", "run_tasks", "serving", "worker_tracker"]

log = logging.getLogger("tastypy")

#: How many failed tasks the summary lists (the records hold them all).
_ERRORS_SHOWN: Final = 100

#: Trackers opened by workers, per (path, process): a worker process opens
#: each tracker once, and threads of one process share it. The process that
#: calls run() puts its own tracker here, for workers that are its threads.
_open: dict = {}
_open_lock = threading.Lock()


def worker_tracker(path: str, cls: type, options: dict) -> Any:
    """The tracker at ``path`` as this process's workers use it: opened
    once per process (``cls(path, **options)``), shared by its threads, or
    the caller's own tracker while :func:`serving` it."""
    key = (path, os.getpid())
    with _open_lock:
        tracker = _open.get(key)
        if tracker is None or tracker.closed:
            tracker = cls(path, **options)
            _open[key] = tracker
        return tracker


@contextmanager
def serving(tracker: Any) -> Iterator[None]:
    """While in the block, workers of this process (threads of a pool, or
    the caller itself) use ``tracker`` instead of opening its path again."""
    key = (tracker.path, os.getpid())
    with _open_lock:
        before = _open.get(key)
        _open[key] = tracker
    try:
        yield
    finally:
        with _open_lock:
            if before is None:
                _open.pop(key, None)
            else:
                _open[key] = before


def run_chunk(
    path: str,
    cls: type,
    options: dict,
    fn: Callable[[Any], Any],
    keys: list,
    lease: float | None,
    field: str | None,
    allow_aborted: bool,
    capture: bool = False,
    echo: bool = False,
) -> list:
    """What a worker runs: each key of ``keys`` through :func:`_run_one`."""
    tracker = worker_tracker(path, cls, options)
    return [_run_one(tracker, fn, key, lease, field, allow_aborted, capture, echo) for key in keys]


def _run_one(
    tracker: Any,
    fn: Callable[[Any], Any],
    key: Any,
    lease: float | None,
    field: str | None,
    allow_aborted: bool,
    capture: bool = False,
    echo: bool = False,
) -> tuple:
    """Claim ``key``, run ``fn(key)``, record the outcome and write it;
    with ``capture``, what ``fn`` prints and logs goes to the attempt's log.

    Returns ``(key, outcome, error)``: outcome ``"done"``, ``"failed"``
    (``error`` says why; the record's ``_error`` has the traceback) or
    ``"skipped"`` (not to be run here: done, aborted, out of tries or
    leased to another process by now).
    """
    guard = tracker.sync_lock  # threads of one process share the tracker
    with guard:
        task = tracker.attempt(
            key, reraise=True, allow_aborted=allow_aborted, lease=lease, capture=capture, echo=echo
        )
        if not task:
            return key, "skipped", None
    try:
        with task.captured():
            value = fn(key)
    except Exception as exc:
        return _failed(tracker, task, exc)
    except BaseException as exc:  # Ctrl-C, SystemExit: the try is given back
        with guard:
            task.end(exc)
            tracker.flush()
        raise
    with guard:
        if field is not None and value is not None:
            try:
                # Checked by the codec, as every value stored: a result JSON
                # cannot hold fails this attempt, and the run goes on.
                task[field] = value
            except InvalidValueError as exc:
                return _failed(tracker, task, exc)
        outcome = task.end()
        tracker.flush()
    if outcome == "failed":  # a field left out as the attempt ended
        return key, outcome, _describe(task.error)
    return key, "done", None


def _failed(tracker: Any, task: Any, exc: Exception) -> tuple:
    """End ``task`` as failed with ``exc``, written; the ``_run_one`` answer."""
    with tracker.sync_lock:
        task.end(exc)
        tracker.flush()
    return task.key, "failed", _describe(exc)


def _describe(exc: BaseException | None) -> str:
    return f"{type(exc).__name__}: {exc}"


def as_executor(executor: Any) -> cf.Executor:
    """``executor`` as a ``concurrent.futures.Executor``: itself, or a dask
    ``Client``'s (anything with ``get_executor()``), which dask is not
    imported to recognise."""
    if isinstance(executor, cf.Executor):
        return executor
    # A dask.distributed Client (or anything else offering one). Not "pure":
    # dask would otherwise hand back the result of an earlier identical call.
    get = getattr(executor, "get_executor", None)
    if callable(get):
        try:
            return get(pure=False)
        except TypeError:
            return get()
    raise InvalidArgumentError(
        f"executor must be a concurrent.futures.Executor (ProcessPoolExecutor, "
        f"ThreadPoolExecutor, mpi4py.futures.MPIPoolExecutor, loky...) or a "
        f"dask.distributed Client, got {type(executor).__name__}"
    )


def _check_run(fn: Any, chunksize: Any, max_pending: Any, result_field: Any) -> None:
    """Refuse arguments of :meth:`ProgressTracker.run` it cannot run with."""
    if type(chunksize) is not int or chunksize < 1:
        raise InvalidArgumentError(f"chunksize must be an int >= 1, got {chunksize!r}.")
    if max_pending is not None and (type(max_pending) is not int or max_pending < 1):
        raise InvalidArgumentError(f"max_pending must be an int >= 1 or None, got {max_pending!r}.")
    if result_field is not None and (type(result_field) is not str or result_field[:1] == "_"):
        raise InvalidArgumentError(
            f"result_field must be a str not starting with '_' (those fields are tastypy's), "
            f"or None, got {result_field!r}."
        )
    if not callable(fn):
        raise InvalidArgumentError(f"fn must be callable, got {type(fn).__name__}.")


def _tasks_to_run(tracker: Any, keys: Iterable | None, allow_aborted: bool) -> tuple:
    """``(order, todo)``: the keys of the run (added if absent) and those of
    them still to do, the keys added written before any worker looks."""
    if keys is None:
        tracker.refresh()
        order = list(tracker)
    else:
        order = list(keys)
        tracker.add_many_if_absent(order)
        tracker.refresh()
    todo = list(tracker.todo_keys(allow_aborted, keys=order))
    tracker.sync()
    return order, todo


def run_tasks(
    tracker: Any,
    fn: Callable[[Any], Any],
    keys: Iterable | None,
    executor: Any,
    *,
    lease: float | None,
    chunksize: int,
    max_pending: int | None,
    progress: Callable[[], Any] | None,
    result_field: str | None,
    allow_aborted: bool,
    options: dict,
    capture: bool = False,
    echo: bool = False,
) -> dict:
    """The body of :meth:`ProgressTracker.run`, which has checked ``lease``.

    ``progress`` makes the progress display (an object with ``step(outcome)``
    and ``close()``), or is None for none; ``options`` are how a worker
    opens the tracker (its settings).
    """
    _check_run(fn, chunksize, max_pending, result_field)
    started = time.monotonic()
    order, todo = _tasks_to_run(tracker, keys, allow_aborted)
    counts = {"done": 0, "failed": 0, "skipped": 0}
    errors: dict = {}
    bar = progress() if progress is not None else None

    def tally(results: list) -> None:
        for key, outcome, error in results:
            counts[outcome] += 1
            if error is not None and len(errors) < _ERRORS_SHOWN:
                errors[key] = error
            if bar is not None:
                bar.step(outcome)

    try:
        if executor is None:
            for key in todo:
                tally([_run_one(tracker, fn, key, lease, result_field, allow_aborted, capture,
                                echo)])  # fmt: skip
        else:
            _through(tracker, as_executor(executor), fn, todo, lease, chunksize, max_pending,
                     result_field, allow_aborted, tally, options, capture, echo)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
        tracker.refresh()  # what the workers wrote
    left = sum(1 for k in order if not tracker.done(k))
    return {
        "submitted": len(todo),
        "done": counts["done"],
        "failed": counts["failed"],
        "skipped": counts["skipped"],
        "left": left,
        "seconds": round(time.monotonic() - started, 3),
        "errors": errors,
    }


def _through(
    tracker: Any,
    executor: cf.Executor,
    fn: Callable[[Any], Any],
    todo: list,
    lease: float | None,
    chunksize: int,
    max_pending: int | None,
    field: str | None,
    allow_aborted: bool,
    tally: Callable[[list], None],
    options: dict,
    capture: bool = False,
    echo: bool = False,
) -> None:
    """Hand ``todo`` out in chunks, at most ``max_pending`` at a time."""
    path = tracker.path
    cls = type(tracker)
    chunks = [todo[i : i + chunksize] for i in range(0, len(todo), chunksize)]
    if max_pending is None:
        max_pending = max(64, 4 * (getattr(executor, "_max_workers", None) or os.cpu_count() or 4))
    # Workers that are threads of this process use this very tracker.
    with serving(tracker):
        _submit_all(executor, path, cls, options, fn, chunks, lease, field, allow_aborted,
                    tally, max_pending, (capture, echo))  # fmt: skip


def _submit_all(
    executor: cf.Executor,
    path: str,
    cls: type,
    options: dict,
    fn: Callable[[Any], Any],
    chunks: list,
    lease: float | None,
    field: str | None,
    allow_aborted: bool,
    tally: Callable[[list], None],
    max_pending: int,
    logs: tuple = (False, False),
) -> None:
    """Submit the chunks, at most ``max_pending`` waiting at once; tally each result."""
    pending: set = set()
    try:
        position = 0
        while position < len(chunks) or pending:
            while position < len(chunks) and len(pending) < max_pending:
                pending.add(
                    executor.submit(
                        run_chunk, path, cls, options, fn, chunks[position], lease, field,
                        allow_aborted, *logs,
                    )
                )  # fmt: skip
                position += 1
            finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                tally(future.result())
    except BaseException:
        for future in pending:
            future.cancel()
        raise
