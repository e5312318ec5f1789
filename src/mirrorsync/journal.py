"""What the log lines' formats share, without ``logging``: its levels, the syslog
priority of each, whether stderr is the journal, and the key of an event's fields.

Below both :mod:`mirrorsync.logs` (what every module calls) and
:mod:`mirrorsync.logformat` (the formatters, imported with ``logging`` when logging is
configured), so that neither imports the other at module level.
"""

from __future__ import annotations

import os
import sys

from mirrorsync.text import escape
from mirrorsync.units import humane

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import TextIO

#: The levels of ``logging``, without importing it.
CRITICAL, ERROR, WARNING, INFO, DEBUG = 50, 40, 30, 20, 10

#: The attribute of a log record that holds its event's fields (``logs.fields``).
FIELDS = "mirrorsync_fields"

# syslog(3) priorities by logging level.
_PRIORITY = {
    CRITICAL: 2,
    ERROR: 3,
    WARNING: 4,
    INFO: 6,
    DEBUG: 7,
}


def priority(level: int) -> int:
    """The syslog priority of a logging level (journald's ``<N>`` prefix)."""
    for threshold in sorted(_PRIORITY, reverse=True):
        if level >= threshold:
            return _PRIORITY[threshold]
    return 7


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


def plain_line(text: str, level: int, prefixed: bool) -> str:
    """A line the CLI prints itself in the plain format: humane, escaped, and with
    the journal's ``<N>`` priority when ``prefixed``."""
    text = escape(humane(text))
    return f"<{priority(level)}>{text}" if prefixed else text
