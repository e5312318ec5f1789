"""The check of ``database:``: a SQLite file path, ``sqlite:///PATH`` or a PostgreSQL
URL (also as a mapping with its password's source); any other URL is refused.
"""

from __future__ import annotations

import re
import urllib.parse

from mirrorsync.config.schema import SQLITE_URL, Config, DatabaseConfig
from mirrorsync.errors import ConfigError
from mirrorsync.location import PostgresUrl, is_postgres_url

_URL_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


def check_database(config: Config) -> None:
    """A file path, ``sqlite:///PATH`` or a PostgreSQL URL (also as a mapping with its
    password's source); any other URL is refused, naming its scheme."""
    database = config.database
    if database is None:
        return
    if isinstance(database, DatabaseConfig):
        if not is_postgres_url(database.url):
            raise ConfigError(
                config.path,
                "database.url",
                f"expected postgresql://HOST:PORT/DBNAME, got {PostgresUrl(database.url)}",
            )
        _check_postgres_url(config.path, "database.url", database.url)
        if database.password_env is not None and database.password_file is not None:
            raise ConfigError(
                config.path, "database", "give at most one of password_env or password_file"
            )
        if database.password_env is not None and not database.password_env:
            raise ConfigError(
                config.path, "database.password_env", "expected an environment variable name"
            )
        if database.password_file is not None and not database.password_file:
            raise ConfigError(config.path, "database.password_file", "expected a file path")
        return
    if is_postgres_url(database):
        _check_postgres_url(config.path, "database", database)
        return
    if not database.strip() or "\x00" in database:
        raise ConfigError(config.path, "database", f"expected a file path, got {database!r}")
    match = _URL_SCHEME_RE.match(database)
    if match and not database.startswith(SQLITE_URL):
        scheme = match["scheme"]
        raise ConfigError(
            config.path,
            "database",
            f"{scheme}:// databases are not supported: give a SQLite file path"
            " such as /var/lib/mirrorsync/mirrorsync.db, sqlite:///PATH,"
            " or postgresql://HOST:PORT/DBNAME",
        )
    if database == SQLITE_URL or database == SQLITE_URL + "/":
        raise ConfigError(config.path, "database", f"expected sqlite:///PATH, got {database!r}")


def _check_postgres_url(path: str, key: str, url: str) -> None:
    """A PostgreSQL URL names a database on a host; libpq reads the rest (sslmode...)."""
    shown = PostgresUrl(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(path, key, f"bad PostgreSQL URL {shown}: {exc}") from None
    if not parts.path.strip("/"):
        raise ConfigError(path, key, f"expected postgresql://HOST:PORT/DBNAME, got {shown}")
