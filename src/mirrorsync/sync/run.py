"""One sync of every configured source: catalogue, stacks, snapshots, events."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx

from mirrorsync import memory, metrics
from mirrorsync.config import (
    CatalogSource,
    Config,
    MirrorSource,
    PagesSource,
    Source,
    require_sources,
)
from mirrorsync.delivery import Outbox
from mirrorsync.delivery.outbox import merge_results
from mirrorsync.errors import FormatError, MetricsError, MirrorsyncError, ScratchError, StoreError
from mirrorsync.fetch import HttpClient, Tally, Throttle, Url, origin
from mirrorsync.formats.catalog import locate_index, parse_catalog_document
from mirrorsync.formats.index import Index, paused_gc
from mirrorsync.logs import fields
from mirrorsync.mirrors.run import MirrorOutcome, run_mirrors
from mirrorsync.store import Store, claims, utcnow, writes
from mirrorsync.sync.index import IndexFetcher, Target, parse_downloaded
from mirrorsync.sync.outcome import (
    DRY_RUN_WORDS,
    ManifestTally,
    StackOutcome,
    Status,
    log_outcome,
)
from mirrorsync.sync.progress import RunProgress
from mirrorsync.sync.report import RunReport
from mirrorsync.sync.trust import log_key_trust
from mirrorsync.units import Verbatim, human_duration, human_size, plural

if TYPE_CHECKING:  # the crawler and the pages source are imported when a run uses them
    from mirrorsync.sync.manifests import ManifestCrawler

log = logging.getLogger("mirrorsync.sync")

#: Indexes decoded and committed at once. Each can be ~150 MB of JSON; this bounds memory.
#: One: a run's peak is then one stack's (1.14x a lone stack's for 4 stacks of 30,000
#: specs; 1.65x with two), whatever the number of stacks and releases. Downloads
#: still overlap it (``HOST_INDEX_WORKERS``), and the work is CPU-bound under one GIL.
INDEX_WORKERS = 1
#: Stacks per host fetching their index at once (each holds one index on disk until parsed).
#: Per host, so stacks waiting on a slow or dead host never hold up the others.
HOST_INDEX_WORKERS = 2


async def run_once(
    config: Config,
    *,
    only_source: str | None = None,
    dry_run: bool = False,
    progress: RunProgress | None = None,
    stop: anyio.Event | None = None,
) -> RunReport:
    """Sync every source (or one); a failing stack never stops the others.

    With ``dry_run`` every write goes into one database transaction that is
    rolled back, so the report shows what would change and nothing is kept.
    ``progress``, if given, is kept up to date while the run goes on. Setting
    ``stop`` (a signal) ends the run where it is: what is committed stays, the
    stacks in flight roll back, and the report says it was interrupted.
    """
    require_sources(config)  # a receiving site (bundle import only) has none: say so
    sources = [config.source(only_source)] if only_source else list(config.sources)
    memory.tune()  # freed indexes go back to the system: a run's peak is one stack's
    report = RunReport(started_at=utcnow(), dry_run=dry_run)
    started = time.monotonic()
    _warn_insecure(sources)
    log_key_trust(sources)
    async with RunContext.open(config, sources, report, progress) as ctx, _stoppable(stop, ctx):
        await ctx.deliver_webhooks()  # what earlier runs left due
        async with anyio.create_task_group() as tg:
            for source in sources:  # plan its stacks, then sync each of them
                tg.start_soon(sync_source, ctx, source)
        if not report.interrupted and report.fatal is None:
            report.mirrors = await ctx.update_mirrors(only_source)  # the local copies
            await ctx.deliver_webhooks()  # what this run recorded
    report.tally.add(ctx.progress.http)
    report.finished_at = utcnow()
    report.seconds = time.monotonic() - started
    _log_run(report)
    await _export_metrics(config, report)
    return report


@dataclass(frozen=True, slots=True)
class StackJob:
    """One stack to sync or retire, with the settings of its source."""

    source: CatalogSource | MirrorSource  # manifests, verify_signatures, insecure, buckets
    source_id: int
    release: str
    stack: str
    catalog_url: str | None = None  # where the catalogue says its index is (catalog sources)
    retire: bool = False  # the catalogue no longer lists it

    @property
    def label(self) -> str:
        return f"{self.source.name}:{self.release}/{self.stack}"

    def target(self) -> Target:
        """Where to look for the index; FormatError (naming the catalogue) if nowhere sane."""
        if self.catalog_url is None:
            assert isinstance(self.source, MirrorSource)
            return Target(
                mirror_root=Url(self.source.url).rstrip("/"), layout=None, view=self.source.view
            )
        assert isinstance(self.source, CatalogSource)
        try:
            location = locate_index(self.catalog_url, self.source.buckets())
        except FormatError as exc:
            raise exc.at(self.source.url) if exc.url is None else exc from None
        return Target(Url(location.mirror_root), location.layout, location.index_checksum)


@dataclass
class RunContext:
    """Everything a run's stacks share, built once, complete, before the first starts."""

    config: Config
    store: Store
    report: RunReport
    progress: RunProgress
    fetchers: dict[bool, IndexFetcher]  # by the source's ``insecure``
    crawlers: dict[bool, ManifestCrawler]  # none in a dry run, or when nothing crawls
    outbox: Outbox | None  # None in a dry run
    workdir: Path  # the run's scratch directory
    throttle: Throttle  # shared by every client of the run, the copies' too
    index_slots: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(INDEX_WORKERS)
    )
    host_slots: dict[str, anyio.CapacityLimiter] = field(default_factory=dict)
    cancel: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    #: (source id, release, stack) -> its last_checked as the run planned the source
    marks: dict[tuple[int, str, str], str | None] = field(default_factory=dict)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: Config,
        sources: Sequence[Source],
        report: RunReport,
        progress: RunProgress | None,
    ) -> AsyncIterator[RunContext]:
        """Scratch directory, database, HTTP clients (one per TLS setting, sharing one
        throttle and tally), crawlers and outbox; all closed and removed on the way out."""
        http = config.http
        throttle = Throttle(http.concurrency, http.per_host_rate, http.host_concurrency)
        progress = progress if progress is not None else RunProgress()
        with _scratch_directory() as workdir:
            async with AsyncExitStack() as stack:
                store = await Store.open(config.database_path, dry_run=report.dry_run)
                stack.push_async_callback(store.close)
                fetchers: dict[bool, IndexFetcher] = {}
                crawlers: dict[bool, ManifestCrawler] = {}
                for insecure in sorted({s.insecure for s in sources}):
                    client = HttpClient(
                        http, verify=not insecure, throttle=throttle, stats=progress.http
                    )
                    await stack.enter_async_context(client)
                    fetchers[insecure] = IndexFetcher(
                        client,
                        store,
                        workdir,
                        config.limits,
                        progress=progress,
                        revalidate_after=http.revalidate_after_seconds,
                    )
                    if not report.dry_run and _crawls(sources):  # a dry run crawls nothing
                        from mirrorsync.sync.manifests import ManifestCrawler

                        crawlers[insecure] = ManifestCrawler(
                            client, store, workdir, workers=http.host_concurrency, progress=progress
                        )
                outbox = None if report.dry_run else await Outbox.open(config, store)
                yield cls(
                    config, store, report, progress, fetchers, crawlers, outbox, workdir, throttle
                )

    async def update_mirrors(self, only_source: str | None) -> list[MirrorOutcome]:
        """The local copies, brought up to the state just synced (same throttle and tally)."""
        if not self.config.mirrors:
            return []
        return await run_mirrors(
            self.config,
            self.store,
            self.workdir,
            only_source=only_source,
            dry_run=self.report.dry_run,
            throttle=self.throttle,
            stats=self.progress.http,
            progress=self.progress.copies,
        )

    async def deliver_webhooks(self) -> None:
        if self.outbox is not None:
            delivered = await self.outbox.deliver(progress=self.progress.webhooks)
            self.report.webhooks = merge_results(self.report.webhooks, delivered)

    def host_slot(self, url: str) -> anyio.CapacityLimiter:
        """Stacks per host fetching their index at once: a slow host only waits on itself."""
        key = origin(url)
        slot = self.host_slots.get(key)
        if slot is None:
            slot = self.host_slots[key] = anyio.CapacityLimiter(HOST_INDEX_WORKERS)
        return slot

    def end_run(self, exc: StoreError) -> None:
        """An error no stack can get past (the database's disk is full): stop them all."""
        if self.report.fatal is None:
            log.error("%s", exc)
            self.report.fatal = str(exc)
            self.report.fatal_exit = exc.exit_code
        self.cancel.cancel()

    def outcome(
        self,
        job: StackJob,
        status: Status,
        version: int,
        spec_count: int,
        started: float,
        tally: Tally,
    ) -> StackOutcome:
        outcome = self.report.add_stack(
            job.source.name, job.release, job.stack, status, version, spec_count, started, tally
        )
        self.progress.indexes.advance()
        self.progress.stacks_failed += status == "failed"
        return outcome


