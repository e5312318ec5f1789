"""What a run's stacks share, built once, complete, before the first starts: the
scratch directory, the database, the HTTP clients and their throttle, the crawlers,
the outbox, the slots that bound indexes in flight; closed however the run ends."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mirrorsync.config import Config, PagesSource, Source
from mirrorsync.delivery import Outbox
from mirrorsync.delivery.outbox import merge_results
from mirrorsync.errors import ScratchError, StoreError
from mirrorsync.fetch import HttpClient, Tally, Throttle, origin
from mirrorsync.mirrors.run import MirrorOutcome, run_mirrors
from mirrorsync.store import Store
from mirrorsync.sync.index import IndexFetcher
from mirrorsync.sync.job import StackJob
from mirrorsync.sync.outcome import StackOutcome, Status
from mirrorsync.sync.progress import RunProgress
from mirrorsync.sync.report import RunReport

if TYPE_CHECKING:  # the crawler is imported when a run crawls
    from mirrorsync.sync.crawl import ManifestCrawler

log = logging.getLogger("mirrorsync.sync")

#: Indexes decoded and committed at once. Each can be ~150 MB of JSON; this bounds memory.
#: One: a run's peak is then one stack's (1.14x a lone stack's for 4 stacks of 30,000
#: specs; 1.65x with two), whatever the number of stacks and releases. Downloads
#: still overlap it (``HOST_INDEX_WORKERS``), and the work is CPU-bound under one GIL.
INDEX_WORKERS = 1
#: Stacks per host fetching their index at once (each holds one index on disk until parsed).
#: Per host, so stacks waiting on a slow or dead host never hold up the others.
HOST_INDEX_WORKERS = 2


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
                        from mirrorsync.sync.crawl import ManifestCrawler

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


def _crawls(sources: Sequence[Source]) -> bool:
    return any(not isinstance(s, PagesSource) and s.manifests != "none" for s in sources)
