"""The ``logging`` side of :mod:`mirrorsync.logs`: the formatters, the handler and the
credentials filter, imported when logging is first configured (every command but
those that start lean, ``status``, which may never log; issue 31, start-up)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from mirrorsync.journal import FIELDS, plain_line, priority, stderr_is_journal
from mirrorsync.redact import scrub
from mirrorsync.text import escape
from mirrorsync.units import Verbatim, humane, plain, verbatim

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any, TextIO

    from mirrorsync.choices import LogFormat


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    values = getattr(record, FIELDS, None)
    return dict(values) if isinstance(values, dict) else {}


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
            return f"<{priority(record.levelno)}>{text}"
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


class ScrubFilter(logging.Filter):
    """A logging filter that masks credentials in every record, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = _scrubbed_parts(record, clean) or (clean, None)
        return True


def _scrubbed_parts(record: logging.LogRecord, clean: str) -> tuple[str, tuple[object, ...]] | None:
    """The record's format and arguments, each masked, when together they make ``clean``:
    an argument keeps its type (a name stays a ``units.Verbatim`` for the plain format)."""
    if not isinstance(record.args, tuple) or not isinstance(record.msg, str):
        return None
    args = tuple(type(a)(scrub(a)) if isinstance(a, str) else a for a in record.args)
    msg = scrub(record.msg)
    try:
        return (msg, args) if msg % args == clean else None
    except (TypeError, ValueError):
        return None


def configure(verbose: int, quiet: int, log_format: LogFormat, interactive: bool) -> None:
    """Configure the ``mirrorsync`` logger tree now: the levels as
    :func:`mirrorsync.logs.setup_logging` describes them, one handler on stderr."""
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


def line(text: str, level: int) -> str:
    """:func:`mirrorsync.logs.print_line`'s line, in the configured format."""
    handlers = logging.getLogger("mirrorsync").handlers
    formatter = handlers[0].formatter if handlers else None
    if isinstance(formatter, JsonFormatter):
        record = logging.LogRecord("mirrorsync", level, "", 0, text, None, None)
        return formatter.format(record)
    return plain_line(
        text, level, isinstance(formatter, PlainFormatter) and formatter.priority_prefix
    )
