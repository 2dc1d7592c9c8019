"""The only code that touches files. See ``docs/format.md`` for the layout."""

from tastypy.storage.store import DELETED, Store

__all__ = ["DELETED", "Store"]
