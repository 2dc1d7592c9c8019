"""tastypy: a dict and a progress tracker that live on disk as JSON lines.

>>> import tastypy
>>> sorted(n for n in tastypy.__all__ if n[0].isupper())[:3]
['CorruptFileError', 'DuplicateKeyError', 'FormatVersionError']
"""

from tastypy.errors import (
    CalledClosedTrackerError,
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
    TaskFailedError,
    TastypyError,
)
from tastypy.legacy import import_legacy
from tastypy.memoize import memoize
from tastypy.pod import DEFAULT_FILE_SIZE, DEFAULT_SYNC_AT, POD, PersistentOrderedDict
from tastypy.shared_progress_tracker import (
    SharedPersistentOrderedDict,
    SharedPOD,
    SharedProgressTracker,
    SharedTracker,
)
from tastypy.storage.repair import check, repair
from tastypy.tracker import ProgressTracker, Tracker

__version__ = "1.0.0.dev0"

__all__ = [
    "DEFAULT_FILE_SIZE",
    "DEFAULT_SYNC_AT",
    "POD",
    "CalledClosedTrackerError",
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
    "TaskFailedError",
    "TastypyError",
    "Tracker",
    "__version__",
    "check",
    "import_legacy",
    "memoize",
    "repair",
]
