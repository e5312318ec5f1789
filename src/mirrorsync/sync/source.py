"""A source's part of a run: plan its stacks (its catalogue; new and gone releases
recorded), then sync each of them (``sync.stack``). A failure to plan fails the source
and is recorded on each of its stacks."""

from __future__ import annotations

import logging

import anyio

from mirrorsync.config import CatalogSource, PagesSource, Source
from mirrorsync.errors import StoreError
from mirrorsync.fetch import Tally, Url
from mirrorsync.formats.catalog import parse_catalog_document
from mirrorsync.store import claims, releases, utcnow, writes
from mirrorsync.sync.boundary import as_error
from mirrorsync.sync.context import RunContext
from mirrorsync.sync.job import StackJob
from mirrorsync.sync.stack import sync_stack
from mirrorsync.units import Verbatim

log = logging.getLogger("mirrorsync.sync")


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
            ctx.report.release_events += await releases.record_releases(
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
    error = as_error(exc)
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
    known = await releases.known_releases(ctx.store, source_id)
    new_releases = sorted({r for r in listed if source.wants(r)} - known)
    ctx.report.release_events += await releases.record_releases(
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
