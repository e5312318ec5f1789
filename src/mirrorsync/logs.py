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

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from mirrorsync.choices import LOG_FORMATS as LOG_FORMATS
from mirrorsync.redact import ScrubFilter, scrub
from mirrorsync.text import escape
from mirrorsync.units import Verbatim, humane, plain, verbatim

if TYPE_CHECKING:
    from mirrorsync.choices import LogFormat

_FIELDS = "mirrorsync_fields"
# syslog(3) priorities by logging level.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def fields(**values: object) -> dict[str, Any]:
    """Structured fields for one log call: ``log.info(msg, extra=fields(added=1))``."""
    return {_FIELDS: values}


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    values = getattr(record, _FIELDS, None)
    return dict(values) if isinstance(values, dict) else {}


def _priority(level: int) -> int:
    for threshold in sorted(_PRIORITY, reverse=True):
        if level >= threshold:
            return _PRIORITY[threshold]
    return 7


class PlainFormatter(logging.Formatter):
    """``LEVEL logger: message``, on one line whatever the message holds."""

    def __init__(self, *, priority_prefix: bool = False) -> None:
        super().__init__()
        self.priority_prefix = priority_prefix

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname} {record.name}: {humane(_marked_message(record))}"
        if record.exc_info and record.exc_info[1] is not None:  # a library's words: masked too
            text += scrub(f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})")
        text = escape(text.replace("\r", "\\r").replace("\n", "\\n"))
        if self.priority_prefix:
            return f"<{_priority(record.levelno)}>{text}"
        return text


def _marked_message(record: logging.LogRecord) -> str:
    """The record's message, its :class:`~mirrorsync.units.Verbatim` arguments (names)
    marked for :func:`~mirrorsync.units.humane` to leave as they are."""
    args = record.args
    if isinstance(args, tuple) and any(isinstance(a, Verbatim) for a in args):
        return str(record.msg) % tuple(verbatim(a) if isinstance(a, Verbatim) else a for a in args)
    return record.getMessage()


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": plain(record.getMessage()),  # names' marks out; nothing rewritten
        }
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        for key, value in _record_fields(record).items():
            entry.setdefault(key, value)
        # Every field, not only the message: a URL in ``url`` or ``error`` is masked too.
        return json.dumps(_scrubbed(entry), separators=(",", ":"), default=lambda v: scrub(str(v)))


def _scrubbed(value: Any) -> Any:
    """``value`` with the credentials of every URL in every string in it masked."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


class StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the event.

    A live progress display swaps ``sys.stderr`` for a proxy that prints above
    the display; looking the stream up on each event lets log lines go through it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream: TextIO = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr) is the journal stream systemd connected us to."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(
    verbose: int = 0, quiet: int = 0, log_format: LogFormat = "plain", *, interactive: bool = False
) -> None:
    """Configure the ``mirrorsync`` logger tree.

    The default level is INFO; each ``-v`` lowers it by one step (DEBUG), each
    ``-q`` raises it. ``interactive`` (a person at a terminal, plain format)
    starts one step higher, at WARNING: the progress display and summary table
    tell the story the INFO lines would repeat. One line per HTTP request (the
    ``mirrorsync.http`` logger) comes only with ``-vv``, wherever stderr goes, so
    ``-v`` and ``-vv`` differ off a terminal too.
    """
    base = logging.WARNING if interactive and log_format == "plain" else logging.INFO
    level = max(logging.DEBUG, min(logging.CRITICAL, base - 10 * verbose + 10 * quiet))
    requests = logging.DEBUG if verbose - quiet >= 2 else max(level, logging.INFO)
    logging.getLogger("mirrorsync.http").setLevel(requests)
    handler = StderrHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter(priority_prefix=stderr_is_journal()))
    root = logging.getLogger("mirrorsync")
    handler.addFilter(ScrubFilter())  # no credentials in logs, whoever logs them
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def print_line(text: str, level: int = logging.ERROR) -> None:
    """A line the CLI prints itself (``mirrorsync: error: ...``), in the log format.

    Not filtered by level: an error that decides the exit status is always shown.
    In JSON format it becomes an object like every other line on stderr; under
    journald it gets its priority prefix.
    """
    handlers = logging.getLogger("mirrorsync").handlers
    formatter = handlers[0].formatter if handlers else None
    if isinstance(formatter, JsonFormatter):
        record = logging.LogRecord("mirrorsync", level, "", 0, text, None, None)
        text = formatter.format(record)
    else:
        text = escape(humane(text))
        if isinstance(formatter, PlainFormatter) and formatter.priority_prefix:
            text = f"<{_priority(level)}>{text}"
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