@asynccontextmanager
async def _stoppable(stop: anyio.Event | None, ctx: RunContext) -> AsyncIterator[None]:
    """Run the body until it ends, ``stop`` is set, or a stack ends the run."""
    with ctx.cancel:
        async with anyio.create_task_group() as tg:
            if stop is not None:

                async def watch() -> None:
                    await stop.wait()
                    ctx.report.interrupted = True
                    ctx.cancel.cancel()

                tg.start_soon(watch)
            yield
            tg.cancel_scope.cancel()


@contextmanager
def _scratch_directory() -> Iterator[Path]:
    try:
        tmp = tempfile.TemporaryDirectory(prefix="mirrorsync-")
    except OSError as exc:
        where = tempfile.gettempdir()
        raise ScratchError(
            f"{where}: cannot make a scratch directory: {exc.strerror or exc}; "
            "free space there or set TMPDIR to another directory"
        ) from None
    with tmp as name:
        yield Path(name)


def _warn_insecure(sources: Sequence[Source]) -> None:
    for source in sources:
        if source.insecure:  # on every run, so it is never forgotten
            log.warning(
                "source %s: TLS certificate verification is OFF (insecure: true); "
                "anyone on the network path can alter what it syncs",
                Verbatim(source.name),
            )


async def _export_metrics(config: Config, report: RunReport) -> None:
    try:
        with anyio.CancelScope(shield=True):  # an interrupted run gets its metrics too
            await metrics.export(config, report)
    except MetricsError as exc:
        report.metrics_error = str(exc)


