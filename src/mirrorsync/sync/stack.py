"""A stack's part of a run, its one boundary: claim it, fetch, diff and commit its
index (or retire it), then crawl its spec manifests; whatever goes wrong fails this
stack only (``last_error`` recorded, its version kept)."""

from __future__ import annotations

import logging
import time

import anyio

from mirrorsync import memory
from mirrorsync.errors import FormatError, StoreError
from mirrorsync.fetch import Tally
from mirrorsync.formats.index import Index, paused_gc
from mirrorsync.store import utcnow, writes
from mirrorsync.sync.boundary import as_error
from mirrorsync.sync.context import RunContext
from mirrorsync.sync.index import parse_downloaded
from mirrorsync.sync.job import StackJob
from mirrorsync.sync.outcome import ManifestTally, StackOutcome, log_outcome
from mirrorsync.units import Verbatim

log = logging.getLogger("mirrorsync.sync")


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
        error = as_error(exc)
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
    error = str(as_error(exc))
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
