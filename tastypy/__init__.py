"""tastypy: a dict and a progress tracker that live on disk as JSON lines.

>>> import tastypy
>>> sorted(n for n in tastypy.__all__ if n[0].isupper())[:3]
['CorruptFileError', 'DuplicateKeyError', 'FormatVersionError']
"""

from tastypy.errors import (
    CorruptFileError,
    DuplicateKeyError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidValueError,
    KindMismatchError,
    LegacyFormatError,
    LockTimeoutError,
    NotAPODError,
    PersistentOrderedDictException,
    PersistentOrderedDictIntegrityError,
    StorageError,
    TastypyError,
)
from tastypy.legacy import import_legacy
from tastypy.pod import POD, PersistentOrderedDict
from tastypy.storage.repair import check, repair
from tastypy.tracker import ProgressTracker, Tracker

# tastypy 0.0.3's shared objects (a server process behind a proxy) are the
# plain classes now: any number of processes and hosts may open one POD or
# tracker, and ``locked()``, ``lock()`` and ``unlock()`` are on both.
SharedPersistentOrderedDict = SharedPOD = PersistentOrderedDict
SharedProgressTracker = SharedTracker = ProgressTracker

__version__ = "1.0.0.dev0"

__all__ = [
    "POD",
    "CorruptFileError",
    "DuplicateKeyError",
    "FormatVersionError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidValueError",
    "KindMismatchError",
    "LegacyFormatError",
    "LockTimeoutError",
    "NotAPODError",
    "PersistentOrderedDict",
    "PersistentOrderedDictException",
    "PersistentOrderedDictIntegrityError",
    "ProgressTracker",
    "SharedPOD",
    "SharedPersistentOrderedDict",
    "SharedProgressTracker",
    "SharedTracker",
    "StorageError",
    "TastypyError",
    "Tracker",
    "__version__",
    "check",
    "import_legacy",
    "repair",
]
