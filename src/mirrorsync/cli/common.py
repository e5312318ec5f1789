"""What the command modules share: the database opened read-only, the metrics refreshed."""

from __future__ import annotations

from mirrorsync.config import Config
from mirrorsync.errors import NoDatabaseError
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
