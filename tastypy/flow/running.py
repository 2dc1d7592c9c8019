"""Running the tasks of a flow through an executor, each after its dependencies.

The calling process keeps the graph: it hands a task to the executor as
soon as every dependency it waits for is done, at most a few per worker at
once. Workers claim, run and record each task through
:func:`tastypy.executor.run_chunk`, as :meth:`Tracker.run
<tastypy.Tracker.run>`'s workers do, so each outcome is on disk before the
caller hears of it, and a flow killed at any instant resumes where it
stopped. A task found claimed by another live process (another run of the
same flow) is waited for, not run twice.

When a task fails (after its ``max_attempts`` tries in this run), nothing
more starts for the parameter values that needed it; what other values
need goes on. Tasks of other values that do not need it still run.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from typing import Any, Final

from tastypy.executor import run_chunk
from tastypy.flow.graph import Node
from tastypy.flow.jobs import TaskFailed, log_path
from tastypy.tracker import ProgressTracker

__all__ = ["FlowEvent", "Inline", "Schedule", "worker_count"]

#: How the executor's summary of a failure starts when the command failed.
_OWN_FAILURE: Final = f"{TaskFailed.__name__}: "

#: Seconds between two looks at a task another process holds.
_WAIT_FIRST: Final = 0.2
_WAIT_MOST: Final = 5.0


@dataclass
class FlowEvent:
    """What :meth:`Flow.run <tastypy.flow.Flow.run>` tells ``on_event``.

    ``kind`` is ``"planned"`` (once per set of values, before anything
    runs: ``params``, and how many tasks it will run, ``to_run``, and
    found done, ``found``; ``node`` is None), then for a task ``node``:
    ``"start"``, ``"done"``, ``"done elsewhere"`` (by another process, while
    this one waited), ``"retry"`` (failed, tried again in this run),
    ``"failed"``, ``"wait"`` (another process holds it), ``"cleanup"`` (its
    artifact was deleted). ``log`` is the task's log and ``offset`` where
    this try's part of it begins; ``error`` says why a task failed;
    ``seconds`` is how long it took, queueing included.
    """

    kind: str
    node: Node | None
    log: str | None = None
    offset: int = 0
    error: str | None = None
    seconds: float = 0.0
    params: dict | None = None
    to_run: int = 0
    found: int = 0


class Inline(cf.Executor):
    """An executor that runs each call at once, here: a flow without one."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # Ctrl-C and exits go straight through
            future.set_exception(exc)
        return future


def worker_count(executor: Any) -> int:
    """How many tasks ``executor`` runs at once, as well as it can be told
    (a pool's ``_max_workers``; a dask ``Client``'s threads)."""
    count = getattr(executor, "_max_workers", None)
    nthreads = getattr(executor, "nthreads", None)
    if count is None and callable(nthreads):
        try:
            count = sum(nthreads().values())
        except Exception:  # not a dask Client after all
            count = None
    return count if isinstance(count, int) and count > 0 else os.cpu_count() or 4


