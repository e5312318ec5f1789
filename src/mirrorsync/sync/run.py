"""One sync of every configured source: catalogue, stacks, snapshots, events."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mirrorsync.config import CatalogSource, Config, MirrorSource, PagesSource, Source
from mirrorsync.delivery import Outbox
from mirrorsync.delivery.outbox import merge_results
from mirrorsync.errors import FormatError, MirrorsyncError
from mirrorsync.fetch import HttpClient, Tally, Throttle, origin
from mirrorsync.formats.catalog import CatalogStack, locate_index, parse_catalog
from mirrorsync.formats.index import Index
from mirrorsync.logs import fields
from mirrorsync.redact import redact_url
from mirrorsync.store import Store, utcnow, writes
from mirrorsync.sync.index import IndexFetcher, Target, parse_downloaded
from mirrorsync.sync.outcome import (
    ManifestTally,
    RunReport,
    StackOutcome,
    Status,
    log_outcome,
)
from mirrorsync.sync.progress import RunProgress

if TYPE_CHECKING:  # the crawler and the pages source are imported when a run uses them
    from mirrorsync.sync.manifests import ManifestCrawler

log = logging.getLogger("mirrorsync.sync")

#: Indexes decoded and committed at once. Each can be ~150 MB of JSON; this bounds memory.
INDEX_WORKERS = 2
#: Stacks per host fetching their index at once (each holds one index on disk until parsed).
#: Per host, so stacks waiting on a slow or dead host never hold up the others.
HOST_INDEX_WORKERS = 2


async def run_once(
    config: Config,
    *,
    only_source: str | None = None,
    dry_run: bool = False,
    progress: RunProgress | None = None,
) -> RunReport:
    """Sync every source (or one); a failing stack never stops the others.

    With ``dry_run`` the sync runs against a throwaway copy of the database, so
    the report shows what would change and nothing is kept. ``progress``, if
    given, is kept up to date while the run goes on.
    """
    sources: Sequence[Source] = (
        [config.source(only_source)] if only_source else list(config.sources)
    )
    report = RunReport(started_at=utcnow(), dry_run=dry_run)
    progress = progress if progress is not None else RunProgress()
    started = time.monotonic()
    for source in sources:
        if source.insecure:  # on every run, so it is never forgotten
            log.warning(
                "source %s: TLS certificate verification is OFF (insecure: true); "
                "anyone on the network path can alter what it syncs",
                source.name,
            )
    http = config.http
    throttle = Throttle(http.concurrency, http.per_host_rate, http.host_concurrency)
    with tempfile.TemporaryDirectory(prefix="mirrorsync-") as tmp:
        workdir = Path(tmp)
        store = await _open_store(config, workdir, dry_run)
        try:
            # Webhooks: deliver what is due, sync (which fills the outbox), deliver that.
            outbox = None if dry_run else await Outbox.open(config, store)
            if outbox:
                report.webhooks = await outbox.deliver()
            async with AsyncExitStack() as stack:
                # One client per TLS setting, sharing the throttle and the running tally.
                run = _Run(store, report, progress)
                for insecure in sorted({s.insecure for s in sources}):
                    client = HttpClient(
                        http, verify=not insecure, throttle=throttle, stats=progress.http
                    )
                    await stack.enter_async_context(client)
                    run.fetchers[insecure] = IndexFetcher(
                        client, store, workdir, config.limits, progress=progress
                    )
                    if not dry_run and _crawls(sources):  # a dry run crawls nothing
                        from mirrorsync.sync.manifests import ManifestCrawler

                        run.crawlers[insecure] = ManifestCrawler(
                            client, store, workdir, workers=http.host_concurrency, progress=progress
                        )
                run.sources = {s.name: s for s in sources if not isinstance(s, PagesSource)}
                async with anyio.create_task_group() as tg:
                    for source in sources:
                        tg.start_soon(run.source, source)
            report.tally.add(progress.http)
            if outbox:
                report.webhooks = merge_results(report.webhooks, await outbox.deliver())
        finally:
            await store.close()
    report.finished_at = utcnow()
    report.seconds = time.monotonic() - started
    _log_run(report)
    return report


_STATUSES = ("changed", "unchanged", "removed", "failed")


def _crawls(sources: Sequence[Source]) -> bool:
    return any(not isinstance(s, PagesSource) and s.manifests != "none" for s in sources)


def _log_run(report: RunReport) -> None:
    counts = {s: sum(1 for o in report.stacks if o.status == s) for s in _STATUSES}
    log.info(
        "run finished%s: %d stacks (%s), %d failures, %d events, %d requests, %d bytes, %.2fs",
        " (dry run, nothing kept)" if report.dry_run else "",
        len(report.stacks),
        ", ".join(f"{n} {s}" for s, n in counts.items()),
        len(report.failures),
        report.events,
        report.tally.requests,
        report.tally.bytes,
        report.seconds,
        extra=fields(
            event="run",
            dry_run=report.dry_run,
            stacks=len(report.stacks),
            **counts,
            failures=len(report.failures),
            events=report.events,
            requests=report.tally.requests,
            bytes=report.tally.bytes,
            retries=report.tally.retries,
            seconds=round(report.seconds, 3),
        ),
    )


async def _open_store(config: Config, workdir: Path, dry_run: bool) -> Store:
    store = await Store.open(config.database_path)
    if not dry_run:
        return store
    try:
        copy = workdir / "dry-run.db"
        await store.copy_to(copy)
    finally:
        await store.close()
    return await Store.open(copy)


def _difference(
    row: writes.StackRow,
    index: Index,
    checksum: str,
    location: writes.StackLocation,
    old: set[str],
) -> writes.Snapshot:
    """What the new index adds to and removes from the stack's current members."""
    new = index.nodes.keys()
    return writes.Snapshot(
        stack_id=row.id,
        location=location,
        index_checksum=checksum,
        added=list(index.infos(sorted(new - old))),
        removed=sorted(old - new),
        announce=not row.present,
        uncached=frozenset(index.uncached),
    )


