"""Points in time as the command line and the web view give them: a version number
(``3``, ``v3``), or an instant (an ISO 8601 date or time, ``today``, ``2h``) as the
stored UTC timestamp. No SQL: what a reader is asked for, checked before it asks."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

from mirrorsync.errors import UsageError

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}([.,]\d{1,6})?)?([Zz]|[+-]\d{2}(:?\d{2})?)?$"
)


def is_version(text: str) -> bool:
    """A version number as the command line takes it: ``3`` or ``v3`` (as printed)."""
    digits = text.removeprefix("v")
    return digits.isascii() and digits.isdigit()


_RELATIVE_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhd])(?:\s+ago)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _relative(text: str, now: datetime | None) -> str | None:
    """``today``/``yesterday`` as a bare UTC date; ``2h``/``3d`` (the duration syntax,
    with a unit) as that long before now, to the second; None for anything else."""
    now = now or datetime.now(UTC)
    lowered = text.lower()
    if lowered in ("today", "yesterday"):
        day = now.date() - timedelta(days=1 if lowered == "yesterday" else 0)
        return day.isoformat()
    match = _RELATIVE_RE.match(lowered)
    if match is None:
        return None
    seconds = float(match["n"]) * _UNITS[match["unit"]]
    try:
        moment = now - timedelta(seconds=seconds)
    except OverflowError:
        return "0001-01-01T00:00:00Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment.year >= 1000 else "0001-01-01T00:00:00Z"


def instant(text: str, *, end_of_day: bool = True, now: datetime | None = None) -> str:
    """An ISO 8601 date or date and time, as a stored UTC timestamp; UsageError if not one.

    ``2026-11-20`` is the end of that day UTC (its start with ``end_of_day=False``);
    a time without an offset is UTC; ``Z``, ``+02:00`` and ``-0500`` are honoured.
    Impossible dates (``2026-13-45``) are refused. Relative times: ``today`` and
    ``yesterday`` are that UTC date; ``2h``, ``30m``, ``3d`` (the duration syntax with
    its unit) that long before ``now``.
    """
    original = text = text.strip()
    text = _relative(text, now) or text
    if not _DATE_RE.match(text) and not _DATETIME_RE.match(text):
        raise UsageError(
            f"{original!r} is not an ISO 8601 date or time or a relative one"
            " (e.g. 2026-11-20, 2026-11-20T08:00Z, 2026-11-20T20:16:00-05:00, 2h, 3d, yesterday)"
        )
    try:
        if _DATE_RE.match(text):
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.max if end_of_day else time.min, UTC)
        else:
            moment = datetime.fromisoformat(text.replace(" ", "T", 1))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except ValueError:
        raise UsageError(f"{text!r} is not a real date or time") from None
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise UsageError(f"{text!r} is outside the years 1 to 9999 in UTC") from None
    # %Y is not zero-padded on every C library: year 1 must read 0001 to sort as text.
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.%fZ")
