"""One exception hierarchy, rooted at :class:`TastypyError`.

Every message names the file, key or argument at fault, says what is wrong,
and says what to do about it.
"""

from __future__ import annotations

__all__ = [
    "TastypyError",
    "StorageError",
    "NotAPODError",
    "CorruptFileError",
    "FormatVersionError",
    "LegacyFormatError",
    "LockTimeoutError",
    "KindMismatchError",
    "DuplicateKeyError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidValueError",
    "PersistentOrderedDictException",
    "PersistentOrderedDictIntegrityError",
    "CalledClosedTrackerError",
    "FlowError",
]


class TastypyError(Exception):
    """Base class of every error raised by tastypy on purpose."""


class StorageError(TastypyError, OSError):
    """Reading or writing the files of a POD failed (disk full, permission...).

    The in-memory state and everything already on disk are left intact, and
    a later ``sync()`` retries.
    """


class NotAPODError(TastypyError, ValueError):
    """The path exists but does not hold a tastypy POD."""


class PersistentOrderedDictException(TastypyError):
    """Name kept from tastypy 0.0.3; raised for misuse of a POD or tracker."""


class PersistentOrderedDictIntegrityError(PersistentOrderedDictException, ValueError):
    """Name kept from tastypy 0.0.3 for a damaged file: every
    :class:`CorruptFileError` is one, so ``except`` clauses written for 0.0.3
    catch what a corrupt file raises now."""


class CorruptFileError(PersistentOrderedDictIntegrityError):
    """A file of the POD holds something that is not a valid record. Also a
    ``ValueError`` and a :class:`PersistentOrderedDictIntegrityError` (0.0.3's name)."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class FormatVersionError(TastypyError, ValueError):
    """The POD was written by a newer tastypy with a format this one cannot read."""


class LegacyFormatError(TastypyError, ValueError):
    """The directory holds a POD written by the original tastypy 0.0.3."""


class LockTimeoutError(TastypyError, TimeoutError):
    """The POD's lock could not be taken in time."""


class KindMismatchError(TastypyError, ValueError):
    """A ProgressTracker directory opened as a plain POD, or the other way round."""


class InvalidArgumentError(TastypyError, ValueError, TypeError):
    """An argument of a constructor or method is of the wrong type or out of range
    (``sync_at=0``, ``file_size="big"``...). Also a ``ValueError`` and a ``TypeError``."""


class InvalidKeyError(TastypyError, TypeError, ValueError):
    """A key that a POD cannot store: not a ``str``, an ``int`` (``bool`` is refused)
    or a tuple of those, or one JSON cannot spell (an int beyond 64 bits, a lone
    surrogate). Raised by the line that tried it; nothing is changed. Both a
    ``TypeError`` and a ``ValueError`` (what 0.0.3 raised for a bad key)."""


class InvalidValueError(TastypyError, TypeError, ValueError):
    """A value that JSON cannot hold (a ``set``, an object, a ``datetime``, NaN...).

    Raised by ``pod[key] = value``, naming the key and the type; nothing is
    changed. Both a ``TypeError`` and a ``ValueError``, so code written
    against either keeps working.
    """


class CalledClosedTrackerError(PersistentOrderedDictException):
    """A closed POD or tracker was asked to change (name from 0.0.3, whose
    shared tracker raised it once closed); reopen it to change it."""


class DuplicateKeyError(PersistentOrderedDictException, KeyError):
    """``Tracker.add(key)`` for a key that is already there (name from 0.0.3)."""


class FlowError(TastypyError, ValueError):
    """A flow (``tastypy.flow``) cannot be run as given: a malformed flow file
    (the file, task and field are named), an unknown task or dependency, a
    cycle (its tasks are named), a missing parameter, an ``--eval-param``
    expression outside the helpers. Raised before any task runs."""


class TaskFailedError(TastypyError, RuntimeError):
    """:meth:`~tastypy.ProgressTracker.fetch` (or a ``memoize``\\ d call) cannot
    run a task that is not done: it is aborted, or it failed ``max_tries``
    times. ``.key`` is the task's key, ``.last_error`` its record's
    ``_error`` (type, message, traceback, time) or None."""

    def __init__(self, message: str, key: object = None, last_error: dict | None = None):
        super().__init__(message)
        self.key = key
        self.last_error = last_error
