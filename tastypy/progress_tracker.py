"""tastypy 0.0.3's ``tastypy.progress_tracker`` module, for code that imports
from it: the tracker is defined in :mod:`tastypy.tracker`.

``DEFAULT_PROGRESS_TRACKER_MAPPING``: the fields of a new task record, as
0.0.3 named them (pairs of field and value).
"""

from tastypy.records import DEFAULTS as DEFAULT_PROGRESS_TRACKER_MAPPING
from tastypy.tracker import ProgressTracker, Tracker

__all__ = ["DEFAULT_PROGRESS_TRACKER_MAPPING", "ProgressTracker", "Tracker"]
