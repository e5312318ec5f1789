"""When a failed delivery is tried again, and when it is given up on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: Waits after the 1st, 2nd, 3rd, 4th failure in a row; every later one waits the last.
SCHEDULE = (60.0, 300.0, 1800.0, 7200.0, 21600.0)  # 1 min, 5 min, 30 min, 2 h, 6 h


def delay_after(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failed attempts (``failures >= 1``)."""
    return SCHEDULE[min(max(failures, 1), len(SCHEDULE)) - 1]


def isoformat(when: datetime) -> str:
    """The store's timestamp format: ISO 8601 UTC with microseconds, sortable as text."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def next_attempt(now: str, failures: int) -> str:
    return isoformat(parse(now) + timedelta(seconds=delay_after(failures)))


def latest_attempt(now: str) -> str:
    """No wait is longer than the schedule's longest step: a next attempt later than
    this was set by a clock that ran ahead."""
    return isoformat(parse(now) + timedelta(seconds=SCHEDULE[-1]))


def before(now: str, seconds: float) -> str:
    """The instant ``seconds`` before ``now``."""
    return isoformat(parse(now) - timedelta(seconds=seconds))


def dead_before(now: str, max_age: float) -> str:
    """Deliveries whose oldest event occurred before this instant are dead when they fail."""
    return isoformat(parse(now) - timedelta(seconds=max_age))
