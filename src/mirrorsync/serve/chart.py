"""A stack's size over its history as inline SVG, made on the server (no script).

One point per version, two series: specs (left axis) and bytes (right axis, of
the specs whose size is known). Each point is a ``<circle>`` carrying its
version and values as ``data-`` attributes and a ``<title>`` (a tooltip), so
the chart can be read back: its points are the history, one for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mirrorsync.store.queries import VersionRow
from mirrorsync.store.web import VersionBytes

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 84, 16, 40


@dataclass(frozen=True, slots=True)
class Point:
    version: int
    created_at: str
    specs: int
    bytes: int
    x: float
    y_specs: float
    y_bytes: float


@dataclass(frozen=True, slots=True)
class Tick:
    label: str
    y: float


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    points: list[Point]
    specs_path: str
    bytes_path: str
    specs_ticks: list[Tick]
    bytes_ticks: list[Tick]
    left: int
    right: int
    top: int
    bottom: int
    has_bytes: bool


def _scale(top_value: int) -> int:
    """A round upper bound of an axis (1, 2 or 5 times a power of ten), at least ``top_value``."""
    bound = 1
    while True:
        for step in (1, 2, 5):
            if bound * step >= top_value:
                return bound * step
        bound *= 10


def _size_label(n: float) -> str:
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= factor:
            return f"{n / factor:g} {unit}"
    return f"{n:g} B"


def build(history: Sequence[VersionRow], sizes: Sequence[VersionBytes]) -> Chart:
    """The chart of ``history`` (every version, in order); ``sizes`` by version."""
    by_version = {s.version: s.bytes for s in sizes}
    inner_w = WIDTH - LEFT - RIGHT
    inner_h = HEIGHT - TOP - BOTTOM
    max_specs = _scale(max((r.spec_count for r in history), default=0) or 1)
    max_bytes = _scale(max(by_version.values(), default=0) or 1)
    n = len(history)
    points = []
    for i, r in enumerate(history):
        x = LEFT + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)
        b = by_version.get(r.version, 0)
        points.append(
            Point(
                r.version,
                r.created_at,
                r.spec_count,
                b,
                round(x, 1),
                round(TOP + inner_h * (1 - r.spec_count / max_specs), 1),
                round(TOP + inner_h * (1 - b / max_bytes), 1),
            )
        )

    def path(ys: list[float]) -> str:
        return " ".join(
            f"{'M' if i == 0 else 'L'}{p.x},{y}"
            for i, (p, y) in enumerate(zip(points, ys, strict=True))
        )

    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    return Chart(
        WIDTH,
        HEIGHT,
        points,
        path([p.y_specs for p in points]),
        path([p.y_bytes for p in points]),
        [Tick(f"{max_specs * t:g}", round(TOP + inner_h * (1 - t), 1)) for t in ticks],
        [Tick(_size_label(max_bytes * t), round(TOP + inner_h * (1 - t), 1)) for t in ticks],
        LEFT,
        WIDTH - RIGHT,
        TOP,
        HEIGHT - BOTTOM,
        any(by_version.values()),
    )
