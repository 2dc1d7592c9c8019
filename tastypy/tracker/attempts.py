"""Running tasks: :meth:`attempts` and :meth:`attempt` (a :class:`Task`
per try, ended by its ``with`` block), :meth:`run` through an executor,
and the progress display.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tastypy import _exit, records
from tastypy import capture as _capture
from tastypy.codec import encode_value
from tastypy.errors import InvalidValueError
from tastypy.storage import taskfiles
from tastypy.tracker import _common
from tastypy.tracker._common import _check_span, log

if TYPE_CHECKING:
    from tastypy.tracker.core import ProgressTracker


#: Seconds between two lines of the plain progress display.
_PLAIN_INTERVAL: Final = 2.0


def _now() -> str:
    """The time now, UTC, ISO 8601 to the millisecond (sorts as text)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class AttemptsMixin:
    """Attempts at tasks, with their outcome recorded; :meth:`run`."""

    # -- running tasks ---------------------------------------------------------------

    def attempts(
        self,
        keys: Iterable | None = None,
        *,
        reraise: bool = False,
        progress: bool | str = False,
        allow_aborted: bool = False,
        lease: float | None = None,
        capture: bool = False,
        echo: bool = False,
    ) -> Iterator[Task]:
        """One :class:`Task` for each task to try now, each try counted as by :meth:`try_it`.

        ``keys`` (default: every key) is read whole first and the keys not
        there yet are added. Use each task as a context manager::

            for task in tracker.attempts(keys, progress=True):
                with task:
                    task["result"] = work(task.key)

        A body that ends normally marks the task done. One that raises an
        exception records it in the task's ``_error`` (type, message,
        traceback, time) and leaves the task not done; the loop then moves
        on, or with ``reraise=True`` the exception propagates. Ctrl-C
        (``KeyboardInterrupt``) gives the try back and propagates. Start and
        end times go to ``_started`` and ``_ended``.

        ``progress=True`` shows done / total, rate and ETA on stderr, with
        ``tqdm`` if it is installed (``pip install tqdm``),
        else as a plain line every few seconds (``progress="plain"`` forces
        that).

        ``capture=True`` writes what each task's block prints (``sys.stdout``,
        ``sys.stderr``) and the ``logging`` records it makes to a new log
        file per attempt, ``logs/attempt-NNNN.log`` in the task's directory
        (see :meth:`paths`; the record's ``_log`` names it), ending with the
        outcome and, for a failure, the traceback. ``echo=True`` also shows
        the printed text as usual; logging records reach your own handlers
        either way. Threads running tasks at once each write to their own
        task's log (``docs/recipes/computed-resources.md``).
        """
        if keys is None:
            order = list(self._data)
        else:
            order = list(keys)
            self.add_many_if_absent(order)
        bar = _Progress(self, progress) if progress else None
        data = self._data
        try:
            for key in order:
                if key not in data:
                    continue
                task = self._handed(key, False, allow_aborted, lease, reraise, capture, echo)
                if task is None:
                    continue
                yield task
                if bar is not None:
                    bar.update(task)
        finally:
            if bar is not None:
                bar.close()

    def attempt(
        self,
        key: Any,
        *,
        reraise: bool = True,
        allow_aborted: bool = False,
        lease: float | None = None,
        capture: bool = False,
        echo: bool = False,
    ) -> Task:
        """One attempt at ``key`` (added if absent), as a context manager.

        The returned :class:`Task` is false, and its block records nothing,
        when the task is not to be tried (done, aborted, out of tries)::

            with tracker.attempt("job-7") as task:
                if task:
                    task["result"] = work()

        Unlike :meth:`attempts`, an exception is re-raised by default.
        ``capture`` and ``echo`` are as for :meth:`attempts`.
        """
        self.add_if_absent(key)
        task = self._handed(key, True, allow_aborted, lease, reraise, capture, echo)
        return task or Task(self, key, False, reraise, capture, echo)

    def _handed(
        self,
        key: Any,
        add: bool,
        allow_aborted: bool,
        lease: float | None,
        reraise: bool,
        capture: bool,
        echo: bool,
    ) -> Task | None:
        """Claim ``key`` as :meth:`try_it` does: its :class:`Task`, or None if
        it is not to be tried. Until its block begins (or :meth:`Task.end`),
        the task is listed as not started: a Ctrl-C that lands before then
        (during the claim it is put off until the claim is written, see
        :mod:`tastypy._exit`) leaves the try to be given back at close or
        exit, as a Ctrl-C inside the block gives it back."""
        with _exit.put_off():
            if not self._try(key, add, allow_aborted, _now(), lease):  # type: ignore[attr-defined]
                return None
            task = Task(self, key, True, reraise, capture, echo)
            self._unstarted[id(task)] = task
        return task

    def _give_back_unstarted(self) -> None:
        """At close and exit: the tries of the tasks handed out whose block
        never began are given back (the tasks did not run)."""
        for task in list(self._unstarted.values()):
            task.end(KeyboardInterrupt())

    def _unstorable(self, key: Any) -> InvalidValueError | None:
        """Check the record of ``key`` as an attempt ends, with the codec that
        checks every assignment: a field of it changed in place into what
        JSON cannot hold (``task.record["x"] = {1, 2}``) is taken out, and
        the error saying so returned, for the attempt to fail with. None
        when all is well (or the record is gone)."""
        rec = self._known(key).get(key)
        if not records.is_record(rec):
            return None
        try:
            encode_value(key, rec)
            return None
        except InvalidValueError:
            pass
        error = None
        for field in [f for f in rec if type(f) is not str or f[:1] != "_"]:
            try:
                encode_value(key, rec[field])
            except InvalidValueError as exc:
                del rec[field]
                if error is None:
                    error = InvalidValueError(
                        f"the field {field!r} of the task {key!r} was left out: {exc}"
                    )
        self._touch(key)
        return error

    def _ended(self, key: Any, exc: BaseException | None) -> None:
        rec = self._known(key).get(key)
        if not records.is_record(rec):
            return  # deleted meanwhile
        rec = self._rec(key)
        now = _now()
        # The attempt is over, whatever its outcome: so is its lease. Unless
        # the lease ran out and another worker runs the task now: then only
        # a success is recorded (the work is done); a failure or a try given
        # back is this late attempt's, not the running one's.
        if "_lease_until" in rec and not self._end_lease(key, rec) and exc is not None:
            log.warning(
                "tastypy: the attempt at %r in %s ended after its lease ran out, with the "
                "task taken over by %s; its outcome (%s) is not recorded",
                key,
                self.path,
                rec.get("_holder"),
                type(exc).__name__,
            )
            return
        if exc is None:
            if not rec["_done"]:
                rec["_done"] = True
                self._n_done += 1
            rec["_done_at"] = self._done_now()
            rec.pop("_error", None)
        elif isinstance(exc, Exception):
            kind = type(exc)
            name = kind.__qualname__
            if kind.__module__ not in ("builtins", "__main__"):
                name = f"{kind.__module__}.{name}"
            rec["_error"] = {
                "type": name,
                "message": str(exc),
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                "time": now,
            }
        else:
            # Ctrl-C or an exit: not the task's fault, so the try is given back.
            tries = rec["_tries"]
            if tries > 0:
                rec["_tries"] = tries - 1
                if tries == 1:
                    self._n_tried -= 1
        rec["_ended"] = now
        self._touch(key)

    # -- running through an executor --------------------------------------------------------

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
        """Run ``fn(key)`` for every task not done, through ``executor``.

        ``executor`` is any :class:`concurrent.futures.Executor`
        (``ProcessPoolExecutor``, ``ThreadPoolExecutor``,
        ``mpi4py.futures.MPIPoolExecutor``, loky's) or a
        ``dask.distributed.Client``; None runs the tasks here, one after
        the other. ``keys`` (default: every task) are added if absent.

        Each worker opens this tracker by its path (once per process; so
        the workers must see the same filesystem), claims each task as
        :meth:`try_it` does, runs ``fn(key)``, and writes the outcome to
        the task's record before reporting back: done, with ``fn``'s return
        value (if not None) in ``record[result_field]``; or failed, with
        the error in ``_error`` as :meth:`attempts` records it. A value the
        codec refuses (what JSON cannot hold: a set, a ``datetime``, NaN)
        fails its task with ``InvalidValueError`` naming the key and the
        type, and the run goes on.
        So what was done survives a crash of this process, and calling
        ``run`` again does only what is left (tasks of a dead worker come
        back as their leases end, at once for a worker of this host).

        ``fn`` must be picklable for process pools (a module-level
        function). ``chunksize`` keys go to a worker at once (more for short
        tasks); at most ``max_pending`` chunks wait in the executor.
        ``progress=True`` shows progress as :meth:`attempts` does;
        ``capture=True`` writes what ``fn`` prints and logs to each
        attempt's log file, and ``echo=True`` shows it too, as for
        :meth:`attempts` (in the worker: a process pool's workers print to
        the terminal they inherited).

        Returns a summary: ``{"submitted", "done", "failed", "skipped",
        "left", "seconds", "errors"}``; ``skipped`` counts tasks a worker
        found no longer to do (done or claimed by another process
        meanwhile), ``left`` the tasks still not done among ``keys``, and
        ``errors`` maps up to 100 failed keys to ``"Type: message"``.

        Example::

            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(8) as pool:
                summary = tracker.run(work, executor=pool, progress=True)
        """
        from tastypy.executor import run_tasks

        if self._closed:
            self._refuse_closed()
        if lease is not None:
            _check_span(lease, "lease")
        return run_tasks(
            self,
            fn,
            keys,
            executor,
            lease=lease,
            chunksize=chunksize,
            max_pending=max_pending,
            progress=(lambda: _Progress(self, progress)) if progress else None,
            result_field=result_field,
            allow_aborted=allow_aborted,
            options=self._worker_options(),
            capture=capture,
            echo=echo,
        )

    def _worker_options(self) -> dict:
        """How a worker opens this tracker: with the same settings."""
        lock = self._store._lock
        return {
            "max_tries": self._max_tries,
            "lock": getattr(lock, "requested", "auto"),
            "lock_timeout": getattr(lock, "timeout", 600.0),
            "lease": self._lease,
            "redo_after": self._redo_after,  # which tasks are due: as the caller judged
            "sync_at": self.sync_at,
        }


