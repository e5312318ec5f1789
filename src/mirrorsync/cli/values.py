"""What an option's value may be: each converter checks one kind of value the command
line takes (a count, an event id, a duration, a date, a version, a PostgreSQL URL) and
says what is wrong in one line (``argparse.ArgumentTypeError``, a usage error).

Imported for every command, as ``cli/arguments.py`` is: a converter imports what it needs (the
configuration's duration syntax, the store's dates) only when its option is given.
"""

from __future__ import annotations

import argparse

#: Largest number the command line takes (ids, limits, versions): the databases' integers.
MAX_NUMBER = 2**63 - 1


def _whole(text: str) -> int:
    """A whole number of ASCII digits (a sign allowed) within the databases' integers."""
    digits = text.strip().removeprefix("-").removeprefix("+")
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}")
    if len(digits) > 19 or abs(int(text)) > MAX_NUMBER:
        raise argparse.ArgumentTypeError(f"{text[:40]} is out of range (at most {MAX_NUMBER})")
    return int(text)


def positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def seconds_arg(text: str) -> float:
    """A duration (``--wait``, ``--progress-every``): seconds or the one duration syntax
    (``90``, ``30s``, ``5m``, ``1h``, ``3d``), 0 to a year; a negative one is refused."""
    from mirrorsync.config import parse_duration

    try:
        value = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds or a duration such as 30s, 5m, 1h or 3d, got {text[:40]!r}"
        ) from None
    if not 0 <= value <= _YEAR:
        raise argparse.ArgumentTypeError(f"expected 0 to {_YEAR} seconds, got {text[:40]}")
    return value


_YEAR = 366 * 86400


def event_id(text: str) -> int:
    """An event id (``webhooks replay --since``): 0 or more."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an event id (0 or more), got {value}")
    return value


def _date(text: str, *, end_of_day: bool) -> str:
    from mirrorsync.errors import UsageError
    from mirrorsync.store.instants import instant

    try:
        return instant(text, end_of_day=end_of_day)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def since_arg(text: str) -> int | str:
    """``--since``: an event id, or a date/time (a bare date: from the start of that day),
    or a relative one (``2h``, ``3d``: that long ago; ``today``, ``yesterday``: UTC dates)."""
    if text.isdigit():
        return event_id(text)
    return _date(text, end_of_day=False)


def until_arg(text: str) -> str:
    """``--until``: a date/time (a bare date: to the end of that day), or a relative one."""
    return _date(text, end_of_day=True)


def version_or_date(text: str) -> str:
    """A version number (``3`` or ``v3``, as printed), or a date/time checked now
    (resolved against the stack later)."""
    from mirrorsync.store.instants import is_version

    if is_version(text):
        _whole(text.removeprefix("v"))  # a version number the database can hold
    else:
        _date(text, end_of_day=True)
    return text


def postgresql_url(text: str) -> str:
    """``db migrate-to``'s target: ``postgresql://[USER@]HOST[:PORT]/DBNAME[?...]``."""
    from urllib.parse import urlsplit

    from mirrorsync.redact import redact_url

    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise argparse.ArgumentTypeError(
            f"expected postgresql://USER@HOST:PORT/DBNAME, got {redact_url(text)}"
        )
    return text


def duration_arg(text: str) -> float:
    from mirrorsync.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 30m, 12h or 3d, got {text!r}"
        ) from None
