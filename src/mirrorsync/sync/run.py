"""One sync of every configured source: catalogue, stacks, snapshots, events."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import anyio

from mirrorsync.config import CatalogSource, Config, MirrorSource, Source
from mirrorsync.errors import FormatError, MirrorsyncError
from mirrorsync.fetch import HttpClient, Tally, Throttle, origin
from mirrorsync.formats.catalog import CatalogStack, locate_index, parse_catalog
from mirrorsync.redact import redact_url
from mirrorsync.store import Store, utcnow, writes
from mirrorsync.sync.index import IndexFetcher, Target, parse_downloaded
from mirrorsync.sync.outcome import RunReport, StackOutcome

log = logging.getLogger("mirrorsync.sync")

#: Indexes decoded and committed at once. Each can be ~150 MB of JSON; this bounds memory.
INDEX_WORKERS = 2
#: Stacks per host fetching their index at once (each holds one index on disk until parsed).
#: Per host, so stacks waiting on a slow or dead host never hold up the others.
HOST_INDEX_WORKERS = 2


async def run_once(
    config: Config, *, only_source: str | None = None, dry_run: bool = False
) -> RunReport:
    """Sync every source (or one); a failing stack never stops the others.

    With ``dry_run`` the sync runs against a throwaway copy of the database, so
    the report shows what would change and nothing is kept.
    """
    sources: Sequence[Source] = (
        [config.source(only_source)] if only_source else list(config.sources)
    )
    report = RunReport(started_at=utcnow(), dry_run=dry_run)
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
            async with AsyncExitStack() as stack:
                fetchers: dict[bool, IndexFetcher] = {}
                for insecure in sorted({s.insecure for s in sources}):
                    client = HttpClient(http, verify=not insecure, throttle=throttle)
                    await stack.enter_async_context(client)
                    fetchers[insecure] = IndexFetcher(client, store, workdir, config.limits)
                run = _Run(store, fetchers, report)
                async with anyio.create_task_group() as tg:
                    for source in sources:
                        tg.start_soon(run.source, source)
                for fetcher in fetchers.values():
                    report.tally.add(fetcher.client.stats)
        finally:
            await store.close()
    report.finished_at = utcnow()
    report.seconds = time.monotonic() - started
    return report


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


class _Run:
    def __init__(self, store: Store, fetchers: dict[bool, IndexFetcher], report: RunReport) -> None:
        self.store = store
        self.fetchers = fetchers  # by ``insecure``
        self.report = report
        self.index_slots = anyio.CapacityLimiter(INDEX_WORKERS)
        self.host_slots: dict[str, anyio.CapacityLimiter] = {}

    async def source(self, source: Source) -> None:
        fetcher = self.fetchers[source.insecure]
        try:
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
        await self.stack(fetcher, source.name, source_id, source.release, source.stack, target)

    async def catalog(self, fetcher: IndexFetcher, source: CatalogSource, source_id: int) -> None:
        tally = Tally()
        entries = await fetcher.small_document(
            source.url, tally, "catalog", lambda body: parse_catalog(body, source.url)
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
        async with anyio.create_task_group() as tg:
            for entry in wanted:
                tg.start_soon(self.catalog_stack, fetcher, source, source_id, entry)
            for row in await writes.stacks_of(self.store, source_id):
                if row.present and (row.release, row.name) not in present:
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
                    self._done(
                        source_name, row, "unchanged", row.version, row.spec_count, started, tally
                    )
                    return
                async with self.index_slots:
                    index = await parse_downloaded(fetched.path, fetched.index_url)
                    old = await writes.current_hashes(self.store, row.id)
                    new = index.hashes
                    snapshot = writes.Snapshot(
                        stack_id=row.id,
                        location=location,
                        index_checksum=fetched.checksum,
                        added=list(index.infos(sorted(new - old))),
                        removed=sorted(old - new),
                        announce=not row.present,
                    )
                    del index  # the snapshot holds what is needed; free the rest
                    committed = await writes.commit_snapshot(self.store, snapshot, utcnow())
        except MirrorsyncError as exc:
            await self._failed(source_name, row, str(exc), started, tally)
            return
        outcome = self._done(
            source_name,
            row,
            "changed" if committed.events else "unchanged",
            committed.version,
            len(new),
            started,
            tally,
        )
        outcome.added, outcome.removed, outcome.events = (
            committed.added,
            committed.removed,
            committed.events,
        )
        self._log(outcome)

    async def retire(self, source_name: str, row: writes.StackRow) -> None:
        """The catalogue no longer lists this stack: close its memberships."""
        started = time.monotonic()
        old = await writes.current_hashes(self.store, row.id)
        snapshot = writes.Snapshot(row.id, None, None, (), sorted(old), retire=True)
        committed = await writes.commit_snapshot(self.store, snapshot, utcnow())
        outcome = self._done(source_name, row, "removed", committed.version, 0, started, Tally())
        outcome.removed, outcome.events = committed.removed, committed.events
        self._log(outcome)

    def _done(
        self,
        source_name: str,
        row: writes.StackRow,
        status: str,
        version: int,
        spec_count: int,
        started: float,
        tally: Tally,
    ) -> StackOutcome:
        outcome = StackOutcome(
            source=source_name,
            release=row.release,
            stack=row.name,
            status=status,  # type: ignore[arg-type]
            version=version,
            spec_count=spec_count,
            seconds=time.monotonic() - started,
            tally=tally,
        )
        self.report.stacks.append(outcome)
        if status == "unchanged":
            self._log(outcome)
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
        self._log(outcome)

    @staticmethod
    def _log(o: StackOutcome) -> None:
        figures = (
            f"version {o.version}, {o.spec_count} specs, +{o.added} -{o.removed}, "
            f"{o.tally.requests} requests, {o.tally.bytes} bytes, {o.seconds:.2f}s"
        )
        if o.status == "failed":
            log.error("%s failed: %s (%s)", o.label, o.error, figures)
        else:
            log.info("%s %s: %s", o.label, o.status, figures)
