"""A tracker's settings stored with it: ``max_tries``, the default lease
and ``redo_after``.

They live in ``tracker.json`` beside the manifest (``docs/format.md``), so
that a process opening the tracker without them (an inspection script,
``tastypy stats``, a worker started with fewer arguments) judges tasks as
the job does: a task tried ``max_tries`` times is failed, not to do. A
value passed when opening is stored if it differs from the stored one, and
the change is logged: every process opening the tracker later uses it.
``redo_after`` is stored too, because whether a done task is due again is
the job's rule, not one process's: ``tastypy stats`` and a worker opened
without it judge tasks as the loop does (``redo_after=0`` turns it off:
done then stays done).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

from tastypy.errors import CorruptFileError, InvalidArgumentError
from tastypy.storage import layout
from tastypy.tracker._common import _check_span, log

#: Seconds a task stays leased to the process that claimed it unless the
#: tracker or the call says otherwise. Short, because the holder's
#: heartbeat renews it while the holder lives (``heartbeat.py``): a task
#: of a dead worker on another host comes back within two minutes, and a
#: task that runs for hours stays with its live worker.
DEFAULT_LEASE: Final = 120.0


def check_max_tries(max_tries: Any) -> int:
    """``max_tries`` as an int (0: no limit), or an error saying what it must be."""
    if type(max_tries) is not int or max_tries < 0:
        raise InvalidArgumentError(
            f"max_tries must be a non-negative int (0: no limit; None: as stored with the "
            f"tracker), got {max_tries!r}."
        )
    return max_tries


def check_lease(lease: Any) -> float:
    """``lease`` as a float number of seconds > 0, or an error saying so."""
    return _check_span(lease, "lease")


def check_redo_after(redo_after: Any) -> float:
    """``redo_after`` as a float number of seconds >= 0 (0: done stays done),
    or an error saying what it must be."""
    if (
        isinstance(redo_after, bool)
        or not isinstance(redo_after, (int, float))
        or not math.isfinite(redo_after)
        or redo_after < 0
    ):
        raise InvalidArgumentError(
            f"redo_after must be a finite number of seconds > 0 after which a done task is "
            f"due again (0: done stays done; None: as stored with the tracker), got "
            f"{redo_after!r}."
        )
    return float(redo_after)


def _stored(directory: str) -> dict:
    """The stored settings, checked; {} when none are stored."""
    found = layout.read_settings(directory)
    if found is None:
        return {}
    path = os.path.join(directory, layout.SETTINGS)
    out = {}
    for name, check in _CHECKS:
        if name in found:
            try:
                out[name] = check(found[name])
            except InvalidArgumentError as exc:
                raise CorruptFileError(
                    f"{path} holds {name}={found[name]!r}: {exc} Fix the file, or open the "
                    f"tracker once with {name}= to store a good value.",
                    path,
                ) from None
    return out


def resolve(
    directory: str,
    max_tries: int | None,
    lease: float | None,
    locked: Callable[[], AbstractContextManager[Any]] = nullcontext,
    redo_after: float | None = None,
) -> tuple[int, float, float]:
    """The ``(max_tries, lease, redo_after)`` a tracker opened at
    ``directory`` uses.

    ``None`` takes the stored value (else no limit of tries,
    :data:`DEFAULT_LEASE`, and no redo: 0); a value given is checked, and
    stored (under ``locked()``, the tracker's lock) if it differs from what
    is stored. A store that fails (a read-only mount) is logged; the value
    given is used all the same.
    """
    given = {
        "max_tries": None if max_tries is None else check_max_tries(max_tries),
        "lease": None if lease is None else _check_span(lease, "lease"),
        "redo_after": None if redo_after is None else check_redo_after(redo_after),
    }
    stored = _stored(directory)
    changed = {n: v for n, v in given.items() if v is not None and stored.get(n) != v}
    if changed:
        _store(directory, stored, changed, locked)
    values = {**stored, **{n: v for n, v in given.items() if v is not None}}
    return (
        values.get("max_tries", 0),
        values.get("lease", DEFAULT_LEASE),
        values.get("redo_after", 0.0),
    )


_CHECKS: Final = (
    ("max_tries", check_max_tries),
    ("lease", check_lease),
    ("redo_after", check_redo_after),
)


def _store(
    directory: str,
    stored: dict,
    changed: dict,
    locked: Callable[[], AbstractContextManager[Any]],
) -> None:
    try:
        with locked():
            # Read again under the lock: another process may have stored
            # other settings meanwhile, which this write must keep.
            current = _stored(directory)
            layout.write_settings(directory, {**current, **changed})
    except OSError as exc:
        log.warning(
            "tastypy: could not store the settings %s of the tracker %s (%s); this process "
            "uses them, others opening it without them will not",
            changed,
            directory,
            exc,
        )
        return
    for name, value in changed.items():
        if name in stored:
            log.warning(
                "tastypy: %s of the tracker %s changed from %r to %r; processes opening it "
                "without %s= now use %r",
                name,
                directory,
                stored[name],
                value,
                name,
                value,
            )
        else:
            log.info("tastypy: %s=%r stored with the tracker %s", name, value, directory)
