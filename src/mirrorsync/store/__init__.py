"""SQLite storage: the only package that writes SQL.

``db`` opens and migrates the database, ``writes`` records what a sync saw,
``releases`` the releases a source lists, ``httpcache`` the last answers of the
documents it fetched, ``queries`` answers questions about a stack's history,
``eventlog`` reads the change log, ``specs`` the specs and their manifests,
``names`` resolves the names a user gives.
"""

from mirrorsync.store.db import Store, utcnow

__all__ = ["Store", "utcnow"]
