"""One sync of every configured source, as its phases: open what the run shares
(``sync.context``), deliver what is due, sync each source (``sync.source``) and its
stacks (``sync.stack``), update the local copies, deliver again; then the run's line
and its metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio

from mirrorsync import memory, metrics
from mirrorsync.config import Config, Source, require_sources
from mirrorsync.errors import MetricsError
from mirrorsync.logs import fields
from mirrorsync.store import utcnow
from mirrorsync.sync.context import RunContext
from mirrorsync.sync.outcome import DRY_RUN_WORDS
from mirrorsync.sync.progress import RunProgress
from mirrorsync.sync.report import RunReport
from mirrorsync.sync.source import sync_source
from mirrorsync.sync.trust import log_key_trust
from mirrorsync.units import Verbatim, human_duration, human_size, plural

log = logging.getLogger("mirrorsync.sync")


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
