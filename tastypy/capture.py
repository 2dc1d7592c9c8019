"""What a task prints, captured into its log file: stdout, stderr and ``logging``.

``sys.stdout`` and ``sys.stderr`` belong to the whole process, and threads
of one process (a ``ThreadPoolExecutor`` under :meth:`ProgressTracker.run`)
run tasks at once. So the streams are not swapped per task: while at least
one capture is on, ``sys.stdout`` and ``sys.stderr`` are routers, installed
once, that send each write to the log of the capture running in the writing
thread (a :class:`contextvars.ContextVar`, so an ``asyncio`` task counts as
its own too), and everything else to the stream they replaced. Likewise one
``logging`` handler on the root logger writes each record to the log of the
capture of the thread that logged it. When the last capture ends, the
streams put back are the ones replaced (if nobody replaced them since) and
the handler is removed: no handler is left behind, however many tasks ran
(hadrosaur's leak), and a task's log holds nothing of another's.

Not captured: what child processes write to the inherited descriptors
(``os.system``, ``subprocess`` without ``stdout=``), and what threads the
task starts print (a new thread starts without the capture).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["capturing"]


class _Session:
    """One capture: the log it writes to, and whether writes are also shown."""

    __slots__ = ("stream", "echo", "lock", "open")

    def __init__(self, stream: TextIO, echo: bool):
        self.stream = stream
        self.echo = echo
        self.lock = threading.Lock()
        self.open = True

    def write(self, text: str) -> bool:
        """Write ``text`` to the log; False once the capture has ended."""
        with self.lock:
            if not self.open:
                return False
            self.stream.write(text)
            return True


_current: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    "tastypy_capture", default=None
)


class _Router:
    """Stands in for ``sys.stdout`` or ``sys.stderr`` while captures run."""

    def __init__(self, original: Any):
        self._original = original

    def write(self, text: str) -> int:
        session = _current.get()
        original = self._original
        if session is None or not session.write(text):
            return original.write(text) if original is not None else len(text)
        if session.echo and original is not None:
            original.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        session = _current.get()
        if session is not None:
            with session.lock:
                if session.open:
                    session.stream.flush()
        flush = getattr(self._original, "flush", None)
        if flush is not None:
            flush()

    def __getattr__(self, name: str) -> Any:
        # encoding, isatty, fileno... as the stream replaced answers them.
        return getattr(self._original, name)


class _Handler(logging.Handler):
    """On the root logger while captures run: a record goes to the log of
    the capture running where it was logged, if any."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        session = _current.get()
        if session is None:
            return
        try:
            text = self.format(record) + "\n"
            if not session.write(text):
                return
            if session.echo and record.levelno >= logging.WARNING and _alone(self):
                # Without it, logging would have shown the record on stderr
                # (its last resort): echoed, it still is.
                stream = getattr(sys.stderr, "_original", sys.stderr)
                if stream is not None:
                    stream.write(text)
        except Exception:
            self.handleError(record)


def _alone(handler: logging.Handler) -> bool:
    """Whether ``handler`` is the root logger's only handler."""
    return logging.getLogger().handlers == [handler]


_lock = threading.Lock()
_running = 0
#: While captures run: (stdout router, stderr router, handler).
_installed: tuple | None = None


def _install() -> None:
    global _installed
    out, err = _Router(sys.stdout), _Router(sys.stderr)
    handler = _Handler()
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    logging.getLogger().addHandler(handler)
    _installed = (out, err, handler)


def _uninstall() -> None:
    global _installed
    if _installed is None:
        return
    out, err, handler = _installed
    _installed = None
    logging.getLogger().removeHandler(handler)
    if sys.stdout is out:
        sys.stdout = out._original
    if sys.stderr is err:
        sys.stderr = err._original


@contextmanager
def capturing(stream: TextIO, echo: bool = False) -> Iterator[None]:
    """While in the block, what this thread (or asyncio task) prints to
    ``sys.stdout`` or ``sys.stderr``, and the ``logging`` records it makes
    that reach the root logger's handlers, go to ``stream``; with
    ``echo=True`` the printed text is also shown where it would have gone.
    Blocks may nest (the inner one captures)."""
    global _running
    with _lock:
        if _running == 0 or not (
            _installed is not None and sys.stdout is _installed[0] and sys.stderr is _installed[1]
        ):
            # First capture, or someone swapped the streams meanwhile (a test
            # runner's capture): route from what is there now.
            _uninstall()
            _install()
        _running += 1
    session = _Session(stream, echo)
    token = _current.set(session)
    try:
        yield
    finally:
        with session.lock:
            session.open = False
        try:
            _current.reset(token)
        except ValueError:
            # Ended from another thread (task.end() called elsewhere): that
            # thread's context cannot be reset from here, but its capture
            # is closed, so what it prints goes where it went before.
            pass
        with _lock:
            _running -= 1
            if _running == 0:
                _uninstall()
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