class Task:
    """One attempt at one task, from :meth:`ProgressTracker.attempts` or
    :meth:`~ProgressTracker.attempt`. Use it as a context manager; it is
    true when the task is to be run."""

    __slots__ = (
        "tracker", "key", "_active", "_reraise", "outcome", "error", "_echo", "_log", "log_path",
    )  # fmt: skip

    def __init__(
        self,
        tracker: ProgressTracker,
        key: Any,
        active: bool,
        reraise: bool,
        capture: bool = False,
        echo: bool = False,
    ):
        self.tracker = tracker
        self.key = key
        self._active = active
        self._reraise = reraise
        #: None until the block ends; then "done", "failed" or "interrupted".
        self.outcome: str | None = None
        #: The exception a failed attempt recorded (None otherwise): raised
        #: by its block, or the error of a field that could not be stored.
        self.error: Exception | None = None
        # None: no capture; else whether captured output is also shown.
        self._echo: bool | None = bool(echo) if capture else None
        # While capturing: [the open log, the capture context or None].
        self._log: list | None = None
        #: This attempt's log file once its capture began (``capture=True``).
        self.log_path: Path | None = None

    def __bool__(self) -> bool:
        return self._active

    def __repr__(self) -> str:
        state = self.outcome or ("to run" if self._active else "skipped")
        return f"<Task {self.key!r}: {state}>"

    @property
    def record(self) -> dict:
        """The task's record in the tracker (changes to it are saved)."""
        return self.tracker[self.key]

    def __getitem__(self, field: str) -> Any:
        return self.tracker[self.key][field]

    def __setitem__(self, field: str, value: Any) -> None:
        """``task[field] = value``: checked here, by the codec that checks
        every value stored (``InvalidValueError`` names the key and the
        type; nothing changes), then saved with the record."""
        encode_value(self.key, value)
        self.tracker.set[self.key][field] = value

    def __enter__(self) -> Task:
        self.tracker._unstarted.pop(id(self), None)
        try:
            self._begin_capture()
        except Exception as exc:
            # No log to write to (a full disk...): the attempt fails with
            # that, recorded, rather than running uncaptured or staying leased.
            self.end(exc)
            raise
        return self

    @contextmanager
    def captured(self) -> Iterator[Task]:
        """While in the block, what it prints and logs goes to this attempt's
        log (for a task made with ``capture=True``; else nothing changes).
        The ``with task:`` block does this itself; this is for code that
        ends the attempt with :meth:`end`. The log is closed by :meth:`end`."""
        self._begin_capture()
        try:
            yield self
        finally:
            self._pause_capture()

    def _begin_capture(self) -> None:
        """Open this attempt's log (first time) and route output into it."""
        if self._echo is None or not self._active or self.outcome is not None:
            return
        if self._log is None:
            tracker = self.tracker
            path, stream = taskfiles.new_log(tracker._task_dir(self.key))
            self._log = [stream, None]
            self.log_path = Path(path)
            stream.write(
                f"--- tastypy: attempt at {self.key!r} by {_common._me}, started {_now()}\n"
            )
            with tracker.sync_lock:
                tracker.set[self.key]["_log"] = os.path.relpath(path, tracker._tasks_root())
        if self._log[1] is None:
            context = _capture.capturing(self._log[0], self._echo)
            context.__enter__()
            self._log[1] = context

    def _pause_capture(self) -> None:
        if self._log is not None and self._log[1] is not None:
            context, self._log[1] = self._log[1], None
            context.__exit__(None, None, None)

    def _close_log(self, error: BaseException | None) -> None:
        """Stop capturing; end the log with the outcome (and a failure's traceback)."""
        if self._log is None:
            return
        self._pause_capture()
        stream = self._log[0]
        self._log = None
        try:
            try:
                stream.write(f"--- tastypy: {self.outcome} at {_now()}\n")
                if isinstance(error, BaseException):
                    lines = traceback.format_exception(type(error), error, error.__traceback__)
                    stream.write("".join(lines))
            finally:
                stream.close()
        except (OSError, ValueError) as exc:
            # The outcome is in the record already; the log just lacks its end.
            log.warning("tastypy: could not end the log %s: %s", self.log_path, exc)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if not self._active or self.outcome is not None:
            return False
        self.end(exc)
        if self.outcome == "failed" and exc is None and self._reraise:
            # The block ended normally, but left a field that cannot be stored.
            raise self.error  # type: ignore[misc]
        return self.outcome == "failed" and not self._reraise

    def end(self, error: BaseException | None = None) -> str | None:
        """End the attempt as its ``with`` block does, for code that cannot
        use one: done if ``error`` is None; failed, with ``error`` recorded
        in ``_error``, for an :class:`Exception`; interrupted (the try given
        back) for anything else (Ctrl-C, an exit). The lease ends. A field
        of the record changed in place into what JSON cannot hold is left
        out, and the attempt is failed with the error saying so (kept in
        :attr:`error`, as a failure's exception is). Returns the outcome; a
        task not to run, or already ended, is left as it is::

            task = tracker.attempt(key)
            if task:
                try:
                    task["result"] = work(key)
                except Exception as exc:
                    task.end(exc)
                else:
                    task.end()
        """
        if not self._active or self.outcome is not None:
            return self.outcome
        tracker = self.tracker
        # A Ctrl-C waits until the outcome is recorded (see tastypy._exit):
        # raised halfway, it would leave the attempt neither ended nor given
        # back.
        with _exit.put_off(), tracker.sync_lock:
            tracker._unstarted.pop(id(self), None)
            if error is None or isinstance(error, Exception):
                left_out = tracker._unstorable(self.key)
                if left_out is not None and error is None:
                    error = left_out
            if error is None:
                self.outcome = "done"
            elif isinstance(error, Exception):
                self.outcome = "failed"
                self.error = error
            else:
                self.outcome = "interrupted"
            try:
                tracker._ended(self.key, error)
            finally:
                self._close_log(self.error if self.outcome == "failed" else error)
        return self.outcome


