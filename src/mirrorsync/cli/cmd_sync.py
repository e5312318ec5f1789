"""``once``: one sync under the run lock, with its live display, summary table or JSON."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses

import anyio

from mirrorsync.cli.cmd_mirror import mirror_dict
from mirrorsync.cli.render import (
    console,
    human_duration,
    human_size,
    plural,
    print_json,
    print_table,
    print_webhook_results,
    say,
    verbatim,
)
from mirrorsync.cli.signals import stop_event
from mirrorsync.config import load_config
from mirrorsync.lock import hold_for_sync
from mirrorsync.logs import print_line, stderr_is_terminal
from mirrorsync.sync.progress import RunProgress
from mirrorsync.sync.report import RunReport
from mirrorsync.sync.run import run_once


async def once(args: argparse.Namespace) -> int:
    """One sync under the run lock (metrics included), then what a person or a program wants.

    stdout carries only ``--json``. At a terminal (stderr is a TTY) a live progress
    display runs on stderr and a summary table per stack ends the run; otherwise
    the log lines on stderr (one per stack, one for the run) are the record. A
    signal stops the run where it is; what it committed is kept and reported.
    """
    config = load_config(args.config)
    interactive = stderr_is_terminal()
    progress = RunProgress()
    async with contextlib.AsyncExitStack() as stack:
        # A dry run of a database that does not exist yet runs in memory: no lock file.
        if not args.dry_run or config.database_path.exists():
            await stack.enter_async_context(hold_for_sync(config.database_path, wait=args.wait))
        if interactive:  # rich's progress machinery is imported only for a person to see
            from mirrorsync.cli.progress import live_progress

            stack.enter_context(live_progress(progress, console(stderr=True), enabled=True))
        if not interactive and args.progress_every > 0:  # a journal is never silent long
            from mirrorsync.cli.progress_log import log_progress

            tasks = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tasks.cancel_scope.cancel)  # runs before the group is left
            tasks.start_soon(log_progress, progress, args.progress_every)
        with stop_event() as stop:  # run_once writes the metrics, an interrupted run's too
            report = await run_once(
                config, only_source=args.source, dry_run=args.dry_run, progress=progress, stop=stop
            )
    if args.json:
        print_json(_report_dict(report))
    else:
        if interactive:
            _print_report(report)
        if report.dry_run and args.verbose:
            _print_plan(report)
    for line in report.failure_lines(verbatim):
        print_line(f"mirrorsync: failed: {line}")
    return report.exit_code


def _print_plan(report: RunReport) -> None:
    """``once --dry-run -v``: on stdout, each hash a stack would gain or lose."""
    for o in sorted(report.stacks, key=lambda o: o.label):
        for spec_hash in o.added_hashes or ():
            say(f"{verbatim(o.label)} would add {verbatim(spec_hash)}")
        for spec_hash in o.removed_hashes or ():
            say(f"{verbatim(o.label)} would remove {verbatim(spec_hash)}")


def _report_dict(report: RunReport) -> dict[str, object]:
    return {
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "seconds": round(report.seconds, 3),
        "dry_run": report.dry_run,
        "interrupted": report.interrupted,
        "events": report.events,
        "requests": report.tally.requests,
        "bytes": report.tally.bytes,
        "failures": report.failures,
        "stacks": [
            {
                "source": o.source,
                "release": o.release,
                "stack": o.stack,
                "status": o.status,
                "version": o.version,
                "spec_count": o.spec_count,
                "added": o.added,
                "removed": o.removed,
                "events": o.events,
                "error": o.error,
                "skipped": o.skipped,
                "requests": o.tally.requests,
                "bytes": o.tally.bytes,
                "seconds": round(o.seconds, 3),
                "manifests": dataclasses.asdict(o.manifests) if o.manifests else None,
                **(
                    {"added_hashes": o.added_hashes or [], "removed_hashes": o.removed_hashes or []}
                    if report.dry_run
                    else {}
                ),
            }
            for o in sorted(report.stacks, key=lambda o: o.label)
        ],
        "webhooks": [r.to_dict() for r in report.webhooks],
        "mirrors": [mirror_dict(m) for m in report.mirrors],
    }


def _print_report(report: RunReport) -> None:
    """The summary table a person at a terminal gets on stderr: one row per stack."""
    several_sources = len({o.source for o in report.stacks}) > 1
    rows: list[tuple[object, ...]] = [
        (
            verbatim(o.label if several_sources else f"{o.release}/{o.stack}"),
            o.status,
            o.version,
            o.spec_count,
            f"+{o.added}",
            f"-{o.removed}",
            o.error or "",
        )
        for o in sorted(report.stacks, key=lambda o: o.label)
    ]
    title = (
        f"{'dry run: nothing kept. ' if report.dry_run else ''}"
        f"{plural(len(report.stacks), 'stack')}, {plural(report.events, 'event')}, "
        f"{plural(report.tally.requests, 'request')}, {human_size(report.tally.bytes)}, "
        f"{human_duration(report.seconds)}"
    )
    columns = ["stack", "status", "version", "specs", "+added", "-removed", "error"]
    if not any(o.error for o in report.stacks):  # room for long stack names
        columns, rows = columns[:-1], [row[:-1] for row in rows]
    print_table(columns, rows, title=title, stderr=True)
    if report.mirrors:  # the local copies this run brought up to date (or would)
        print_table(
            ["mirror", "status", "version", "binaries", "size", "+added", "-removed", "error"],
            [
                (
                    verbatim(m.name),
                    m.status,
                    m.version,
                    m.binaries,
                    human_size(m.bytes),
                    f"+{m.added}",
                    f"-{m.removed}",
                    m.error or "",
                )
                for m in report.mirrors
            ],
            stderr=True,
        )
    if report.webhooks:
        print_webhook_results(report.webhooks, stderr=True)
