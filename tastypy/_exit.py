"""The registry of open PODs, synced at exit, on Ctrl-C and on SIGTERM.

Normal exit, an uncaught exception and Ctrl-C (an uncaught
``KeyboardInterrupt``) all end in :mod:`atexit`, which syncs every open POD.
SIGTERM gets a handler, installed from the main thread only (Python allows
no other): it syncs every open POD, then hands the signal on. A user's
SIGTERM handler is chained, not replaced: it runs after the sync, and
decides what happens next. When there is no user handler, the default action
is restored and the signal re-raised, so the process still ends with the
status of a SIGTERM (-15 to ``subprocess``, 143 to a shell). A user handler
installed *after* the first POD was opened replaces ours; the next POD
opened chains it again, and if that handler calls the one it replaced (ours),
the call goes on down the chain rather than round again.

A child of :mod:`multiprocessing` (a ``Pool`` worker, a
``ProcessPoolExecutor`` worker, a ``Process``) ends with ``os._exit``, which
runs no :mod:`atexit` handler: for it, a finalizer of multiprocessing's own
(``multiprocessing.util.Finalize``, which every such child runs before
``os._exit``) syncs every open POD, the ones it inherited from its parent
included (made its own at the fork: see :mod:`tastypy.clones`). A child
made by ``os.fork()`` runs :mod:`atexit` when it ends normally; one that
calls ``os._exit`` itself must sync or close its PODs first.

Signal handlers run in the main thread between two bytecodes. A SIGTERM that
arrives while the main thread is inside a sync is put off until that sync has
finished and released its locks (see :func:`enter`), so the handler's own
sync never interleaves with a half-written batch. So is a Ctrl-C, while
Python's own handler is the one installed: a ``KeyboardInterrupt`` raised
between taking a lock and the ``try`` that gives it back would leave the
lock held, and the next sync of the same process (``close()`` in the
``except KeyboardInterrupt`` of the user's script) would wait for it for
ever; raised between the write and the note that it was written, it would
write the batch again. It is raised once the sync is over, or at once where
the sync waits for a lock (:func:`take_interrupt`): a Ctrl-C never waits
for another process's hold. A POD's ``__del__`` (run whenever the garbage
collector gets to it) puts a Ctrl-C off too, until the next sync: raised
inside it, Python would print the exception and drop it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger("tastypy")

_registry: dict[int, weakref.ref] = {}
_registry_lock = threading.Lock()
_atexit_installed = False
#: The SIGTERM handlers ours replaced, oldest first: the one found when the
#: first POD opened, then any a user installed over ours later.
_previous: list[Any] = []
_depth = 0  # how deep in _previous the handler being run is

_MAIN_IDENT = threading.main_thread().ident
_get_ident = threading.get_ident
_busy = 0  # syncs in progress in the main thread
_deferred: Any = None  # (signum, frame) of a SIGTERM put off by a sync
_interrupted = False  # a Ctrl-C put off by a sync


#: Run before the exit syncs of a multiprocessing child (the heartbeat's
#: end; at a normal exit atexit runs it first, registered after sync_all).
before_exit: list = []


def register(pod: Any) -> None:
    global _atexit_installed
    with _registry_lock:
        _registry[id(pod)] = weakref.ref(pod)
        if not _atexit_installed:
            atexit.register(sync_all)
            _atexit_installed = True
    _hook_multiprocessing()
    _install_handlers()


class _Token:
    """What multiprocessing's after-fork registry keys our hook by (it
    holds its keys weakly)."""


_TOKEN = _Token()
_mp_hooked = False


def _hook_multiprocessing() -> None:
    """Have every child multiprocessing starts from now on (by fork, spawn
    or forkserver) sync at its end. Called at each open, and before each
    fork (multiprocessing may have been imported after the first open)."""
    global _mp_hooked
    if _mp_hooked:
        return
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    util.register_after_fork(_TOKEN, _in_multiprocessing_child)
    _mp_hooked = True


def _in_multiprocessing_child(_token: Any) -> None:
    # Run by the child's bootstrap after it cleared the finalizers it
    # inherited, before its target; the finalizer runs when the target
    # returns (or raises), before os._exit.
    from multiprocessing import util

    util.Finalize(None, exit_sync, exitpriority=10)


def exit_sync() -> None:
    """The end of a multiprocessing child: what atexit does at a normal exit."""
    for hook in before_exit:
        try:
            hook()
        except Exception:
            log.exception("tastypy: %s failed at exit", hook)
    sync_all()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hook_multiprocessing)


def unregister(pod: Any) -> None:
    with _registry_lock:
        ref = _registry.get(id(pod))
        if ref is not None and ref() is pod:
            del _registry[id(pod)]


def open_pods() -> list[Any]:
    with _registry_lock:
        refs = list(_registry.values())
    return [p for p in (r() for r in refs) if p is not None]


def sync_all() -> None:
    """Sync every open POD; a failure is logged and does not stop the others."""
    for pod in open_pods():
        try:
            pod._exit_sync()
        except Exception:
            log.exception("tastypy: could not sync %s at exit", getattr(pod, "path", pod))


def enter() -> bool:
    """Note that a sync holds its locks; True if in the main thread (then call
    :func:`leave` once the locks are released)."""
    global _busy
    if _get_ident() != _MAIN_IDENT:
        return False
    _busy += 1
    return True


def leave(quiet: bool = False) -> None:
    """End of a sync in the main thread: run a SIGTERM handler put off
    meanwhile, or raise the ``KeyboardInterrupt`` of a Ctrl-C. ``quiet``:
    where no exception can go (``__del__``, whose exceptions Python prints
    and drops), the Ctrl-C is kept for the next sync or lock wait instead."""
    global _busy, _deferred, _interrupted
    _busy -= 1
    if _busy == 0:
        if _deferred is not None:
            signum, frame = _deferred
            _deferred = None
            _handle(signum, frame)
        if _interrupted and not quiet:
            _interrupted = False
            raise KeyboardInterrupt


@contextmanager
def put_off() -> Iterator[None]:
    """``with put_off():`` the block is a sync: :func:`enter` and
    :func:`leave` around it (off the hot path; the transaction calls them
    itself)."""
    main = enter()
    try:
        yield
    finally:
        if main:
            leave()


def take_interrupt() -> None:
    """Where a sync waits for a lock and holds none it must give back
    (nothing written, nothing half done): raise the ``KeyboardInterrupt`` of
    a Ctrl-C put off meanwhile."""
    global _interrupted
    if _interrupted:
        _interrupted = False
        raise KeyboardInterrupt


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # Python's own: ours raises the same, but not inside a sync. A
        # user's handler (or SIG_IGN) is left as it is.
        signal.signal(signal.SIGINT, _on_sigint)
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return
    # First install, or a user's handler replaced ours since: chain it.
    _previous.append(current)
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    global _deferred
    if _busy:
        _deferred = (signum, frame)
        return
    _handle(signum, frame)


#: The code of the ``__del__`` methods that sync (a POD's): a Ctrl-C that
#: lands as one begins, before it can call :func:`enter` (the garbage
#: collector runs in C, so a Ctrl-C that comes meanwhile is handled at the
#: first line of the ``__del__`` it then calls), is put off as well.
finalizers: set = set()


def _on_sigint(signum: int, frame: Any) -> None:
    global _interrupted
    if _busy or (
        frame is not None
        and (frame.f_code in finalizers or (frame.f_back and frame.f_back.f_code in finalizers))
    ):
        _interrupted = True
        return
    signal.default_int_handler(signum, frame)


def _handle(signum: int, frame: Any) -> None:
    global _depth
    level = _depth
    if level == 0:
        sync_all()
    # A user's handler installed over ours may itself call the handler it
    # replaced (ours): that call goes on down the chain, not round again.
    index = len(_previous) - 1 - level
    previous = _previous[index] if index >= 0 else signal.SIG_DFL
    if callable(previous):
        _depth = level + 1
        try:
            previous(signum, frame)
        finally:
            _depth = level
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