class _Run:
    def __init__(self, store: Store, report: RunReport, progress: RunProgress) -> None:
        self.store = store
        self.report = report
        self.progress = progress
        self.fetchers: dict[bool, IndexFetcher] = {}  # by the source's ``insecure``
        self.crawlers: dict[bool, ManifestCrawler] = {}  # none in a dry run
        self.index_slots = anyio.CapacityLimiter(INDEX_WORKERS)
        self.host_slots: dict[str, anyio.CapacityLimiter] = {}
        self.sources: dict[str, CatalogSource | MirrorSource] = {}  # those with manifests

    async def source(self, source: Source) -> None:
        fetcher = self.fetchers[source.insecure]
        try:
            if isinstance(source, PagesSource):
                from mirrorsync.sync.pages import PagesSync

                source_id = await writes.ensure_source(
                    self.store, source.name, source.kind, source.urls[0]
                )
                await PagesSync(self.store, fetcher, self.report).run(source, source_id)
                return
            source_id = await writes.ensure_source(self.store, source.name, source.kind, source.url)
            if isinstance(source, CatalogSource):
                await self.catalog(fetcher, source, source_id)
            else:
                await self.mirror(fetcher, source, source_id)
        except MirrorsyncError as exc:
            log.error("source %s failed: %s", source.name, exc)
            self.report.source_errors.append((source.name, str(exc)))

    async def mirror(self, fetcher: IndexFetcher, source: MirrorSource, source_id: int) -> None:
        target = Target(mirror_root=source.url.rstrip("/"), layout=None)
        self.progress.stacks_total += 1
        await self.stack(fetcher, source.name, source_id, source.release, source.stack, target)

    async def catalog(self, fetcher: IndexFetcher, source: CatalogSource, source_id: int) -> None:
        entries = await fetcher.small_document(
            source.url, Tally(), "catalog", lambda body: parse_catalog(body, source.url)
        )
        listed = {e.release for e in entries}
        wanted = [e for e in entries if source.wants(e.release, e.stack)]
        known = await writes.known_releases(self.store, source_id)
        at = utcnow()
        new_releases = sorted({r for r in listed if source.wants(r)} - known)
        gone_releases = sorted(known - listed)
        self.report.release_events += await writes.record_releases(
            self.store, source_id, new_releases, [], at
        )
        present = {(e.release, e.stack) for e in entries}
        gone = [
            row
            for row in await writes.stacks_of(self.store, source_id)
            if row.present and (row.release, row.name) not in present
        ]
        self.progress.stacks_total += len(wanted) + len(gone)
        async with anyio.create_task_group() as tg:
            for entry in wanted:
                tg.start_soon(self.catalog_stack, fetcher, source, source_id, entry)
            for row in gone:
                tg.start_soon(self.retire, source.name, row)
        self.report.release_events += await writes.record_releases(
            self.store, source_id, [], gone_releases, utcnow()
        )

    async def catalog_stack(
        self, fetcher: IndexFetcher, source: CatalogSource, source_id: int, entry: CatalogStack
    ) -> None:
        try:
            location = locate_index(entry.url, source.buckets())
        except MirrorsyncError as exc:
            if isinstance(exc, FormatError) and exc.url is None:
                exc = exc.at(source.url)
            row = await writes.ensure_stack(self.store, source_id, entry.release, entry.stack)
            await self._failed(source.name, row, str(exc), time.monotonic(), Tally())
            return
        target = Target(location.mirror_root, location.layout, location.index_checksum)
        await self.stack(fetcher, source.name, source_id, entry.release, entry.stack, target)

    def _host_slot(self, url: str) -> anyio.CapacityLimiter:
        key = origin(url)
        slot = self.host_slots.get(key)
        if slot is None:
            slot = self.host_slots[key] = anyio.CapacityLimiter(HOST_INDEX_WORKERS)
        return slot

    async def stack(
        self,
        fetcher: IndexFetcher,
        source_name: str,
        source_id: int,
        release: str,
        stack: str,
        target: Target,
    ) -> None:
        """Sync the stack's index, then crawl its spec manifests (outside the index slots)."""
        synced = await self._sync_index(fetcher, source_name, source_id, release, stack, target)
        if synced is not None:
            stack_id, location, outcome = synced
            # The crawl needs the real root: the stored location has credentials masked.
            crawler = self.crawlers.get(not fetcher.client.verify)
            await self._crawl(crawler, source_name, stack_id, target.mirror_root, location, outcome)
            log_outcome(synced[2])  # once, with the crawl's requests and bytes included

    async def _crawl(
        self,
        crawler: ManifestCrawler | None,
        source_name: str,
        stack_id: int,
        mirror_root: str,
        location: writes.StackLocation,
        o: StackOutcome,
    ) -> None:
        source = self.sources.get(source_name)
        if crawler is None or source is None or source.manifests == "none":
            return
        from mirrorsync.store.manifests import StackTarget

        target = StackTarget(
            stack_id, source_name, o.release, o.stack, mirror_root, location.layout, 0
        )
        started, tally = time.monotonic(), Tally()
        try:
            o.manifests = await crawler.crawl(
                target, source.manifests, verify_signatures=source.verify_signatures, tally=tally
            )
        except MirrorsyncError as exc:  # e.g. the database: this stack only, not its siblings
            log.error("%s: spec manifest crawl failed: %s", o.label, exc)
            o.manifests = ManifestTally(failure=f"spec manifest crawl failed: {exc}")
        o.tally.add(tally)
        o.seconds += time.monotonic() - started

    async def _sync_index(
        self,
        fetcher: IndexFetcher,
        source_name: str,
        source_id: int,
        release: str,
        stack: str,
        target: Target,
    ) -> tuple[int, writes.StackLocation, StackOutcome] | None:
        """Fetch, diff and commit the stack's index; None if that failed."""
        row = await writes.ensure_stack(self.store, source_id, release, stack)
        started = time.monotonic()
        tally = Tally()
        name = f"{source_name}:{release}/{stack}"
        previous = row.index_checksum if row.present else None
        try:
            # Download under this host's slots, then decode and commit under the
            # global ones: a slow host only ever waits on itself.
            async with self._host_slot(target.mirror_root):
                fetched = await fetcher.fetch(target, previous, tally, name)
                location = writes.StackLocation(
                    redact_url(fetched.index_url), redact_url(target.mirror_root), fetched.layout
                )
                if fetched.path is None:
                    snapshot = writes.Snapshot(row.id, location, fetched.checksum, (), ())
                    await writes.record_unchanged(self.store, snapshot, utcnow())
                    unchanged = self._done(
                        source_name, row, "unchanged", row.version, row.spec_count, started, tally
                    )
                    return row.id, location, unchanged
                async with self.index_slots:
                    # A resync stores only the new specs: decode only those.
                    lazy = row.present and row.spec_count > 0
                    index = await parse_downloaded(fetched.path, fetched.index_url, lazy=lazy)
                    old = await writes.current_hashes(self.store, row.id)
                    # Decodes the new specs' nodes: off the event loop, as a stack
                    # replaced wholesale has 100,000 of them (~0.85 s).
                    snapshot = await anyio.to_thread.run_sync(
                        _difference, row, index, fetched.checksum, location, old
                    )
                    spec_count = len(old) + len(snapshot.added) - len(snapshot.removed)
                    del index, old  # frees the index and its raw bytes before the commit
                    committed = await writes.commit_snapshot(self.store, snapshot, utcnow())
        except MirrorsyncError as exc:
            await self._failed(source_name, row, str(exc), started, tally)
            return None
        outcome = self._done(
            source_name,
            row,
            "changed" if committed.events else "unchanged",
            committed.version,
            spec_count,
            started,
            tally,
        )
        outcome.added, outcome.removed, outcome.events = (
            committed.added,
            committed.removed,
            committed.events,
        )
        return row.id, location, outcome

    async def retire(self, source_name: str, row: writes.StackRow) -> None:
        """The catalogue no longer lists this stack: close its memberships."""
        started = time.monotonic()
        committed = await writes.retire_stack(self.store, row.id, utcnow())
        outcome = self._done(source_name, row, "removed", committed.version, 0, started, Tally())
        outcome.removed, outcome.events = committed.removed, committed.events
        log_outcome(outcome)

    def _done(
        self,
        source_name: str,
        row: writes.StackRow,
        status: Status,
        version: int,
        spec_count: int,
        started: float,
        tally: Tally,
    ) -> StackOutcome:
        outcome = self.report.add_stack(
            source_name, row, status, version, spec_count, started, tally
        )
        self.progress.stacks_done += 1
        self.progress.stacks_failed += status == "failed"
        return outcome

    async def _failed(
        self, source_name: str, row: writes.StackRow, error: str, started: float, tally: Tally
    ) -> None:
        with anyio.CancelScope(shield=True):
            await writes.record_failure(self.store, row.id, error, utcnow())
        outcome = self._done(
            source_name, row, "failed", row.version, row.spec_count, started, tally
        )
        outcome.error = error
        log_outcome(outcome)
