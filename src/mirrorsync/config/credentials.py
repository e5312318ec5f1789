"""The secrets the configuration names but does not hold: a password or webhook secret
file's text, and the database's password from ``password_env`` or ``password_file``.
"""

from __future__ import annotations

import os
from pathlib import Path

from mirrorsync.errors import ConfigError
from mirrorsync.paths import expand_path, read_regular_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mirrorsync.config.schema import Config, DatabaseConfig


#: A password or webhook secret file holds one line; anything this large is not one.
MAX_SECRET_BYTES = 64 * 1024


def unreadable(exc: OSError | ValueError) -> str:
    """An unreadable file's reason, one phrase."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)


def read_secret_file(path: Path) -> str:
    """A password or secret file's text (regular, small, UTF-8); ValueError or OSError."""
    return read_regular_file(path, MAX_SECRET_BYTES, "larger than 64 KiB, not a secret").decode()


def database_password(config: Config, database: DatabaseConfig) -> str | None:
    """The password ``password_env`` or ``password_file`` names, if either is given."""
    if database.password_env is not None:
        value = os.environ.get(database.password_env)
        if value is None:
            raise ConfigError(
                config.path,
                "database.password_env",
                f"environment variable {database.password_env} is not set",
            )
        return value
    if database.password_file is not None:
        file = expand_path(database.password_file)
        try:
            return read_secret_file(file).rstrip("\r\n")
        except (OSError, ValueError) as exc:  # a FIFO never blocks; UnicodeDecodeError too
            reason = unreadable(exc)
            raise ConfigError(
                config.path, "database.password_file", f"cannot read {file}: {reason}"
            ) from None
    return None
