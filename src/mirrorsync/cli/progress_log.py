"""Progress as log lines, for a run nobody watches (a timer, a pipe, cron).

A long run is never silent for minutes in the journal: every ``interval``
seconds one INFO line says how far it is (stacks done of those known so far,
manifests fetched and their rate, requests, bytes and their rate, time
elapsed). It reads :class:`RunProgress`, which the sync updates as it goes, and
never waits for the sync.
"""

from __future__ import annotations

import logging
import time

import anyio

from mirrorsync.cli.render import human_duration, human_size, plural
from mirrorsync.logs import fields
from mirrorsync.sync import RunProgress

log = logging.getLogger("mirrorsync.progress")


def describe(progress: RunProgress, elapsed: float) -> str:
    elapsed = max(elapsed, 1e-6)
    http = progress.http
    parts = [
        f"{progress.stacks_done}/{progress.stacks_total} stacks done",
        f"{plural(progress.manifests, 'manifest')} ({progress.manifests / elapsed:.0f}/s)",
        plural(http.requests, "request"),
        f"{human_size(http.bytes)} ({human_size(int(http.bytes / elapsed))}/s)",
        f"{human_duration(elapsed)} elapsed",
    ]
    if progress.stacks_failed:
        parts.insert(1, f"{progress.stacks_failed} failed")
    return ", ".join(parts)


async def log_progress(progress: RunProgress, interval: float) -> None:
    """Log a progress line every ``interval`` seconds until cancelled."""
    started = time.monotonic()
    while True:
        await anyio.sleep(interval)
        elapsed = time.monotonic() - started
        log.info(
            "progress: %s",
            describe(progress, elapsed),
            extra=fields(
                stacks_done=progress.stacks_done,
                stacks_total=progress.stacks_total,
                manifests=progress.manifests,
                requests=progress.http.requests,
                bytes=progress.http.bytes,
                seconds=round(elapsed, 3),
            ),
        )
