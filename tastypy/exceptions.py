"""tastypy 0.0.3's ``tastypy.exceptions`` module, for code that imports from it.

The classes are those of :mod:`tastypy.errors`, where every error of tastypy
is defined: ``except tastypy.exceptions.PersistentOrderedDictIntegrityError``
catches what a corrupt file raises now (:class:`~tastypy.CorruptFileError`).
"""

from tastypy.errors import (
    CalledClosedTrackerError,
    DuplicateKeyError,
    PersistentOrderedDictException,
    PersistentOrderedDictIntegrityError,
)

__all__ = [
    "CalledClosedTrackerError",
    "DuplicateKeyError",
    "PersistentOrderedDictException",
    "PersistentOrderedDictIntegrityError",
]
