"""One hierarchy for every error mirrorsync reports.

Each error renders as one line naming what failed (file and key, URL, stack) and
carries the process exit status the CLI uses for it. Nothing outside this module
decides exit codes. Messages are forced onto one line and have the credentials
of any URL in them masked, whatever a library put into them.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from mirrorsync.redact import Url

# The exit statuses are read by --help (and this module by every command): the
# masking of credentials (mirrorsync.redact, its regular expressions) is
# imported when the first error is made, not before.

# Documented exit statuses (README, "Exit codes").
EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_NO_DATABASE = 66  # EX_NOINPUT: nothing synced yet, so nothing to read
EXIT_LOCKED = 75  # EX_TEMPFAIL
EXIT_DAMAGED = 65  # EX_DATAERR: the database file is damaged; a person must check or restore it
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the database server cannot be reached
EXIT_TARGET_NOT_EMPTY = 73  # EX_CANTCREAT: db migrate-to's target already holds a history


class MirrorsyncError(Exception):
    """Base of every error mirrorsync raises on purpose."""

    exit_code: int = EXIT_PARTIAL

    def __init__(self, message: str) -> None:
        from mirrorsync.redact import one_line, scrub

        message = one_line(scrub(message))
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(MirrorsyncError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = EXIT_USAGE

    def __init__(self, path: str, key: str | None, problem: str) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


class UsageError(MirrorsyncError):
    """The command line asks for something that cannot be done."""

    exit_code = EXIT_USAGE


class FormatError(MirrorsyncError):
    """A remote document does not have the shape its format requires."""

    def __init__(self, what: str, problem: str, url: Url | str | None = None) -> None:
        self.what = what
        self.problem = problem
        from mirrorsync.redact import redact_url

        self.url = redact_url(str(url)) if url else None
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" at {self.url}" if self.url else ""
        return f"malformed {self.what}{where}: {self.problem}"

    def at(self, url: Url | str) -> FormatError:
        """Return the same error, naming the URL the document came from."""
        return type(self)(self.what, self.problem, url)


class UnsupportedFormatError(FormatError):
    """A remote document is well formed but in a version (or encoding) mirrorsync does not read."""

    def _render(self) -> str:
        where = f" at {self.url}" if self.url else ""
        return f"unsupported {self.what}{where}: {self.problem}"


class FetchError(MirrorsyncError):
    """A request failed for good (after any retries)."""

    def __init__(self, url: Url | str, problem: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {problem}")
        from mirrorsync.redact import redact_url

        self.url = redact_url(str(url))
        self.problem = problem
        self.status = status


class NotFoundError(FetchError):
    """The server answered 404 or 410."""


class IntegrityError(MirrorsyncError):
    """Downloaded bytes do not match the length or checksum they were promised."""

    def __init__(self, url: Url | str, problem: str) -> None:
        super().__init__(f"{url}: {problem}")
        from mirrorsync.redact import redact_url

        self.url = redact_url(str(url))
        self.problem = problem


class StoreError(MirrorsyncError):
    """The database cannot be opened, migrated or queried."""

    #: True when no other stack could succeed either, so the run stops at once.
    ends_run: bool = False
    sqlite_error: str | None = None  # SQLite's name for the cause, e.g. SQLITE_CANTOPEN


class DatabaseFullError(StoreError):
    """The database's file system is full: the write was rolled back, nothing of it kept."""

    ends_run = True


class StaleSnapshotError(StoreError):
    """A stack's new state was diffed from a version another instance has replaced
    since: it is dropped, and the stack fails this run (never applied twice)."""


class ScratchError(MirrorsyncError):
    """A scratch file (a downloaded index, under ``$TMPDIR``) cannot be written."""


class SchemaError(StoreError):
    """The database's schema is older (a read-only command: ``once`` upgrades it) or
    newer than this mirrorsync: the data cannot be read as it is (``EX_DATAERR``)."""

    exit_code = EXIT_DAMAGED


class DatabasePathError(StoreError):
    """``database:`` names something that is not a file (a directory, a device): a
    configuration problem, the same status in every command."""

    exit_code = EXIT_USAGE


class DatabaseDamagedError(StoreError):
    """The database file is damaged: a corrupted page, or a table its schema lacks."""

    exit_code = EXIT_DAMAGED


class DatabaseUnavailableError(StoreError):
    """The database server (PostgreSQL) refused or lost the connection, or is shutting down."""

    exit_code = EXIT_UNAVAILABLE
    ends_run = True


class NoDatabaseError(StoreError):
    """A command that reads the history found no database (or one with no schema yet):
    nothing was synced yet."""

    exit_code = EXIT_NO_DATABASE


class TargetNotEmptyError(StoreError):
    """``db migrate-to`` was pointed at a database that already holds a mirrorsync
    history: it copies only into an empty one, and wrote nothing."""

    exit_code = EXIT_TARGET_NOT_EMPTY


class LockHeldError(MirrorsyncError):
    """Another run holds the lock on this database."""

    exit_code = EXIT_LOCKED


class MetricsError(MirrorsyncError):
    """The metrics file cannot be written."""


class SignatureError(MirrorsyncError):
    """A clear-signed document does not carry a good signature by a key the mirror publishes."""

    def __init__(self, url: Url | str, problem: str) -> None:
        super().__init__(f"{url}: {problem}")
        from mirrorsync.redact import redact_url

        self.url = redact_url(str(url))
        self.problem = problem


class BundleError(MirrorsyncError):
    """A bundle of a copy cannot be imported as it is: damaged, truncated, tampered with,
    signed by a key not trusted, or not the next one for the receiving copy (a gap or
    out of order). Nothing of it was published; the copy is as it was."""

    exit_code = EXIT_DAMAGED


class CopyError(MirrorsyncError):
    """A local mirror copy cannot be written or read (disk full, permissions, a damaged file)."""


class CopySourceError(CopyError):
    """A copy's source cannot be copied as configured (a v2 build cache): a configuration
    problem, exit 2 from ``mirror``."""

    exit_code = EXIT_USAGE