class _Progress:
    """Done / total, rate and ETA on stderr: tqdm if installed, else a plain line."""

    def __init__(self, tracker: ProgressTracker, mode: bool | str):
        self.tracker = tracker
        self.failed = 0
        self.done_here = 0
        self.start_done = tracker.num_done()
        self.start = time.monotonic()
        self.last = self.start
        self.bar = None
        if mode is True or mode == "tqdm":
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=len(tracker),
                    initial=self.start_done,
                    unit="task",
                    desc="done",
                    file=sys.stderr,
                    dynamic_ncols=True,
                    smoothing=0.05,
                    mininterval=0.25,
                )

    def step(self, outcome: str) -> None:
        """One task of :meth:`ProgressTracker.run` ended (done here by a worker
        the tracker takes in only at the end: counted here)."""
        if outcome == "done":
            self.done_here += 1
        self._show(outcome, self.start_done + self.done_here)

    def update(self, task: Task) -> None:
        self._show(task.outcome, self.tracker.num_done())

    def _show(self, outcome: str | None, done: int) -> None:
        if outcome == "failed":
            self.failed += 1
        bar = self.bar
        if bar is not None:
            if bar.total != len(self.tracker):
                bar.total = len(self.tracker)
            if done != bar.n:
                bar.update(done - bar.n)
            if outcome == "failed":
                bar.set_postfix(failed_tries=self.failed, refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= _PLAIN_INTERVAL:
            self.last = now
            self._line(done, now)

    def _line(self, done: int, now: float) -> None:
        total = len(self.tracker)
        elapsed = now - self.start
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        left = total - done
        eta = f"{datetime.timedelta(seconds=round(left / rate))}" if rate > 0 else "?"
        share = 100 * done / total if total else 100.0
        sys.stderr.write(
            f"tastypy: {done:,}/{total:,} done ({share:.1f} %), {self.failed:,} failed "
            f"tries this pass, {rate:,.0f} tasks/s, ETA {eta}\n"
        )
        sys.stderr.flush()

    def close(self) -> None:
        done = max(self.tracker.num_done(), self.start_done + self.done_here)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.close()
        else:
            self._line(done, time.monotonic())
