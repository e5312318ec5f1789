"""Logging: one event per line on stderr, plain for people and journald, or JSON.

Plain lines carry no timestamp (journald and most collectors add their own).
When stderr is connected to the journal (systemd sets ``$JOURNAL_STREAM`` to the
device and inode of that stream), each line starts with a syslog priority such
as ``<4>``, which journald strips and turns into the entry's priority, so
``journalctl -p warning`` works. ``--log-format json`` prints one JSON object
per line with ``time``, ``level``, ``logger``, ``message`` and the event's own
fields (for a stack: source, release, stack, status, added, removed, bytes,
requests, seconds).

Code attaches those fields with ``log.info(..., extra=fields(added=3, ...))``.
"""

from __future__ import annotations

import sys

from mirrorsync.choices import LOG_FORMATS as LOG_FORMATS

# logging's levels, the journal's priorities: shared with the formatters
# (mirrorsync.logformat, imported with ``logging`` only when logging is configured:
# a command with no event loop, ``status``, does so only if something logs).
from mirrorsync.journal import CRITICAL as CRITICAL
from mirrorsync.journal import DEBUG as DEBUG
from mirrorsync.journal import ERROR as ERROR
from mirrorsync.journal import FIELDS, plain_line
from mirrorsync.journal import INFO as INFO
from mirrorsync.journal import WARNING as WARNING
from mirrorsync.journal import stderr_is_journal as stderr_is_journal

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    import logging
    from typing import Any

    from mirrorsync.choices import LogFormat


def fields(**values: object) -> dict[str, Any]:
    """Structured fields for one log call: ``log.info(msg, extra=fields(added=1))``."""
    return {FIELDS: values}


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


#: The settings of :func:`setup_logging` not applied yet (a lean command's).
_pending: tuple[int, int, LogFormat, bool] | None = None


def setup_logging(
    verbose: int = 0,
    quiet: int = 0,
    log_format: LogFormat = "plain",
    *,
    interactive: bool = False,
    lazy: bool = False,
) -> None:
    """Configure the ``mirrorsync`` logger tree (``logformat.configure``).

    The default level is INFO; each ``-v`` lowers it by one step (DEBUG), each
    ``-q`` raises it. ``interactive`` (a person at a terminal, plain format)
    starts one step higher, at WARNING: the progress display and summary table
    tell the story the INFO lines would repeat. One line per HTTP request (the
    ``mirrorsync.http`` logger) comes only with ``-vv``, wherever stderr goes, so
    ``-v`` and ``-vv`` differ off a terminal too.

    ``lazy``: applied when first needed (a :func:`logger`'s first call, a JSON
    :func:`print_line`, :func:`ensure_logging`), not now: ``status`` imports
    ``logging`` only if it logs.
    """
    global _pending
    _pending = (verbose, quiet, log_format, interactive)
    if not lazy:
        ensure_logging()


def ensure_logging() -> None:
    """Apply the settings :func:`setup_logging` was given, if not yet."""
    global _pending
    if _pending is not None:
        from mirrorsync.logformat import configure

        settings, _pending = _pending, None
        configure(*settings)


class _Logger:
    """A ``logging.Logger`` by name, looked up (and logging configured) at its first use."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        import logging

        ensure_logging()
        return getattr(logging.getLogger(self._name), attribute)


def logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` for a module a lean command imports: ``logging``
    is imported, and configured, when the logger is first used."""
    return _Logger(name)  # type: ignore[return-value]


def print_line(text: str, level: int = ERROR) -> None:
    """A line the CLI prints itself (``mirrorsync: error: ...``), in the log format.

    Not filtered by level: an error that decides the exit status is always shown.
    In JSON format it becomes an object like every other line on stderr; under
    journald it gets its priority prefix.
    """
    if _pending is not None and _pending[2] == "plain":  # as logformat.line would say it
        text = plain_line(text, level, stderr_is_journal())
    else:
        from mirrorsync.logformat import line

        ensure_logging()
        text = line(text, level)
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