_STATUSES = ("changed", "unchanged", "removed", "failed", "skipped")


def _crawls(sources: Sequence[Source]) -> bool:
    return any(not isinstance(s, PagesSource) and s.manifests != "none" for s in sources)


def _log_run(report: RunReport) -> None:
    counts = {s: sum(1 for o in report.stacks if o.status == s) for s in _STATUSES}
    log.log(
        logging.WARNING if report.interrupted else logging.INFO,
        "run %s%s: %s (%s), %s, %s, %s, %s, %s",
        "interrupted (what it committed is kept)" if report.interrupted else "finished",
        " (dry run, nothing kept)" if report.dry_run else "",
        plural(len(report.stacks), "stack"),
        ", ".join(
            f"{n} {DRY_RUN_WORDS.get(s, s) if report.dry_run else s}" for s, n in counts.items()
        ),
        plural(len(report.failures), "failure"),
        plural(report.events, "event"),
        plural(report.tally.requests, "request"),
        human_size(report.tally.bytes),
        human_duration(report.seconds),
        extra=fields(
            event="run",
            dry_run=report.dry_run,
            interrupted=report.interrupted,
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


def _difference(
    row: writes.StackRow,
    index: Index,
    checksum: str,
    location: writes.StackLocation,
    old: set[str],
    entering: list[str],
    stored: set[str],
) -> writes.Snapshot:
    """What the new index adds to and removes from the stack's current members.

    Of the ``entering`` hashes, those the database holds already (``stored``, by
    another stack or earlier) are taken by name and version only; only the
    others are decoded in full, with the cyclic GC paused (none of it is cyclic).
    """
    with paused_gc():
        added = [index.named(h) if h in stored else index.info(h) for h in entering]
    return writes.Snapshot(
        stack_id=row.id,
        location=location,
        index_checksum=checksum,
        added=added,
        removed=sorted(old - index.nodes.keys()),
        announce=not row.present,
        uncached=frozenset(index.uncached),
        base_version=row.version,
    )


# -- a source: plan its stacks, sync them ------------------------------------------


async def sync_source(ctx: RunContext, source: Source) -> None:
    """Plan the source's stacks (its catalogue), sync each, then record gone releases.

    A failure to plan (the catalogue) fails the source, and is recorded as the
    ``last_error`` of each of its stacks, none of which could be checked; each
    stack's own failure stays with that stack (:func:`sync_stack`).
    """
    source_id: int | None = None  # known, and its stacks not yet planned: they fail with it
    try:
        if isinstance(source, PagesSource):
            from mirrorsync.sync.pages import PagesSync

            source_id = await writes.ensure_source(
                ctx.store, source.name, source.kind, source.urls[0]
            )
            await PagesSync(ctx.store, ctx.fetchers[source.insecure], ctx.report).run(
                source, source_id
            )
            return
        source_id = await writes.ensure_source(ctx.store, source.name, source.kind, source.url)
        for (release, stack), checked in (await claims.checked_marks(ctx.store, source_id)).items():
            ctx.marks[source_id, release, stack] = checked
        if isinstance(source, CatalogSource):
            jobs, gone_releases = await _plan_catalog(ctx, source, source_id)
        else:
            jobs, gone_releases = [StackJob(source, source_id, source.release, source.stack)], []
        planned, source_id = source_id, None
        ctx.progress.indexes.add_work(len(jobs))
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(sync_stack, ctx, job)
        if gone_releases:
            ctx.report.release_events += await writes.record_releases(
                ctx.store, planned, [], gone_releases, utcnow()
            )
    except StoreError as exc:
        if exc.ends_run:
            ctx.end_run(exc)
            return
        await _source_failed(ctx, source, source_id, exc)
    except Exception as exc:  # the boundary of a source: nothing gets past it
        await _source_failed(ctx, source, source_id, exc)


async def _source_failed(
    ctx: RunContext, source: Source, source_id: int | None, exc: Exception
) -> None:
    """One line; and, when its stacks could not be planned, their ``last_error``, so
    that ``status`` (and ``status --check``) shows them failed rather than fine."""
    error = _as_error(exc)
    log.error("source %s failed: %s", Verbatim(source.name), error)
    log.debug("source %s failed", Verbatim(source.name), exc_info=exc)
    ctx.report.source_errors.append((source.name, str(error)))
    if source_id is None:
        return
    try:
        with anyio.CancelScope(shield=True):
            for row in await writes.stacks_of(ctx.store, source_id):
                if row.present:
                    await writes.record_failure(
                        ctx.store, row.id, f"source {source.name}: {error}", utcnow()
                    )
    except StoreError as store_exc:
        if store_exc.ends_run:
            ctx.end_run(store_exc)
            return
        log.error("source %s: cannot record its failure: %s", Verbatim(source.name), store_exc)


async def _plan_catalog(
    ctx: RunContext, source: CatalogSource, source_id: int
) -> tuple[list[StackJob], list[str]]:
    """The stacks to sync and to retire, and the releases gone; new releases recorded."""
    fetcher = ctx.fetchers[source.insecure]
    url = Url(source.url)
    catalog = await fetcher.small_document(
        url, Tally(), "catalog", lambda body: parse_catalog_document(body, url.display)
    )
    entries = catalog.stacks
    for extra in catalog.repeated:
        log.warning(
            "source %s: %s lists stack %s of release %s again (%s); the first entry is used",
            Verbatim(source.name),
            Verbatim(url.display),
            Verbatim(repr(extra.stack)),
            Verbatim(repr(extra.release)),
            Verbatim(Url(extra.url).display),
        )
    listed = {e.release for e in entries}
    wanted = [e for e in entries if source.wants(e.release, e.stack)]
    known = await writes.known_releases(ctx.store, source_id)
    new_releases = sorted({r for r in listed if source.wants(r)} - known)
    ctx.report.release_events += await writes.record_releases(
        ctx.store, source_id, new_releases, [], utcnow()
    )
    present = {(e.release, e.stack) for e in entries}
    jobs = [StackJob(source, source_id, e.release, e.stack, e.url) for e in wanted]
    jobs += [
        StackJob(source, source_id, row.release, row.name, retire=True)
        for row in await writes.stacks_of(ctx.store, source_id)
        if row.present and (row.release, row.name) not in present
    ]
    return jobs, sorted(known - listed)


# -- a stack: the one boundary -------------------------------------------------------


async def sync_stack(ctx: RunContext, job: StackJob) -> None:
    """Claim one stack, then sync its index and crawl its spec manifests; or retire it.

    A stack another instance holds, or synced while this run went on, is
    skipped: reported as such, not a failure (:func:`writes.claim_stack`). Whatever
    goes wrong fails this stack only: one line at ERROR naming it, the traceback
    at DEBUG, ``last_error`` recorded, its version kept. Only an error no stack
    can get past (the database's disk is full) ends the run.
    """
    started, tally = time.monotonic(), Tally()
    mark = ctx.marks.get((job.source_id, job.release, job.stack))
    turn = _host_turn(ctx, job)
    try:
        # Claimed only once its host has a slot for it: an instance holds the
        # stacks it works on, and leaves the others to the instances beside it.
        if turn is not None:
            await turn.take()
        async with writes.claim_stack(
            ctx.store, job.source_id, job.release, job.stack, mark=mark
        ) as held:
            if held.row is None:
                outcome = ctx.outcome(job, "skipped", 0, 0, started, tally)
                outcome.skipped = held.skipped
                log_outcome(outcome)
                return
            await _sync_claimed(ctx, job, held.row, started, tally, turn)
    except StoreError as exc:  # claiming it
        if exc.ends_run:
            ctx.end_run(exc)
            return
        await _failed(ctx, job, None, exc, started, tally)
    except Exception as exc:  # the boundary of a stack: nothing gets past it
        await _failed(ctx, job, None, exc, started, tally)
    finally:
        if turn is not None:
            turn.release()


class HostTurn:
    """A stack's slot on its index's host, taken before its claim and given back
    once its index is committed (the crawl that follows needs none)."""

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self.limiter = limiter
        self.held = False

    async def take(self) -> None:
        if not self.held:
            await self.limiter.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.limiter.release()

    async def __aenter__(self) -> HostTurn:
        await self.take()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


def _host_turn(ctx: RunContext, job: StackJob) -> HostTurn | None:
    if job.retire:
        return None
    try:
        return HostTurn(ctx.host_slot(job.target().mirror_root.address))
    except FormatError:  # _sync_index meets it again, as this stack's failure
        return None


async def _sync_claimed(
    ctx: RunContext,
    job: StackJob,
    row: writes.StackRow,
    started: float,
    tally: Tally,
    turn: HostTurn | None,
) -> None:
    """Sync (or retire) a stack this run holds; every failure stays with the stack."""
    try:
        if job.retire:
            outcome = await _retire(ctx, job, row, started)
        else:
            location, outcome = await _sync_index(ctx, job, row, started, tally, turn)
            memory.give_back()  # the index and its decoded nodes, freed by now
    except StoreError as exc:
        if exc.ends_run:
            ctx.end_run(exc)
            return
        await _failed(ctx, job, row, exc, started, tally)
        return
    except Exception as exc:  # the boundary of a stack: nothing gets past it
        await _failed(ctx, job, row, exc, started, tally)
        return
    if not job.retire:
        await _crawl(ctx, job, row.id, location, outcome)
    log_outcome(outcome)  # once, with the crawl's requests and bytes included


async def _sync_index(
    ctx: RunContext,
    job: StackJob,
    row: writes.StackRow,
    started: float,
    tally: Tally,
    turn: HostTurn | None,
) -> tuple[writes.StackLocation, StackOutcome]:
    """Fetch, diff and commit the stack's index."""
    target = job.target()
    fetcher = ctx.fetchers[job.source.insecure]
    previous = row.index_checksum if row.present else None
    # Download under this host's slots, then decode and commit under the
    # global ones: a slow host only ever waits on itself.
    async with turn or HostTurn(ctx.host_slot(target.mirror_root.address)):
        fetched = await fetcher.fetch(target, previous, tally, job.label)
        location = writes.StackLocation(
            fetched.index_url.display, target.mirror_root.display, fetched.layout
        )
        if fetched.path is None:
            snapshot = writes.Snapshot(row.id, location, fetched.checksum, (), ())
            await writes.record_unchanged(ctx.store, snapshot, utcnow())
            unchanged = ctx.outcome(job, "unchanged", row.version, row.spec_count, started, tally)
            return location, unchanged
        async with ctx.index_slots:
            # Nodes stay raw JSON: only the specs new to the database are decoded.
            index = await parse_downloaded(
                fetched.path,
                fetched.index_url,
                lazy=True,
                compression=fetched.compression,
                max_bytes=fetcher.limits.cap("index"),
            )
            old = await writes.current_hashes(ctx.store, row.id)
            entering = sorted(index.nodes.keys() - old)
            stored = await writes.stored_hashes(ctx.store, entering)
            # Decodes the new specs' nodes: off the event loop, as a first sync
            # of a stack has up to 100,000 of them.
            snapshot = await anyio.to_thread.run_sync(
                _difference, row, index, fetched.checksum, location, old, entering, stored
            )
            spec_count = len(old) + len(snapshot.added) - len(snapshot.removed)
            del index, old  # frees the index and its raw bytes before the commit
            committed = await writes.commit_snapshot(ctx.store, snapshot, utcnow())
            await fetcher.committed(fetched)
    outcome = ctx.outcome(
        job,
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
    if ctx.report.dry_run:  # what would change, hash by hash (once --dry-run -v / --json)
        outcome.added_hashes = [info.hash for info in snapshot.added]
        outcome.removed_hashes = list(snapshot.removed)
    return location, outcome


async def _retire(
    ctx: RunContext, job: StackJob, row: writes.StackRow, started: float
) -> StackOutcome:
    """The catalogue no longer lists this stack: close its memberships."""
    committed = await writes.retire_stack(ctx.store, row.id, utcnow(), base_version=row.version)
    outcome = ctx.outcome(job, "removed", committed.version, 0, started, Tally())
    outcome.removed, outcome.events = committed.removed, committed.events
    return outcome


async def _crawl(
    ctx: RunContext,
    job: StackJob,
    stack_id: int,
    location: writes.StackLocation,
    o: StackOutcome,
) -> None:
    """Crawl the spec manifests of a synced stack; a failure is the crawl's, not the index's."""
    crawler = ctx.crawlers.get(job.source.insecure)
    if crawler is None or job.source.manifests == "none":
        return
    from mirrorsync.store.manifests import StackTarget

    # The crawl needs the real root: the stored location has credentials masked.
    root = job.target().mirror_root
    target = StackTarget(
        stack_id, job.source.name, o.release, o.stack, root.display, location.layout, 0
    )
    started, tally = time.monotonic(), Tally()
    try:
        o.manifests = await crawler.crawl(
            target,
            root,
            job.source.manifests,
            verify_signatures=job.source.verify_signatures,
            tally=tally,
            trusted_keys=job.source.trusted_keys,
        )
    except Exception as exc:  # e.g. the database: this stack only, not its siblings
        if isinstance(exc, StoreError) and exc.ends_run:
            ctx.end_run(exc)
        error = _as_error(exc)
        log.error("%s: spec manifest crawl failed: %s", Verbatim(o.label), error)
        log.debug("%s: spec manifest crawl failed", Verbatim(o.label), exc_info=exc)
        o.manifests = ManifestTally(failure=f"spec manifest crawl failed: {error}")
    o.tally.add(tally)
    o.seconds += time.monotonic() - started


async def _failed(
    ctx: RunContext,
    job: StackJob,
    row: writes.StackRow | None,
    exc: Exception,
    started: float,
    tally: Tally,
) -> None:
    """Record the stack's failure: its version stays, ``last_error`` says why."""
    error = str(_as_error(exc))
    log.debug("%s failed", Verbatim(job.label), exc_info=exc)
    if row is not None:
        try:
            with anyio.CancelScope(shield=True):
                await writes.record_failure(ctx.store, row.id, error, utcnow())
        except StoreError as store_exc:
            if store_exc.ends_run:
                ctx.end_run(store_exc)
                return
            log.error("%s: cannot record its failure: %s", Verbatim(job.label), store_exc)
    version, spec_count = (row.version, row.spec_count) if row is not None else (0, 0)
    outcome = ctx.outcome(job, "failed", version, spec_count, started, tally)
    outcome.error = error
    log_outcome(outcome)


def _as_error(exc: BaseException) -> MirrorsyncError:
    """Any exception as mirrorsync's own one-line error (a library's, naming its URL)."""
    if isinstance(exc, MirrorsyncError):
        return exc
    if isinstance(exc, BaseExceptionGroup):  # a task group's: its first real error
        first = next(
            (e for e in exc.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())),
            exc.exceptions[0],
        )
        return _as_error(first)
    where = ""
    if isinstance(exc, httpx.RequestError):
        with contextlib.suppress(RuntimeError):  # no request attached
            where = f"{exc.request.url}: "
    text = str(exc) or "(no message)"
    return MirrorsyncError(f"{where}unexpected {type(exc).__name__}: {text}")
