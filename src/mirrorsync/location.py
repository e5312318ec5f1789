"""Where the database is: a SQLite file (a ``Path``) or a PostgreSQL server (:class:`PostgresUrl`).

Kept free of driver imports, so the configuration can name a database without
loading either driver.
"""

from __future__ import annotations

from pathlib import Path

from mirrorsync.records import field, record

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@record(frozen=True, slots=True)
class PostgresUrl:
    """A PostgreSQL database: ``postgresql://user@host:port/dbname[?sslmode=...]``.

    ``str()`` (messages, logs) is the URL with its userinfo masked, so neither the
    password nor the user name is ever shown; only the driver reads ``url`` and
    ``password``. Options in the query string (``sslmode``, ``connect_timeout``,
    ...) reach libpq as they are; with no password given here, libpq looks in
    ``PGPASSWORD`` and ``~/.pgpass`` itself.
    """

    url: str
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        from mirrorsync.redact import redact_url  # when one is shown (start-up)

        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"PostgresUrl({str(self)!r})"

    def exists(self) -> bool:
        """A server database always "exists"; whether it holds a schema yet is the
        store's to say (NoDatabaseError), once connected."""
        return True

    def absolute(self) -> PostgresUrl:
        return self


#: What ``Store.open`` accepts.
Location = Path | PostgresUrl


def is_postgres_url(text: str) -> bool:
    return text.startswith(POSTGRES_SCHEMES)
