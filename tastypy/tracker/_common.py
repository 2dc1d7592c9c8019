"""What the tracker's modules share: who this process is, the lease clock,
the checks of a span of seconds, and the markers the transaction routes pass.

Constants used by one module live in that module; only those several use
are here, once.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, Final

from tastypy import _identity, records
from tastypy._identity import holder_gone
from tastypy.errors import InvalidArgumentError

log = logging.getLogger("tastypy")


_DEFAULTS: Final = records.DEFAULTS


#: ``claim`` passes this as the keys it decides on: it may take any key.
_ANY: Final = object()

#: No key changed here: all of others' changes are taken in.
_NOT_OURS: Final = frozenset()

_time = time.time

#: Who holds the leases this process takes: ``host:pid/kernel``
#: (:mod:`tastypy._identity`). The other modules read it as ``_common._me``,
#: not imported by name: a forked child sets it again here.
_me = _identity.me().holder


def _after_fork() -> None:
    global _me
    _me = _identity.me().holder


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _gone_memo() -> Callable[[Any], bool]:
    """:func:`holder_gone`, asked once per holder (a pass over many records)."""
    seen: dict = {}

    def gone(holder: Any) -> bool:
        if type(holder) is not str:
            return False
        known = seen.get(holder)
        if known is None:
            known = seen[holder] = holder_gone(holder)
        return known

    return gone


def _until(offset: float, span: float) -> float:
    """``span`` seconds from now on the lease clock, as epoch seconds."""
    return _time() + offset + span


def _nothing() -> None:
    return None


def _check_span(value: Any, name: str, negative: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (value <= 0 and not negative)
    ):
        what = "a finite number of seconds" if negative else "a number of seconds > 0"
        raise InvalidArgumentError(f"{name} must be {what}, got {value!r}.")
    return float(value)
