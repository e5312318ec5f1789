"""Progress as log lines, for a run nobody watches (a timer, a pipe, cron).

A long run is never silent for minutes in the journal: every ``interval``
seconds one INFO line says how far each phase is (indexes: stacks done of those
known so far; manifests: spec manifests fetched of those to fetch; webhooks:
events delivered of those due), each with its rate and the time it has left,
then requests, bytes and their rate, and the time elapsed. It reads
:class:`RunProgress`, which the sync updates as it goes, and never waits for the
sync. The terminal display (``cli/progress.py``) shows the same figures.
"""

from __future__ import annotations

import logging
import time

import anyio

from mirrorsync.cli.render import human_duration, human_size, plural
from mirrorsync.logs import fields
from mirrorsync.phase import Phase
from mirrorsync.sync.progress import RunProgress

log = logging.getLogger("mirrorsync.progress")


def rate_text(rate: float) -> str:
    """``0.5/s``, ``40/s``: a phase's rate."""
    return f"{rate:.1f}/s" if rate < 10 else f"{rate:.0f}/s"


def left_text(phase: Phase, now: float) -> str:
    """The time a phase has left at its rate so far: ``1m35s left``, ``? left`` before
    it has a rate, ``done``."""
    if phase.complete:
        return "done"
    eta = phase.eta(now)
    return f"{'?' if eta is None else human_duration(eta)} left"


PHASES = ("indexes", "manifests", "copies", "webhooks")


def phases(progress: RunProgress) -> list[tuple[str, Phase]]:
    """The phases worth showing: indexes always, the others once they have work."""
    shown = [("indexes", progress.indexes)]  # stacks: the run's first figure
    for name, phase in (
        ("manifests", progress.crawl),
        ("copies", progress.copies),
        ("webhooks", progress.webhooks),
    ):
        if phase.total or phase.done:
            shown.append((name, phase))
    return shown


def describe(progress: RunProgress, now: float | None = None) -> str:
    now = time.monotonic() if now is None else now
    elapsed = max(now - progress.started, 1e-6)
    http = progress.http
    parts = [
        f"{name} {phase.done}/{phase.total} ({rate_text(phase.rate(now))}, {left_text(phase, now)})"
        for name, phase in phases(progress)
    ]
    if progress.stacks_failed:
        parts.append(f"{plural(progress.stacks_failed, 'stack')} failed")
    parts += [
        plural(http.requests, "request"),
        f"{human_size(http.bytes)} ({human_size(int(http.bytes / elapsed))}/s)",
        f"{human_duration(elapsed)} elapsed",
    ]
    return ", ".join(parts)


async def log_progress(progress: RunProgress, interval: float) -> None:
    """Log a progress line every ``interval`` seconds until cancelled."""
    while True:
        await anyio.sleep(interval)
        now = time.monotonic()
        crawl, hooks = progress.crawl, progress.webhooks
        log.info(
            "progress: %s",
            describe(progress, now),
            extra=fields(
                stacks_done=progress.stacks_done,
                stacks_total=progress.stacks_total,
                manifests_done=crawl.done,
                manifests_total=crawl.total,
                copies_done=progress.copies.done,
                copies_total=progress.copies.total,
                webhook_events_done=hooks.done,
                webhook_events_total=hooks.total,
                requests=progress.http.requests,
                bytes=progress.http.bytes,
                seconds=round(now - progress.started, 3),
            ),
        )
