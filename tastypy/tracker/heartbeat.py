"""The lease heartbeat: one background thread per process that renews the
leases this process's trackers hold, while it lives.

So a lease can be short (``DEFAULT_LEASE``, two minutes): a dead worker's
tasks come back soon after it died, while a task that runs for hours is
never handed to a second worker as long as its worker is alive. Each round
asks every open tracker of the process to renew what it holds
(:meth:`~tastypy.tracker.leases.LeasesMixin._heartbeat_round`): one
``renew`` call, so one transaction (one append or commit), per tracker and
round, whatever the number of tasks held.

The thread is a daemon, started when the first tracker opens and ending
when the last one closes; it stops before the exit syncs run (``atexit``
runs handlers in reverse order, and this one is registered after theirs).
A forked child starts a heartbeat of its own for the trackers it inherited
open (made the child's by :mod:`tastypy.clones`, which forgot the parent's
leases: those name the parent, whose heartbeat renews them), so the leases
the child takes through them are renewed while the child lives.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Any, Final

from tastypy import _exit

log = logging.getLogger("tastypy")

#: The heartbeat looks at the held leases at least this often (seconds).
LOOK_EVERY: Final = 1.0
#: How long a fork waits for a round in progress to end, so that the child
#: does not inherit a tracker whose lock a renewal holds (seconds).
_FORK_WAIT: Final = 10.0
#: How long the exit waits for a round in progress before the exit syncs.
_EXIT_WAIT: Final = 5.0

_lock = threading.Lock()
_round_lock = threading.Lock()
_trackers: dict[int, weakref.ref] = {}
_thread: threading.Thread | None = None
_stop = threading.Event()
_atexit_registered = False


def watch(tracker: Any) -> None:
    """Renew ``tracker``'s leases from now on, until :func:`unwatch`."""
    global _thread, _atexit_registered
    with _lock:
        _trackers[id(tracker)] = weakref.ref(tracker)
        if _thread is None or not _thread.is_alive():
            if not _atexit_registered:
                atexit.register(stop)
                _atexit_registered = True
            _stop.clear()
            _thread = threading.Thread(target=_run, name="tastypy-heartbeat", daemon=True)
            _thread.start()


def unwatch(tracker: Any) -> None:
    """Stop renewing ``tracker``'s leases (it is closing)."""
    with _lock:
        ref = _trackers.get(id(tracker))
        if ref is not None and ref() in (tracker, None):
            del _trackers[id(tracker)]


def running() -> bool:
    """Whether this process has a heartbeat now."""
    thread = _thread
    return thread is not None and thread.is_alive()


def stop() -> None:
    """End the heartbeat (at exit): the exit syncs then run alone."""
    thread = _thread
    _stop.set()
    if thread is not None and thread is not threading.current_thread():
        thread.join(_EXIT_WAIT)


def _watched() -> list:
    with _lock:
        refs = list(_trackers.values())
    return [t for t in (r() for r in refs) if t is not None]


def _run() -> None:
    global _thread
    while not _stop.is_set():
        with _round_lock:
            trackers = _watched()
            delay = LOOK_EVERY
            tracker = None
            for tracker in trackers:
                try:
                    delay = min(delay, tracker._heartbeat_round())
                except Exception:  # never end the heartbeat of the others
                    log.exception("tastypy: the lease heartbeat failed for %s", tracker)
        # Hold none of them while waiting: one dropped meanwhile is collected.
        del trackers, tracker
        with _lock:
            if not _trackers:
                # Nothing left to renew: end; the next tracker opened starts one.
                _thread = None
                return
        _stop.wait(max(delay, 0.01))


def _before_fork() -> None:
    # The child must not inherit a tracker lock held by a renewal: let a
    # round in progress end first (a round blocked that long is not waited for).
    if _round_lock.acquire(timeout=_FORK_WAIT):
        _forking.append(True)


def _after_fork_in_parent() -> None:
    if _forking:
        _forking.clear()
        _round_lock.release()


def _after_fork_in_child() -> None:
    global _lock, _round_lock, _thread, _stop
    _forking.clear()
    _lock = threading.Lock()
    _round_lock = threading.Lock()
    _trackers.clear()
    _thread = None
    _stop = threading.Event()
    for tracker in _exit.open_pods():
        if hasattr(tracker, "_heartbeat_round") and not tracker._closed:
            watch(tracker)


_forking: list = []
_exit.before_exit.append(stop)

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
