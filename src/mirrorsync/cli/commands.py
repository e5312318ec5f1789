"""One function per command: load what it needs, ask the library, print the answer."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path

from rich.filesize import decimal

from mirrorsync.cli.render import console, print_json, print_json_line, print_table
from mirrorsync.cli.signals import stop_event
from mirrorsync.config import Config, load_config
from mirrorsync.delivery import WebhookResult
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL, UsageError
from mirrorsync.formats._common import is_spec_hash
from mirrorsync.lock import hold
from mirrorsync.logs import print_line, stderr_is_terminal
from mirrorsync.store import Store, queries
from mirrorsync.store import webhooks as webhook_store
from mirrorsync.sync import RunProgress, RunReport, run_once


async def _open(config: Config) -> Store:
    """Every command here only reads: the database is opened read-only, never migrated."""
    return await Store.open_read_only(config.database_path)


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
            await stack.enter_async_context(hold(config.database_path, wait=args.wait))
        if interactive:  # rich's progress machinery is imported only for a person to see
            from mirrorsync.cli.progress import live_progress

            stack.enter_context(live_progress(progress, console(stderr=True), enabled=True))
        with stop_event() as stop:
            report = await run_once(
                config, only_source=args.source, dry_run=args.dry_run, progress=progress, stop=stop
            )
    if args.json:
        print_json(_report_dict(report))
    elif interactive:
        _print_report(report)
    for line in report.failures:
        print_line(f"mirrorsync: failed: {line}")
    return report.exit_code


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
                "specs": o.spec_count,
                "added": o.added,
                "removed": o.removed,
                "events": o.events,
                "error": o.error,
                "requests": o.tally.requests,
                "bytes": o.tally.bytes,
                "seconds": round(o.seconds, 3),
                "manifests": dataclasses.asdict(o.manifests) if o.manifests else None,
            }
            for o in sorted(report.stacks, key=lambda o: o.label)
        ],
        "webhooks": [r.to_dict() for r in report.webhooks],
    }


def _print_report(report: RunReport) -> None:
    """The summary table a person at a terminal gets on stderr: one row per stack."""
    several_sources = len({o.source for o in report.stacks}) > 1
    rows: list[tuple[object, ...]] = [
        (
            o.label if several_sources else f"{o.release}/{o.stack}",
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
        f"{len(report.stacks)} stacks, {report.events} events, "
        f"{report.tally.requests} requests, {decimal(report.tally.bytes)}, {report.seconds:.1f}s"
    )
    columns = ["stack", "status", "version", "specs", "+added", "-removed", "error"]
    if not any(o.error for o in report.stacks):  # room for long stack names
        columns, rows = columns[:-1], [row[:-1] for row in rows]
    print_table(columns, rows, title=title, stderr=True)
    if report.webhooks:
        _print_webhook_results(report.webhooks, stderr=True)


def _print_webhook_results(results: list[WebhookResult], *, stderr: bool = False) -> None:
    print_table(
        ["webhook", "delivered", "requests", "pending", "dead", "next attempt", "error"],
        [
            (
                r.name,
                r.delivered_events,
                r.requests,
                r.pending_events,
                r.dead_events,
                r.next_attempt_at if r.pending_events else "",
                r.disabled or r.error or "",
            )
            for r in results
        ],
        stderr=stderr,
    )


async def status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with await _open(config) as store:
        rows = await queries.status(store)
        hooks = await webhook_store.summaries(store)
    for hook in hooks:
        if hook.dead_events:
            print_line(
                f"mirrorsync: webhook {hook.name}: {hook.dead_events} events in "
                f"{hook.dead_deliveries} deliveries are dead (oldest from {hook.oldest_dead_at}); "
                f"'mirrorsync webhooks retry --name {hook.name} --dead' sends them again",
                logging.WARNING,
            )
    if args.json:
        print_json([dataclasses.asdict(r) for r in rows])
        return EXIT_OK
    print_table(
        [
            "source",
            "release",
            "stack",
            "version",
            "specs",
            "last checked",
            "last changed",
            "last error",
        ],
        [
            (
                r.source,
                r.release,
                r.stack if r.present else f"{r.stack} (gone)",
                r.version,
                r.spec_count,
                r.last_checked,
                r.last_changed,
                r.last_error,
            )
            for r in rows
        ],
    )
    if hooks:
        print_table(
            ["webhook", "state", "pending", "oldest pending", "dead", "last success", "last error"],
            [
                (
                    h.name,
                    "not in config" if not h.configured else "enabled" if h.enabled else "disabled",
                    h.pending_events,
                    h.oldest_pending_at,
                    h.dead_events,
                    h.last_success_at,
                    h.disabled_reason or h.current_error,
                )
                for h in hooks
            ],
        )
    return EXIT_OK


async def history(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with await _open(config) as store:
        stack_id = await queries.find_stack(store, args.release, args.stack, args.source)
        rows = await queries.history(store, stack_id)
    if args.json:
        print_json([dataclasses.asdict(r) for r in rows])
        return EXIT_OK
    print_table(
        ["version", "created", "specs", "+added", "-removed"],
        [(r.version, r.created_at, r.spec_count, f"+{r.added}", f"-{r.removed}") for r in rows],
        title=f"{args.release}/{args.stack}",
    )
    return EXIT_OK


async def diff(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with await _open(config) as store:
        stack_id = await queries.find_stack(store, args.release, args.stack, args.source)
        a = await queries.resolve_version(store, stack_id, args.from_)
        b = await queries.resolve_version(store, stack_id, args.to)
        result = await queries.diff(store, stack_id, a, b)
    if args.json:
        print_json(dataclasses.asdict(result))
        return EXIT_OK
    rows = [("+", s.name, s.version, s.hash, s.os, s.target) for s in result.added]
    rows += [("-", s.name, s.version, s.hash, s.os, s.target) for s in result.removed]
    print_table(
        ["", "name", "version", "hash", "os", "target"],
        rows,
        title=f"{args.release}/{args.stack} version {a} -> {b}: "
        f"+{len(result.added)} -{len(result.removed)}",
    )
    return EXIT_OK


async def at(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with await _open(config) as store:
        stack_id = await queries.find_stack(store, args.release, args.stack, args.source)
        version = await queries.resolve_version(store, stack_id, args.when)
        specs = await queries.members_at(store, stack_id, version)
    if args.json:
        print_json({"version": version, "specs": [dataclasses.asdict(s) for s in specs]})
        return EXIT_OK
    print_table(
        ["hash", "name", "version", "os", "target", "compiler"],
        [(s.hash, s.name, s.version, s.os, s.target, s.compiler or "none") for s in specs],
        title=f"{args.release}/{args.stack} at version {version}: {len(specs)} specs",
    )
    return EXIT_OK


async def show(args: argparse.Namespace) -> int:
    if not is_spec_hash(args.hash):
        raise UsageError(f"{args.hash!r} is not a spec hash (32 lowercase letters and digits)")
    config = load_config(args.config)
    async with await _open(config) as store:
        spec = await queries.spec(store, args.hash)
        stays = await queries.intervals(store, args.hash)
    if spec is None:
        raise UsageError(f"spec {args.hash} has never been seen in {config.database_path}")
    if args.json:
        print_json(
            {"spec": dataclasses.asdict(spec), "intervals": [dataclasses.asdict(i) for i in stays]}
        )
        return EXIT_OK
    print(
        f"{spec.name}@{spec.version} {spec.hash}  {spec.platform}-{spec.os}-{spec.target}"
        f"  compiler {spec.compiler or 'none'}  {' '.join(spec.variants)}"
    )
    print_table(
        ["source", "release", "stack", "entered", "since", "left", "until"],
        [
            (
                i.source,
                i.release,
                i.stack,
                f"v{i.entered_version}",
                i.entered_at,
                f"v{i.left_version}" if i.left_version else "",
                i.left_at or "(still there)",
            )
            for i in stays
        ],
    )
    return EXIT_OK


async def events(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with await _open(config) as store:
        stream = queries.events(store, since=args.since, types=args.types, limit=args.limit)
        if args.json:
            async for event in stream:
                print_json_line(event.to_dict())
            return EXIT_OK
        rows = [
            (
                e.id,
                e.type,
                e.source,
                e.release,
                e.stack or "",
                e.stack_version or "",
                f"{e.name}@{e.version}" if e.name else "",
                e.hash or "",
                e.occurred_at,
            )
            async for e in stream
        ]
    print_table(
        ["id", "type", "source", "release", "stack", "version", "spec", "hash", "time"], rows
    )
    return EXIT_OK


async def webhooks(args: argparse.Namespace) -> int:
    from mirrorsync.delivery import manage  # only these commands need it

    config = load_config(args.config)
    action = args.webhooks_command
    if action == "list":
        listings = await manage.list_webhooks(config)
        if args.json:
            print_json([w.to_dict() for w in listings])
            return EXIT_OK
        print_table(
            [
                "name",
                "url",
                "state",
                "pending",
                "dead",
                "last success",
                "next attempt",
                "last error",
            ],
            [
                (
                    w.name,
                    w.url,
                    w.state,
                    w.pending_events,
                    w.dead_events,
                    w.last_success_at,
                    w.next_attempt_at if w.pending_events else "",
                    w.current_error,
                )
                for w in listings
            ],
        )
        return EXIT_OK
    if action == "test":
        ping = await manage.ping(config, args.name)
        answer = ping.answer
        if args.json:
            print_json(
                {
                    "name": ping.name,
                    "webhook_id": ping.message_id,
                    "status": answer.status,
                    "ok": answer.acknowledged,
                    "error": answer.problem,
                    "seconds": round(answer.seconds, 3),
                }
            )
        elif answer.acknowledged:
            print(
                f"webhook {ping.name}: {ping.origin} acknowledged ping {ping.message_id} "
                f"with HTTP {answer.status} in {answer.seconds:.2f}s"
            )
        if not answer.acknowledged:
            print_line(f"mirrorsync: failed: webhook {ping.name}: {ping.origin}: {answer.problem}")
            return EXIT_PARTIAL
        return EXIT_OK
    # Delivering writes the outbox: never at the same time as a run (or another retry).
    if action == "retry":
        async with hold(config.database_path, wait=args.wait):
            results = await manage.retry(config, args.name, dead=args.dead)
    elif action == "replay":
        async with hold(config.database_path, wait=args.wait):
            replayed, results = await manage.replay(config, args.name, args.since)
        if not args.json:
            print(
                f"webhook {args.name}: {replayed.enqueued} events queued again"
                f" ({replayed.waiting} already pending, {replayed.dead} dead: --dead on retry)"
            )
    else:  # pragma: no cover - argparse allows only the actions above
        raise UsageError(f"unknown webhooks action {action!r}")
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        _print_webhook_results(results)
    failures = [r.failure for r in results if r.failure]
    for line in failures:
        print_line(f"mirrorsync: failed: {line}")
    return EXIT_PARTIAL if failures else EXIT_OK


async def verify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from mirrorsync.cli.verify_output import VerifyOutput  # rich: only for this command
    from mirrorsync.verify import verify as verify_mirror

    with VerifyOutput() as output:
        summary = await verify_mirror(
            config,
            output,
            source=args.source,
            release=args.release,
            stack=args.stack,
            checksums=args.checksums,
        )
    print(
        f"mirrorsync: verify: {summary.specs} specs in {summary.stacks} stacks, "
        f"{summary.problems} problems, {summary.tally.requests} requests, "
        f"{summary.tally.bytes} bytes, {summary.seconds:.1f}s",
        file=sys.stderr,
    )
    return EXIT_PARTIAL if summary.problems else EXIT_OK


async def export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    out = Path(args.out)
    async with await _open(config) as store:
        from mirrorsync.export import export_pages

        written = await export_pages(
            store, release=args.release, out=out, packages=args.packages, source=args.source
        )
    print(f"wrote {len(written)} pages under {out / args.release}")
    return EXIT_OK
