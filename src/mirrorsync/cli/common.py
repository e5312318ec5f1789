"""What the command modules share: the database opened read-only, the metrics refreshed."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from mirrorsync.config import Config
from mirrorsync.errors import NoDatabaseError, UsageError
from mirrorsync.store import Store


def require_database(config: Config) -> None:
    """NoDatabaseError (exit 66) if nothing was synced yet: nothing to read."""
    if not config.database_path.exists():
        raise NoDatabaseError(
            f"no database yet at {config.database_path}; run 'mirrorsync once' first"
        )


async def open_store(config: Config) -> Store:
    """Every command here only reads: the database is opened read-only, never migrated."""
    return await Store.open_read_only(config.database_path)


async def refresh_metrics(config: Config) -> str | None:
    """The metrics file rewritten after a command changed what it reports (not ``once``,
    which writes its own); the failure line if it cannot be written."""
    from mirrorsync import metrics
    from mirrorsync.errors import MetricsError

    try:
        await metrics.refresh(config)
    except MetricsError as exc:
        return str(exc)
    return None


def is_glob(text: str) -> bool:
    """A name with a glob character (``*``, ``?``, ``[``): matched, not compared."""
    return any(c in text for c in "*?[")


def matching(pattern: str, known: Iterable[str], what: str, where: object) -> list[str]:
    """The names of ``known`` that ``pattern`` names: itself, or what it matches as a glob
    (as the configuration's filters do). None: a usage error naming it (exit 2)."""
    names = list(dict.fromkeys(known))
    found = (
        [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if is_glob(pattern)
        else [n for n in names if n == pattern]
    )
    if not found:
        have = ", ".join(names) or "none"
        raise UsageError(
            f"no {what} {'matches' if is_glob(pattern) else 'named'} {pattern!r} in {where} (have: {have})"
        )
    return found
