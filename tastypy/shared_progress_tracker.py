"""tastypy 0.0.3's ``tastypy.shared_progress_tracker`` module, for code that
imports from it.

0.0.3's shared objects ran the POD or tracker in a server process behind a
proxy, so that the processes of one program could share it. Now any number
of processes (and hosts) may open one POD or tracker, so the shared names are
the plain classes; ``locked()``, ``lock()`` and ``unlock()`` exclude the
other processes for a read-modify-write, as the shared objects' did.
"""

from tastypy.pod import POD, PersistentOrderedDict
from tastypy.tracker import ProgressTracker

SharedPersistentOrderedDict = SharedPOD = PersistentOrderedDict
SharedProgressTracker = SharedTracker = ProgressTracker

__all__ = [
    "POD",
    "SharedPOD",
    "SharedPersistentOrderedDict",
    "SharedProgressTracker",
    "SharedTracker",
]
