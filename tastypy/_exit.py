"""The registry of open PODs, synced at exit, on Ctrl-C and on SIGTERM.

A user's SIGTERM handler is chained, not replaced: ours syncs every open POD
and then hands the signal on. When there is no user handler, the default
action is restored and the signal re-raised, so the process still ends with
the status of a SIGTERM.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from typing import Any

log = logging.getLogger("tastypy")

_registry: dict[int, weakref.ref] = {}
_registry_lock = threading.Lock()
_installed = False
_previous_sigterm: Any = None


def register(pod: Any) -> None:
    global _installed
    with _registry_lock:
        _registry[id(pod)] = weakref.ref(pod)
        if not _installed:
            atexit.register(sync_all)
            _installed = True
    _install_sigterm()


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


def _install_sigterm() -> None:
    global _previous_sigterm
    if _previous_sigterm is not None:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return
    _previous_sigterm = current
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    sync_all()
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)

