"""SQLite storage: the only package that writes SQL.

``db`` opens and migrates the database, ``writes`` records what a sync saw,
``queries`` answers questions about the history.
"""

from mirrorsync.store.db import Store, utcnow

__all__ = ["Store", "utcnow"]
