"""The live progress display for a person at a terminal (stderr is a TTY).

One row per phase of the run (indexes, manifests, copies, webhooks), each with its own
bar, done/total, rate and time left, and a last line with requests, bytes and
their rate, failures and the time elapsed. It reads :class:`RunProgress` each
time rich refreshes the screen (a few times a second, from rich's own refresh
thread), so the sync never waits for it. Log lines written meanwhile go through
rich's stderr proxy and appear above it. The display is transient: it
disappears when the run ends, and the summary table takes its place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)
from rich.text import Text

from mirrorsync.cli.progress_log import PHASES, left_text, phases, rate_text
from mirrorsync.cli.render import human_duration, human_size, plural
from mirrorsync.sync.progress import RunProgress


class RunDisplay(Progress):
    """A row per phase that has work (indexes always), then the run's figures."""

    def __init__(self, progress: RunProgress, console: Console) -> None:
        self.run = progress
        self.rows: dict[str, TaskID] = {}
        self.ready = False  # rich renders once while constructing, before tasks can be added
        super().__init__(
            SpinnerColumn(),
            TextColumn("{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7}"),
            TextColumn("{task.fields[left]}"),
            console=console,
            transient=True,
            refresh_per_second=8,
        )
        for name in PHASES:  # shown once their phase has work (indexes always)
            self.rows[name] = self.add_task(name, total=None, visible=False, rate="", left="")
        self.ready = True

    def describe(self, now: float) -> str:
        run = self.run
        elapsed = max(now - run.started, 1e-6)
        parts = [
            plural(run.http.requests, "request"),
            human_size(run.http.bytes),
            f"{human_size(int(run.http.bytes / elapsed))}/s",
            f"{human_duration(elapsed)} elapsed",
        ]
        if run.stacks_failed:
            parts.insert(0, f"{plural(run.stacks_failed, 'stack')} failed")
        return " · ".join(parts)

    def get_renderables(self) -> Iterable[RenderableType]:
        if not self.ready:
            return
        now = time.monotonic()
        for name, phase in phases(self.run):
            self.update(
                self.rows[name],
                visible=True,
                total=phase.total or None,
                completed=phase.done,
                rate=rate_text(phase.rate(now)),
                left=left_text(phase, now),
            )
        yield self.make_tasks_table(self.tasks)
        yield Text(f"  {self.describe(now)}")


@contextmanager
def live_progress(progress: RunProgress, console: Console, *, enabled: bool) -> Iterator[None]:
    """Show the display for the duration of the ``with`` block, if ``enabled``."""
    if not enabled:
        yield
        return
    with RunDisplay(progress, console):
        yield
