"""Where the database is: a SQLite file (a ``Path``) or a PostgreSQL server (:class:`PostgresUrl`).

Kept free of driver imports, so the configuration can name a database without
loading either driver; and free of ``pathlib``, which costs ``status`` 3 ms to
import (``pathlib`` brings ``urllib.parse`` and ``ipaddress``): a command that
only reads may name a SQLite file by its text (:data:`ReadLocation`), and
``Location`` is made at its first use (issue 31, start-up).
"""

from __future__ import annotations

from mirrorsync.records import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)

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


if TYPE_CHECKING:
    from pathlib import Path

    #: What ``Store.open`` accepts.
    Location = Path | PostgresUrl
    #: What the commands that only read accept (``Store.open_read_only``, the health
    #: model): the same, or a SQLite file named by its text (``status`` reads the name
    #: from its configuration's cache, ``config_cache``, and never makes a ``Path``).
    ReadLocation = Location | str
else:

    def __getattr__(name: str) -> object:
        if name == "Location":  # at run time only where something imports it
            from pathlib import Path

            return Path | PostgresUrl
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_postgres_url(text: str) -> bool:
    return text.startswith(POSTGRES_SCHEMES)
