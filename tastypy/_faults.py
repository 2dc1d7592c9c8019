"""Fault injection at named points of a write, for the crash and fault tests.

The storage code calls ``Store.fault(point)`` at each named point below. By
default that is :func:`no_fault`, which does nothing. A test arms a point
either for a whole process, through the environment variable
``TASTYPY_FAULT`` (read once, when this module is imported), or for one
store, by setting ``store.fault = make_hook(spec)``.

A spec is ``point[:count][:action]``, several joined by commas:

* ``point`` is one of :data:`POINTS`;
* ``count`` is which hit of that point fires (1, the first, by default);
* ``action`` is ``kill`` (SIGKILL this process, the default), ``exit``
  (``os._exit(FAULT_EXIT_STATUS)``, no clean-up at all), or an injected
  ``OSError``: ``enospc``, ``eio``, ``efbig``, ``eacces``. An injected error
  fires once; the next hit of the point goes through, as when space is freed.

Example: ``TASTYPY_FAULT=mid-write:3:kill`` kills the process halfway through
writing its third sync.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Callable, Final

ENV_VAR: Final = "TASTYPY_FAULT"

#: The status of a process stopped by the ``exit`` action.
FAULT_EXIT_STATUS: Final = 86


def _atomic(label: str) -> tuple[str, ...]:
    # The four steps of layout.write_atomic, for one kind of file.
    return tuple(
        f"{label}-{step}" for step in ("temp-written", "temp-fsynced", "renamed", "dir-fsynced")
    )


#: Every named point, in the order a write passes them.
POINTS: Final = (
    # journal.append: one sync
    "before-truncate",  # a torn tail is about to be cut off
    "after-truncate",
    "before-write",
    "mid-write",  # half of the batch is written
    "after-write",
    "after-fsync",
    # Store.compact: fold the journal into a new generation
    "compact-before-snapshot",
    *_atomic("snapshot"),
    "compact-before-seal",  # the old journal is sealed next (journal.seal)
    "compact-before-manifest",
    *_atomic("manifest"),  # also passed when a new POD is created
    "compact-after-manifest",
    "compact-mid-delete",  # the first file of the old generation is deleted
    "compact-after-delete",
)

_ERRNOS: Final = {
    "enospc": errno.ENOSPC,
    "eio": errno.EIO,
    "efbig": errno.EFBIG,
    "eacces": errno.EACCES,
}
ACTIONS: Final = ("kill", "exit", *_ERRNOS)


def no_fault(point: str) -> None:
    """The hook when nothing is armed: does nothing."""
    return None


def _fire(action: str, point: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(FAULT_EXIT_STATUS)
    else:
        code = _ERRNOS[action]
        raise OSError(code, f"{os.strerror(code)} (injected at {point})")


def make_hook(spec: str) -> Callable[[str], None]:
    """A fault hook armed by ``spec`` (see the module docstring)."""
    armed: dict[str, list] = {}
    for part in spec.split(","):
        fields = part.strip().split(":")
        point = fields[0]
        if point not in POINTS:
            raise ValueError(
                f"unknown fault point {point!r} in {spec!r}; known: {', '.join(POINTS)}"
            )
        count = int(fields[1]) if len(fields) > 1 and fields[1] else 1
        action = fields[2] if len(fields) > 2 else "kill"
        if action not in ACTIONS or count < 1 or len(fields) > 3:
            raise ValueError(
                f"bad fault spec {part!r}: expected point[:count][:action], count >= 1, "
                f"action one of {', '.join(ACTIONS)}"
            )
        armed[point] = [count, action]

    def hook(point: str) -> None:
        entry = armed.get(point)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            _fire(entry[1], point)

    return hook


def _from_environment() -> Callable[[str], None]:
    spec = os.environ.get(ENV_VAR, "")
    return make_hook(spec) if spec else no_fault


#: The hook every new Store starts with: :func:`no_fault` unless
#: ``TASTYPY_FAULT`` was set when tastypy was imported.
HOOK: Final = _from_environment()
