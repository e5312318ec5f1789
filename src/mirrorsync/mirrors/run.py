"""Bring every configured copy (or one) up to date with the latest synced state.

Per copy, in this order (each step only after the previous one succeeded):

1. plan: the copy's stacks as the last sync left them; their upstream indexes,
   fetched again by the content address the sync recorded (and checked against
   its sha256), since the database keeps only a few fields of each node and a
   copy's index must carry upstream's nodes unchanged; the selection: the
   globs, the hashes the copy's environments and ``hashes`` name
   (``mirrors/wanted.py``), and the specs upstream no longer lists that its
   ``keep`` holds (their records and verdicts from ``mirror_kept``).
2. download: layout, keys, and each binary's blobs then manifest.
3. publish: the new index blob, then the index manifest, atomically.
4. record: the published state, its history row and ``mirror.updated`` event.
5. prune: files the published index does not reference, once ``delete_after``
   has passed since they stopped being referenced.

A copy whose stacks' indexes and filters are those of its published state is
``unchanged``: nothing is fetched, and only the pruning runs. A failure stops
that copy for this run; its published state is left as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from mirrorsync.config import Config
from mirrorsync.errors import (
    CopyError,
)
from mirrorsync.fetch import HttpClient, Tally, Throttle
from mirrorsync.mirrors.job import CopyJob, utc_now
from mirrorsync.mirrors.oci_copy import OciCopyJob
from mirrorsync.mirrors.outcome import MirrorOutcome as MirrorOutcome
from mirrorsync.phase import Phase
from mirrorsync.store import Store

log = logging.getLogger("mirrorsync.mirror")


async def run_mirrors(
    config: Config,
    store: Store,
    workdir: Path,
    *,
    only: str | Sequence[str] | None = None,
    only_source: str | None = None,
    dry_run: bool = False,
    full: bool = False,
    throttle: Throttle | None = None,
    stats: Tally | None = None,
    clock: Callable[[], datetime] = utc_now,
    progress: Phase | None = None,
) -> list[MirrorOutcome]:
    """Update each configured copy (``only``: that one, or those; ``only_source``: those
    of a source).

    Never raises for one copy's failure: it is in its outcome. ``clock`` gives
    the current time (UTC), which decides what ``delete_after`` lets go. ``full``:
    plan and check the copy even if its published state follows from the synced one
    (``verify --mirror --repair``: key files written again). ``progress``: copies
    done of those to do, for the live display of ``once``.
    """
    names = [only] if isinstance(only, str) else only
    copies = [config.mirror(n) for n in names] if names else list(config.mirrors)
    received = [c.name for c in copies if c.source is None]
    if names and received and len(copies) == 1:
        raise CopyError(
            f"mirror {received[0]} has no source: it receives bundles ('mirrorsync bundle import')"
        )
    copies = [c for c in copies if c.source is not None]  # received ones: bundle import
    if only_source:
        copies = [c for c in copies if c.source == only_source]
    if not copies:
        return []
    if progress is not None:
        progress.add_work(len(copies))
    http = config.http
    throttle = throttle or Throttle(http.concurrency, http.per_host_rate, http.host_concurrency)
    outcomes: list[MirrorOutcome] = []
    clients: dict[bool, HttpClient] = {}
    try:
        for copy in copies:
            assert copy.source is not None
            insecure = config.source(copy.source).insecure
            client = clients.get(insecure)
            if client is None:
                client = clients[insecure] = HttpClient(
                    http, verify=not insecure, throttle=throttle, stats=stats
                )
            job_type: type[CopyJob] = CopyJob
            if copy.path.startswith(("oci://", "oci+http://")):  # a registry repository
                job_type = OciCopyJob
            job = job_type(config, store, client, workdir, copy, dry_run, clock)
            job.full = full
            outcomes.append(await job.run())
            if progress is not None:
                progress.advance()
    finally:
        for client in clients.values():
            await client.aclose()
    return outcomes
