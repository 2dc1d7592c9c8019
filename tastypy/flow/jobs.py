"""What a worker runs for one task of a flow: a shell command or a Python callable.

A job is the ``fn`` that :func:`tastypy.executor.run_chunk` calls with the
task's key once it has claimed the task (its try counted, its lease taken),
and whose outcome it records: so a flow's tasks are tried, leased and
recorded by the same code as :meth:`Tracker.run <tastypy.Tracker.run>`'s.
Jobs are picklable, to reach the workers of a process pool or of dask.

A command's output (stdout and stderr, interleaved as the command wrote
them) is appended to one log file per task, beside the tracker:
``<tracker>/tasks/<task and values>-<hash>/output.log``, one section per
try between a ``--- try`` line and a ``--- exit`` line. The directory is
the task's own (:func:`task_dir`), for whatever else a task keeps.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from tastypy.errors import TastypyError
from tastypy.executor import worker_tracker
from tastypy.flow.artifacts import Artifact
from tastypy.tracker import ProgressTracker

__all__ = ["CallJob", "GatherJob", "ShellJob", "TaskFailed", "log_path", "task_dir", "watch_parent"]

logger = logging.getLogger("tastypy")

#: The output shown in a failed task's error: its last lines, this many at most.
TAIL_LINES: Final = 20
TAIL_BYTES: Final = 2000
#: How the sections of a log begin and end (the caller shows what is between).
TRY_MARK: Final = "--- try "
END_MARK: Final = "--- exit "

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._=+-]+")

#: The command a worker runs now, for the watch on its parent.
_running: dict[int, subprocess.Popen] = {}


class TaskFailed(TastypyError):
    """A task's command ended with a non-zero status, or did not make its artifact."""


def task_dir(tracker_path: str, key: str) -> str:
    """The directory of one task's files, inside the tracker's: readable
    (the task and its values) and unique (a hash of the key)."""
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
    qid, _, params = key.partition(" ")
    readable = qid
    if params:
        readable += "-" + _UNSAFE.sub("_", params.strip("{}").replace('"', "").replace(":", "="))
    return os.path.join(tracker_path, "tasks", f"{readable[:80]}-{digest}")


def log_path(tracker_path: str, key: str) -> str:
    """Where the output of the task ``key`` is kept."""
    return os.path.join(task_dir(tracker_path, key), "output.log")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class _Job:
    qid: str
    tracker_path: str
    options: dict
    lease: float
    artifact: Artifact | None

    def _check_artifact(self) -> None:
        if self.artifact is not None and not self.artifact.exists():
            raise TaskFailed(
                f"task {self.qid} ended without an error but did not make its artifact "
                f"{self.artifact.uri}; make the command write it, or fix the artifact's name"
            )


@dataclass
class ShellJob(_Job):
    """A shell command, run with ``/bin/sh -c`` in ``cwd``, its output kept
    in the task's log."""

    command: str
    cwd: str

    def __call__(self, key: str) -> None:
        log = log_path(self.tracker_path, key)
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "ab") as out:
            start = out.tell()
            tries = worker_tracker(self.tracker_path, ProgressTracker, self.options).tries(key)
            out.write(f"{TRY_MARK}{tries} at {_now()}: {self.command}\n".encode())
            out.flush()
            status, seconds = self._run(out)
            out.write(f"{END_MARK}status {status} after {seconds:.3f} s\n".encode())
        if status != 0:
            raise TaskFailed(self._failure(status, seconds, log, start))
        self._check_artifact()

    def _run(self, out: Any) -> tuple[int, float]:
        began = time.monotonic()
        proc = subprocess.Popen(
            self.command,
            shell=True,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _running[proc.pid] = proc
        try:
            status = proc.wait()
        except BaseException:  # Ctrl-C, an exit: the command stops with us
            _stop(proc)
            out.write(f"{END_MARK}interrupted after {time.monotonic() - began:.3f} s\n".encode())
            raise
        finally:
            _running.pop(proc.pid, None)
        return status, time.monotonic() - began

    def _failure(self, status: int, seconds: float, log: str, start: int) -> str:
        if status < 0:
            try:
                how = f"was killed by {signal.Signals(-status).name}"
            except ValueError:
                how = f"was killed by signal {-status}"
        else:
            how = f"exited with status {status}"
        return f"the command {how} after {seconds:.2f} s; its output is in {log}{_tail(log, start)}"


def _tail(log: str, start: int) -> str:
    """The last lines of the try that began at byte ``start`` of ``log``."""
    try:
        with open(log, "rb") as stream:
            stream.seek(max(start, os.path.getsize(log) - TAIL_BYTES - 200))
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if not ln.startswith((TRY_MARK, END_MARK))]
    lines = lines[-TAIL_LINES:]
    shown = "\n".join(lines)[-TAIL_BYTES:]
    return ", ending:\n" + shown if shown.strip() else " (it printed nothing)"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class CallJob(_Job):
    """A Python callable, called with the task's parameters as a dict; its
    return value (JSON) is kept in the task's record under ``result``."""

    fn: Any
    params: dict

    def __call__(self, key: str) -> Any:
        value = self.fn(dict(self.params))
        self._check_artifact()
        return value


@dataclass
class GatherJob(_Job):
    """A task with nothing to run, which gathers its dependencies (datamake's
    ``user-details``): done once they are."""

    def __call__(self, key: str) -> None:
        self._check_artifact()


def watch_parent(parent: int) -> None:
    """Run in each worker of the process pool ``tastypy flow --jobs``
    starts: when the flow's process dies (SIGKILL), stop the command this
    worker runs and exit, rather than live on, orphaned, holding a task."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        for proc in list(_running.values()):
            if proc.poll() is None:
                proc.kill()
        os._exit(70)

    threading.Thread(target=watch, name="tastypy-flow-parent", daemon=True).start()
