"""The live progress display for a person at a terminal (stderr is a TTY).

It reads :class:`RunProgress` each time rich refreshes the screen (a few times a
second, from rich's own refresh thread), so the sync never waits for it. Log
lines written meanwhile go through rich's stderr proxy and appear above it. The
display is transient: it disappears when the run ends, and the summary table
takes its place.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mirrorsync.cli.render import human_size
from mirrorsync.sync import RunProgress


class RunDisplay(Progress):
    """stacks done/total, a bar, then failures, manifests and their rate, requests, bytes
    and their rate, time elapsed and the estimated time left for the stacks."""

    def __init__(self, progress: RunProgress, console: Console) -> None:
        self.run = progress
        self.started = time.monotonic()
        self.task: TaskID | None = None  # rich renders once while constructing
        super().__init__(
            SpinnerColumn(),
            TextColumn("stacks"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            refresh_per_second=8,
        )
        self.task = self.add_task("sync", total=None, detail="")

    def describe(self) -> str:
        run = self.run
        elapsed = max(time.monotonic() - self.started, 1e-6)
        parts = [
            f"{run.manifests} manifests ({run.manifests / elapsed:.0f}/s)",
            f"{run.http.requests} requests",
            human_size(run.http.bytes),
            f"{human_size(int(run.http.bytes / elapsed))}/s",
        ]
        if run.stacks_failed:
            parts.insert(0, f"{run.stacks_failed} failed")
        return " · ".join(parts)

    def get_renderable(self) -> RenderableType:
        if self.task is not None:
            self.update(
                self.task,
                total=self.run.stacks_total or None,
                completed=self.run.stacks_done,
                detail=self.describe(),
            )
        return super().get_renderable()


@contextmanager
def live_progress(progress: RunProgress, console: Console, *, enabled: bool) -> Iterator[None]:
    """Show the display for the duration of the ``with`` block, if ``enabled``."""
    if not enabled:
        yield
        return
    with RunDisplay(progress, console):
        yield
