"""What a number of the configuration may be: a size (``64 MiB``), a duration (``30s``,
``3d``), and the range of every numeric key (:data:`RANGES`, checked in one place).
"""

from __future__ import annotations

import dataclasses
import math
import re

_SIZE_RE = re.compile(r"^\s*(?P<n>\d+)\s*(?P<unit>(?:[KMGT]i?)?B?)\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """``1048576``, ``"1 MiB"``, ``"16MB"``, ``"4GiB"`` -> bytes (ValueError if not a size)."""
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(f"expected a size such as 1048576, 64 MiB or 2 GB, got {value!r}")
    unit = match["unit"].upper().rstrip("B")
    power = "_KMGT".index(unit[:1] or "_")
    base = 1024 if unit.endswith("I") else 1000
    size = int(match["n"]) * int(pow(base, power))
    if size < 1:
        raise ValueError(f"expected a size of at least 1 byte, got {value!r}")
    return size


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """The values a number of the configuration may take (README, Configuration)."""

    low: float
    high: float
    low_open: bool = False  # ``low`` itself is refused (a timeout of 0 means nothing)
    unit: str = ""

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return math.isfinite(value) and above and value <= self.high

    def __str__(self) -> str:
        low = (
            f"above {_number(self.low)} and at most"
            if self.low_open
            else f"from {_number(self.low)} to"
        )
        return f"a number {low} {_number(self.high)}{self.unit}"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


_DAY = 86400.0
#: Every number in the configuration, by key (``webhooks[]``: each webhook). No NaN,
#: no infinity: nothing accepted may mean "never", hang the run or exhaust memory.
RANGES: dict[str, Range] = {
    "http.concurrency": Range(1, 1024),
    "http.per_host_concurrency": Range(1, 1024),
    "http.per_host_rate": Range(0, 100_000, low_open=True, unit=" (requests per second)"),
    "http.timeout": Range(0, 3600, low_open=True, unit=" (seconds)"),
    "http.deadline": Range(0, _DAY, low_open=True, unit=" (seconds; 1d)"),
    "http.run_deadline": Range(0, 7 * _DAY, low_open=True, unit=" (seconds; 7d)"),
    "http.revalidate_after": Range(0, 365 * _DAY, low_open=True, unit=" (seconds; 365d)"),
    "http.retries.attempts": Range(1, 100),
    "http.retries.backoff_initial": Range(0, 3600, unit=" (seconds)"),
    "http.retries.backoff_max": Range(0, _DAY, unit=" (seconds)"),
    "limits.catalog": Range(1, 1024**4, unit=" (bytes; 1 TiB)"),
    "limits.manifest": Range(1, 1024**4, unit=" (bytes; 1 TiB)"),
    "limits.index": Range(1, 1024**4, unit=" (bytes; 1 TiB)"),
    "limits.page": Range(1, 1024**4, unit=" (bytes; 1 TiB)"),
    "webhooks[].max_batch": Range(1, 10_000),
    "webhooks[].timeout": Range(0, 3600, low_open=True, unit=" (seconds)"),
    "webhooks[].max_age": Range(0, 365 * _DAY, low_open=True, unit=" (seconds; 365d)"),
    "webhooks[].keep_delivered": Range(0, 3650 * _DAY, low_open=True, unit=" (seconds; 3650d)"),
    "webhooks[].keep_dead": Range(0, 3650 * _DAY, low_open=True, unit=" (seconds; 3650d)"),
}


_DURATION_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d)?$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: float | str) -> float:
    """Seconds from a number of seconds or ``<number>[s|m|h|d]`` (``90``, ``30s``, ``3d``).

    The one duration syntax of the configuration and the command line; ValueError
    for anything else, including NaN and infinity.
    """
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(value.strip())
        if not match:
            raise ValueError(value)
        seconds = float(match["n"]) * _DURATION_UNITS[match["unit"] or "s"]
    if not math.isfinite(seconds):
        raise ValueError(value)
    return seconds


DURATION_HINT = "seconds or a duration such as 30s, 5m, 12h or 3d"