class Schedule:
    """One pass over the tasks to run: hands them out, hears their outcomes."""

    def __init__(
        self,
        nodes: Mapping[str, Node],
        order: list[str],
        needed_by: Mapping[str, set],
        make_job: Callable[[Node], Any],
        tracker: ProgressTracker,
        options: dict,
        lease: float,
        on_event: Callable[[FlowEvent], Any] | None,
    ):
        self.nodes, self.order, self.needed_by = nodes, order, needed_by
        self.make_job, self.tracker, self.options, self.lease = make_job, tracker, options, lease
        self.on_event = on_event
        self.rank = {key: i for i, key in enumerate(order)}
        self.left = {key: 0 for key in order}
        self.users: dict[str, list[str]] = {key: [] for key in order}
        for key in order:
            for dep in dict.fromkeys(nodes[key].deps):
                if dep in self.rank:
                    self.left[key] += 1
                    self.users[dep].append(key)
        self.ready = [(self.rank[k], k) for k in order if self.left[k] == 0]
        heapify(self.ready)
        self.running: dict[cf.Future, tuple[str, float, str | None, int]] = {}
        self.later: list[tuple[float, str]] = []
        self.waited: dict[str, float] = {}
        self.tries_here: dict[str, int] = {}
        self.done: list[str] = []
        self.done_elsewhere: list[str] = []
        self.failed: dict[str, str] = {}
        self.failed_values: set = set()

    def _event(self, kind: str, key: str, **info: Any) -> None:
        if self.on_event is not None:
            self.on_event(FlowEvent(kind, self.nodes[key], **info))

    def _alive(self, key: str) -> bool:
        """Whether some parameter values that need ``key`` have not failed."""
        return bool(self.needed_by[key] - self.failed_values)

    def run(self, executor: cf.Executor, at_once: int) -> None:
        """Until every task is done, failed, or waits on a failure."""
        try:
            while True:
                self._start(executor, at_once)
                if not self.running and not self.later:
                    return
                now = time.monotonic()
                timeout = max(0.0, min(t for t, _ in self.later) - now) if self.later else None
                if not self.running:
                    time.sleep(timeout or 0)
                    continue
                finished, _ = cf.wait(self.running, timeout, cf.FIRST_COMPLETED)
                for future in finished:
                    self._heard(future)
        finally:
            for future in self.running:
                future.cancel()

    def _start(self, executor: cf.Executor, at_once: int) -> None:
        now = time.monotonic()
        for due, key in [item for item in self.later if item[0] <= now]:
            self.later.remove((due, key))
            heappush(self.ready, (self.rank[key], key))
        while self.ready and len(self.running) < at_once:
            _, key = heappop(self.ready)
            if not self._alive(key):
                continue
            node = self.nodes[key]
            log = log_path(self.tracker.path, key) if node.command else None
            offset = _size(log)
            self._event("start", key, log=log, offset=offset)
            future = executor.submit(
                run_chunk,
                self.tracker.path,
                ProgressTracker,
                self.options,
                self.make_job(node),
                [key],
                self.lease,
                "result",
                False,
            )
            self.running[future] = (key, time.monotonic(), log, offset)

    def _heard(self, future: cf.Future) -> None:
        key, began, log, offset = self.running.pop(future)
        if future.cancelled():
            return
        info = {"log": log, "offset": offset, "seconds": time.monotonic() - began}
        try:
            _, outcome, error = future.result()[0]
        except Exception as exc:  # the executor could not run it (a callable it cannot pickle)
            outcome, error = "failed", f"the executor could not run it: {type(exc).__name__}: {exc}"
            self.tries_here[key] = self.nodes[key].task.max_attempts
        if error is not None and error.startswith(_OWN_FAILURE):
            error = error[len(_OWN_FAILURE) :]  # the message says it all
        if outcome == "done":
            self._finished(key, info)
        elif outcome == "failed":
            self.tries_here[key] = self.tries_here.get(key, 0) + 1
            if self.tries_here[key] < self.nodes[key].task.max_attempts:
                self._event("retry", key, error=error, **info)
                heappush(self.ready, (self.rank[key], key))
            else:
                self._fail(key, error or "failed", info)
        else:
            self._skipped(key, info)

    def _finished(self, key: str, info: dict, here: bool = True) -> None:
        (self.done if here else self.done_elsewhere).append(key)
        self._event("done" if here else "done elsewhere", key, **info)
        for user in self.users[key]:
            self.left[user] -= 1
            if self.left[user] == 0:
                heappush(self.ready, (self.rank[user], user))

    def _fail(self, key: str, error: str, info: dict) -> None:
        self.failed[key] = error
        self.failed_values |= self.needed_by[key]
        self._event("failed", key, error=error, **info)
        for future, (other, *_) in list(self.running.items()):
            if not self._alive(other) and future.cancel():
                del self.running[future]

    def _skipped(self, key: str, info: dict) -> None:
        """The worker found the task not to run: done or held by another
        process meanwhile, aborted, or out of tries."""
        tracker = self.tracker
        with tracker.sync_lock:  # worker threads may share it
            tracker.refresh()
            done, aborted, tries = tracker.done(key), tracker.aborted(key), tracker.tries(key)
        if done:
            self._finished(key, info, here=False)
        elif aborted:
            self._fail(
                key,
                f"task {key} is aborted in the tracker {tracker.path}; unabort it to run it",
                info,
            )
        elif tracker.max_tries and tries >= tracker.max_tries:
            self._fail(
                key,
                f"task {key} was tried {tries} times, the flow's max_tries, without "
                f"success; its last error is in the tracker {tracker.path} (record's _error), "
                "its output in its log; raise max_tries (--max-tries) to try it again",
                info,
            )
        else:
            wait = self.waited.get(key, 0.0)
            if not wait:
                self._event("wait", key, **info)
            wait = min(_WAIT_MOST, max(_WAIT_FIRST, 2 * wait))
            self.waited[key] = wait
            self.later.append((time.monotonic() + wait, key))


def _size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0
