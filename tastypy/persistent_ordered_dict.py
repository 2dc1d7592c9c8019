"""tastypy 0.0.3's ``tastypy.persistent_ordered_dict`` module, for code that
imports from it: the POD is defined in :mod:`tastypy.pod`."""

from tastypy.pod import DEFAULT_FILE_SIZE, DEFAULT_SYNC_AT, POD, PersistentOrderedDict

__all__ = ["DEFAULT_FILE_SIZE", "DEFAULT_SYNC_AT", "POD", "PersistentOrderedDict"]
