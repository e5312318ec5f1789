"""One function per command: load what it needs, ask the library, print the answer."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mirrorsync.cli.render import (
    Column,
    TableWriter,
    ago,
    console,
    human_duration,
    human_size,
    human_time,
    plural,
    print_json,
    print_json_array,
    print_json_line,
    print_table,
)
from mirrorsync.cli.signals import stop_event
from mirrorsync.config import EVENT_TYPES, Config, load_config
from mirrorsync.delivery import WebhookResult
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, NoDatabaseError, UsageError
from mirrorsync.formats._common import is_spec_hash
from mirrorsync.lock import hold, hold_for_sync
from mirrorsync.logs import print_line, stderr_is_terminal
from mirrorsync.store import Store, queries
from mirrorsync.store.location import PostgresUrl
from mirrorsync.sync import RunProgress, RunReport, run_once
from mirrorsync.text import escape

if TYPE_CHECKING:
    from mirrorsync.health import StackHealth
    from mirrorsync.mirrors import MirrorOutcome


def _require_database(config: Config) -> None:
    """NoDatabaseError (exit 66) if nothing was synced yet: nothing to read."""
    if not config.database_path.exists():
        raise NoDatabaseError(
            f"no database yet at {config.database_path}; run 'mirrorsync once' first"
        )


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
    for line in report.failures:
        print_line(f"mirrorsync: failed: {line}")
    return report.exit_code


def _print_plan(report: RunReport) -> None:
    """``once --dry-run -v``: on stdout, each hash a stack would gain or lose."""
    for o in sorted(report.stacks, key=lambda o: o.label):
        for spec_hash in o.added_hashes or ():
            print(f"{o.label} would add {spec_hash}")
        for spec_hash in o.removed_hashes or ():
            print(f"{o.label} would remove {spec_hash}")


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
        "mirrors": [_mirror_dict(m) for m in report.mirrors],
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
        f"{plural(len(report.stacks), 'stack')}, {plural(report.events, 'event')}, "
        f"{plural(report.tally.requests, 'request')}, {human_size(report.tally.bytes)}, "
        f"{human_duration(report.seconds)}"
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
                human_time(r.next_attempt_at) if r.pending_events else "",
                "disabled (see below)" if r.disabled else r.error or "",  # said once, below
            )
            for r in results
        ],
        stderr=stderr,
    )


async def mirror(args: argparse.Namespace) -> int:
    """Update the configured copies (or one) under the run lock; a dry run writes nothing."""
    import tempfile

    from mirrorsync.delivery import Outbox
    from mirrorsync.mirrors import run_mirrors

    config = load_config(args.config)
    if not config.mirrors:
        raise UsageError(f"{config.path}: no mirrors configured")
    if args.name:
        config.mirror(args.name)  # an unknown name is a usage error, before the lock
    webhooks: list[WebhookResult] = []
    async with contextlib.AsyncExitStack() as stack:
        # A dry run too: its writes go into one transaction that is rolled back, which
        # holds the database's write lock while it runs.
        lock = hold(config.database_path, wait=args.wait, create=False)  # none yet: no file
        await stack.enter_async_context(lock)
        store = await stack.enter_async_context(
            await Store.open(config.database_path, create=False, dry_run=args.dry_run)
        )
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mirrorsync-"))
        # Webhooks are registered before publishing, as 'once' does: a webhook just added
        # to the configuration gets the mirror.updated event of this run.
        outbox = None if args.dry_run else await Outbox.open(config, store)
        outcomes = await run_mirrors(config, store, Path(tmp), only=args.name, dry_run=args.dry_run)
        if outbox is not None and any(o.status == "published" for o in outcomes):
            webhooks = await outbox.deliver()  # mirror.updated
        metrics_error = None if args.dry_run else await _refresh_metrics(config)
    if args.json:
        print_json([_mirror_dict(o) for o in outcomes])
    elif args.dry_run:
        for o in outcomes:
            c = o.copied
            if o.error:
                continue
            print(
                f"mirror {o.name}: {plural(o.binaries, 'binary', 'binaries')} "
                f"({human_size(o.bytes)}); would download {plural(c.blobs_fetched, 'blob')} "
                f"({human_size(c.bytes_fetched)}) and {plural(c.manifests_fetched, 'manifest')}; "
                f"would delete up to {plural(o.deleted, 'file')} ({human_size(o.deleted_bytes)})"
            )
    if not args.json:
        for o in outcomes:  # each spec the copy refused, and why
            for x in o.left_out:
                print(f"mirror {o.name}: left out {x.name} {x.hash}: {x.reason}")
            for h, n in o.wanted_missing:
                print(f"mirror {o.name}: wanted but not in upstream: {n or '?'} {h}")
            for k in o.kept:
                print(
                    f"mirror {o.name}: kept {k.name} {k.hash} (left upstream {human_time(k.left_upstream_at)})"
                )
    failures = [o.failure for o in outcomes if o.failure]
    failures += [r.failure for r in webhooks if r.failure]
    failures += [metrics_error] if metrics_error else []
    for line in failures:
        print_line(f"mirrorsync: failed: {line}")
    if any(o.failure and o.exit_code == EXIT_USAGE for o in outcomes):
        return EXIT_USAGE  # a copy configured to do what cannot be done (a v2 source)
    return EXIT_PARTIAL if failures else EXIT_OK


async def _refresh_metrics(config: Config) -> str | None:
    """The metrics file rewritten after a command changed what it reports (not ``once``,
    which writes its own); the failure line if it cannot be written."""
    from mirrorsync import metrics
    from mirrorsync.errors import MetricsError

    try:
        await metrics.refresh(config)
    except MetricsError as exc:
        return str(exc)
    return None


def _mirror_dict(o: MirrorOutcome) -> dict[str, object]:
    return {
        "name": o.name,
        "status": o.status,
        "version": o.version,
        "binaries": o.binaries,
        "bytes": o.bytes,
        "added": o.added,
        "removed": o.removed,
        "blobs_fetched": o.copied.blobs_fetched,
        "bytes_fetched": o.copied.bytes_fetched,
        "blobs_present": o.copied.blobs_present,
        "manifests_fetched": o.copied.manifests_fetched,
        "deleted": o.deleted,
        "deleted_bytes": o.deleted_bytes,
        "waiting": o.waiting,
        "waiting_bytes": o.waiting_bytes,
        "error": o.error,
        "left_out": [{"hash": x.hash, "name": x.name, "reason": x.reason} for x in o.left_out],
        "kept": [
            {"hash": k.hash, "name": k.name, "left_upstream_at": k.left_upstream_at} for k in o.kept
        ],
        "wanted_missing": [{"hash": h, "name": n} for h, n in o.wanted_missing],
        "requests": o.tally.requests,
        "seconds": round(o.seconds, 3),
    }


async def status(args: argparse.Namespace) -> int:
    """Render the health model (``mirrorsync.health``): nothing here decides health."""
    from mirrorsync import health

    config = load_config(args.config)
    if args.max_age is not None and not args.check:
        raise UsageError("--max-age goes with --check")
    h = await health.assess_config(
        config,
        datetime.now(UTC),
        max_age=args.max_age,
        max_pending_age=args.max_pending_age,
        release=args.release,
        stack=args.stack,
    )
    if h.database_exists and (args.release or args.stack) and not h.stacks:
        where = "/".join(x or "*" for x in (args.release, args.stack))
        raise UsageError(f"no stack {where} in {config.database_path}")
    if args.check:
        for p in h.problems:
            if args.json:
                stack = next((s.row for s in h.stacks if s.subject == p.subject), None)
                print_json_line(
                    {
                        "kind": p.kind,
                        "subject": p.subject,
                        "source": stack.source if stack else None,
                        "release": stack.release if stack else None,
                        "stack": stack.stack if stack else None,
                        "problem": p.what,
                        "line": p.line,
                    }
                )
            else:
                print(p.line)
        return EXIT_PARTIAL if h.problems else EXIT_OK
    if not h.database_exists:
        raise NoDatabaseError(
            f"no database yet at {config.database_path}; run 'mirrorsync once' first"
        )
    if not h.stacks:  # e.g. a first run whose catalogue failed
        raise NoDatabaseError(
            f"no stack synced yet in {config.database_path}: the runs so far synced none "
            "(their log says why); run 'mirrorsync once'"
        )
    for p in h.problems:
        if p.kind == "webhook_dead":
            print_line(f"mirrorsync: {p.line}", logging.WARNING)
    if args.json:
        print_json([_stack_json(s) for s in h.stacks])
        return EXIT_OK
    rows = [s.row for s in h.stacks]
    several_sources = len({r.source for r in rows}) > 1
    async with await _open(config) as store:  # a spec in several stacks is one spec
        selected = [(r.source, r.release, r.stack) for r in rows]
        distinct = await queries.distinct_specs(
            store, selected if args.release or args.stack else None
        )
    members = sum(r.spec_count for r in rows)  # a spec in three stacks: three memberships
    print_table(
        ["stack", "version", "specs", "checked", "changed", "state"],
        [
            (
                s.subject if several_sources else f"{s.row.release}/{s.row.stack}",
                s.row.version,
                s.row.spec_count,
                ago(s.row.last_checked),
                ago(s.row.last_changed),
                s.state,
            )
            for s in h.stacks
        ],
        title=f"{plural(len(rows), 'stack')} {'holds' if len(rows) == 1 else 'hold'} "
        f"{plural(distinct, 'distinct spec')}"
        + (f" ({plural(members, 'membership')})" if members != distinct else "")
        + f" in {config.database_path}",
    )
    syncing = [s for s in h.stacks if s.row.syncing]
    if syncing or h.problems:  # problems are long (they name URLs): below the table, one a line
        print()
        for s in syncing:
            print(f"{s.subject}: being synced now by {s.row.syncing}")
        for p in h.problems:
            print(p.line)
    if h.copies:
        print()
        print_table(
            ["mirror", "path", "version", "binaries", "size", "published", "state"],
            [
                (
                    c.row.name,
                    c.row.path,
                    c.row.version,
                    c.row.binaries,
                    human_size(c.row.bytes),
                    ago(c.row.last_published),
                    c.state,
                )
                for c in h.copies
            ],
        )
        for c in h.copies:  # informational: held after upstream deleted them (keep:)
            for k in c.kept:
                print(
                    f"mirror {c.row.name}: kept {k.name}/{k.hash[:7]} "
                    f"(left upstream {human_time(k.left_upstream_at)})"
                )
    if h.webhooks:
        print()
        print_table(
            ["webhook", "state", "pending", "oldest pending", "dead", "last success"],
            [
                (
                    w.row.name,
                    w.state,
                    w.row.pending_events,
                    human_time(w.row.oldest_pending_at),
                    w.row.dead_events,
                    ago(w.row.last_success_at),
                )
                for w in h.webhooks
            ],
        )
        # An error is long (a URL, a reason): below the table, one a line, so that rows
        # fit 80 columns; a webhook whose problem is listed above has it there already.
        errors = [
            f"webhook {w.row.name}: last error: {w.row.disabled_reason or w.row.current_error}"
            for w in h.webhooks
            if (w.row.disabled_reason or w.row.current_error) and not w.problems
        ]
        _below_table(errors)
    return EXIT_OK


def _stack_json(s: StackHealth) -> dict[str, object]:
    r = s.row
    return {
        "source": r.source,
        "release": r.release,
        "stack": r.stack,
        "present": r.present,
        "version": r.version,
        "spec_count": r.spec_count,
        "layout": r.layout,
        "last_checked_at": r.last_checked,
        "last_changed_at": r.last_changed,
        "last_error": r.last_error,
        "syncing": r.syncing,
        "state": s.state,
        "manifests": dict(sorted(s.manifests.by_status.items())) if s.manifests else None,
        "problems": [{"kind": p.kind, "problem": p.what} for p in s.problems],
    }


async def history(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(await _open(config))
        stack_id = await queries.find_stack(store, args.release, args.stack, args.source)
        label = await queries.stack_label(store, stack_id)  # globs: the stack they named
        rows = await stack.enter_async_context(
            contextlib.aclosing(queries.history_rows(store, stack_id, limit=args.limit))
        )
        if args.json:
            await print_json_array(dataclasses.asdict(r) async for r in rows)
            return EXIT_OK
        table = TableWriter(
            [
                Column("version", 7, right=True),
                Column("created", 17),
                Column("specs", 7, right=True),
                Column("+added", 7, right=True),
                Column("-removed", 8, right=True),
            ],
            title=label,
        )
        async for r in rows:
            table.row(
                (r.version, human_time(r.created_at), r.spec_count, f"+{r.added}", f"-{r.removed}")
            )
    return EXIT_OK


async def diff(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with await _open(config) as store:
        stack_id = await queries.find_stack(store, args.release, args.stack, args.source)
        label = await queries.stack_label(store, stack_id)  # globs: the stack they named
        a = await queries.resolve_version(store, stack_id, args.from_)
        b = await queries.resolve_version(store, stack_id, args.to)
        result = await queries.diff(store, stack_id, a, b)
        note = await _before_history(store, stack_id, [(args.from_, a), (args.to, b)])
    if args.json:
        print_json(dataclasses.asdict(result))
        return EXIT_OK
    rows = [("+", s.name, s.version, s.hash, s.os, s.target) for s in result.added]
    rows += [("-", s.name, s.version, s.hash, s.os, s.target) for s in result.removed]
    print_table(
        ["", "name", "version", "hash", "os", "target"],
        rows,
        title=f"{label} v{a} -> v{b}: +{len(result.added)} -{len(result.removed)}{note}",
    )
    return EXIT_OK


async def _before_history(store: Store, stack_id: int, asked: list[tuple[str, int]]) -> str:
    """When a date was asked for that falls before a stack's first version (so it
    resolved to version 0): a note saying when the history starts; else ''."""
    if not any(v == 0 and not queries.is_version(text) for text, v in asked):
        return ""
    start = await queries.first_version_at(store, stack_id)
    return f" ({'the history starts at ' + human_time(start) if start else 'no history yet'})"


_SPEC_COLUMNS = [
    Column("hash", 32),
    Column("name", 24),
    Column("version", 12),
    Column("os", 10),
    Column("target", 10),
    Column("compiler"),
]


async def at(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(await _open(config))
        stack_id = await queries.find_stack(store, args.release, args.stack, args.source)
        label = await queries.stack_label(store, stack_id)  # globs: the stack they named
        version = await queries.resolve_version(store, stack_id, args.when)
        note = await _before_history(store, stack_id, [(args.when, version)])
        specs = await stack.enter_async_context(
            contextlib.aclosing(queries.stream_members_at(store, stack_id, version))
        )
        if args.json:
            await print_json_array(
                (dataclasses.asdict(s) async for s in specs), head={"version": version}, key="specs"
            )
            return EXIT_OK
        count = await queries.count_at(store, stack_id, version)
        table = TableWriter(
            _SPEC_COLUMNS,
            title=f"{label} at v{version}: {plural(count, 'spec')}{note}",
        )
        async for s in specs:
            table.row((s.hash, s.name, s.version, s.os, s.target, s.compiler or "none"))
    return EXIT_OK


async def specs(args: argparse.Namespace) -> int:
    """The specs a stack holds now, with what the crawler recorded of each."""
    config = load_config(args.config)
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(await _open(config))
        stack_id = await queries.find_stack(store, args.release, args.stack, args.source)
        await queries.require_match(store, "package", args.package)
        records = await stack.enter_async_context(
            contextlib.aclosing(queries.stack_specs(store, stack_id, package=args.package))
        )
        if args.json:
            async for r in records:
                print_json_line(r.to_dict())
            return EXIT_OK
        table = TableWriter(
            [
                Column("hash", 32),
                Column("spec", 30),
                Column("size", 9, right=True),
                Column("manifest", 10),
                Column("tarball checksum"),
            ]
        )
        async for r in records:
            table.row(
                (
                    r.hash,
                    f"{r.name}@{r.version}",
                    human_size(r.tarball_size),
                    r.manifest_status or "not yet",
                    _short_checksum(r.tarball_checksum),
                )
            )
    return EXIT_OK


def _short_checksum(checksum: str | None) -> str:
    return checksum or ""


async def show(args: argparse.Namespace) -> int:
    wanted = args.hash.removeprefix("/")  # Spack's /hash form
    if len(wanted) < 7 or not is_spec_hash(wanted.ljust(32, "a")):
        raise UsageError(
            f"{args.hash!r} is not a spec hash or a prefix of one"
            " (7 to 32 lowercase letters a-z and digits 2-7, optionally after '/')"
        )
    config = load_config(args.config)
    async with await _open(config) as store:
        found = await queries.specs_by_prefix(store, wanted, limit=11)
        if not found:
            raise UsageError(f"no spec {wanted} has been seen in {config.database_path}")
        if len(found) > 1:
            listed = ", ".join(f"{s.hash} ({s.name}@{s.version})" for s in found[:10])
            more = " and more" if len(found) > 10 else ""
            raise UsageError(f"{wanted} is ambiguous: {listed}{more}")
        spec = found[0]
        stays = await queries.intervals(store, spec.hash)
        records = await queries.spec_records(store, spec.hash)
    if args.json:
        print_json(
            {
                "spec": dataclasses.asdict(spec),
                "intervals": [dataclasses.asdict(i) for i in stays],
                "manifests": [r.to_dict() for r in records],
            }
        )
        return EXIT_OK
    print(
        f"{spec.name}@{spec.version} {spec.hash}  {spec.platform}-{spec.os}-{spec.target}"
        f"  compiler {spec.compiler or 'none'}  {' '.join(spec.variants)}"
    )
    print()
    print_table(
        ["source", "release", "stack", "entered", "since", "left", "until"],
        [
            (
                i.source,
                i.release,
                i.stack,
                f"v{i.entered_version}",
                human_time(i.entered_at),
                f"v{i.left_version}" if i.left_version else "",
                human_time(i.left_at) if i.left_at else "(still there)",
            )
            for i in stays
        ],
    )
    if records:
        print()
        print_table(
            ["stack", "size", "manifest", "checked", "tarball checksum"],
            [
                (
                    f"{r.source}:{r.release}/{r.stack}",
                    human_size(r.tarball_size),
                    r.manifest_status,
                    human_time(r.fetched_at),
                    r.tarball_checksum or r.problem or "",
                )
                for r in records
            ],
        )
    return EXIT_OK


async def events(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    since_id, since_at = (args.since, None) if isinstance(args.since, int) else (0, args.since)
    where = queries.EventFilter(
        since=since_id,
        since_at=since_at,
        until_at=args.until,
        types=args.types or (),
        source=args.source,
        release=args.release,
        stack=args.stack,
        package=args.package,
        limit=args.limit,
        newest_first=args.reverse,
    )
    async with (
        await _open(config) as store,
        contextlib.aclosing(queries.events(store, where=where)) as stream,
    ):
        for option in ("source", "release", "stack", "package"):  # a glob matching nothing: 2
            await queries.require_match(store, option, getattr(args, option))
        if args.json:
            async for event in stream:
                print_json_line(event.to_dict())
            return EXIT_OK
        # Streamed, so sized before the first row: to every stack's label, every type asked.
        labels = await queries.stack_labels(store)
        table = TableWriter(
            [
                Column("id", 7, right=True),
                Column("time", 17),
                Column("type", max(map(len, args.types or EVENT_TYPES))),
                Column("stack", max(map(len, map(escape, labels)), default=0)),
                Column("version", 7, right=True),
                Column("hash", 32),
                Column("spec"),
            ]
        )
        async for e in stream:
            where_ = f"{e.source}:{e.release}" + (f"/{e.stack}" if e.stack else "")
            table.row(
                (
                    e.id,
                    human_time(e.occurred_at),
                    e.type,
                    where_,
                    e.stack_version or "",
                    e.hash or "",
                    f"{e.name}@{e.version}" if e.name else "",
                )
            )
    return EXIT_OK


def _below_table(lines: list[str]) -> None:
    """Long messages (errors naming URLs) after a table, a blank line between."""
    if lines:
        print()
        print("\n".join(lines))


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
            ],
            [
                (
                    w.name,
                    w.url,
                    w.state,
                    w.pending_events,
                    w.dead_events,
                    ago(w.last_success_at),
                    human_time(w.next_attempt_at) if w.pending_events else "",
                )
                for w in listings
            ],
        )
        _below_table(
            [
                f"webhook {w.name}: last error: {w.current_error}"
                for w in listings
                if w.current_error
            ]
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
                f"with HTTP {answer.status} in {human_duration(answer.seconds)}"
            )
        if not answer.acknowledged:
            print_line(f"mirrorsync: failed: webhook {ping.name}: {ping.origin}: {answer.problem}")
            return EXIT_PARTIAL
        return EXIT_OK
    # Delivering writes the outbox: never at the same time as a run (or another retry).
    if action == "retry":  # no database yet: nothing to deliver, no lock file made
        async with hold(config.database_path, wait=args.wait, create=False):
            results = await manage.retry(config, args.name, dead=args.dead)
            metrics_error = await _refresh_metrics(config)
    elif action == "replay":
        async with hold(config.database_path, wait=args.wait, create=False):
            replayed, results = await manage.replay(config, args.name, args.since)
            metrics_error = await _refresh_metrics(config)
        document = {
            "name": args.name,
            "enqueued_events": replayed.enqueued,
            "pending_events": replayed.waiting,
            "dead_events": replayed.dead,
        }
        if not args.json:
            print(
                f"webhook {args.name}: {plural(replayed.enqueued, 'event')} queued again"
                f" ({replayed.waiting} already pending, {replayed.dead} dead: --dead on retry)"
            )
    else:  # pragma: no cover - argparse allows only the actions above
        raise UsageError(f"unknown webhooks action {action!r}")
    if args.json and action == "replay":
        print_json({**document, "webhooks": [r.to_dict() for r in results]})
    elif args.json:
        print_json([r.to_dict() for r in results])
    else:
        _print_webhook_results(results)
    failures = [r.failure for r in results if r.failure]
    failures += [metrics_error] if metrics_error else []
    for line in failures:
        print_line(f"mirrorsync: failed: {line}")
    return EXIT_PARTIAL if failures else EXIT_OK


async def verify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.mirror or args.repair:  # a local copy on disk (cli/verify_copy.py)
        from mirrorsync.cli.verify_copy import verify_copy

        return await verify_copy(args, config)
    _require_database(config)
    from mirrorsync.cli.verify_output import VerifyOutput  # rich: only for this command
    from mirrorsync.verify import verify as verify_mirror

    with VerifyOutput(as_json=args.json) as output:
        summary = await verify_mirror(
            config,
            output,
            source=args.source,
            release=args.release,
            stack=args.stack,
            checksums=args.checksums,
        )
    print(
        f"mirrorsync: verify: {plural(summary.specs, 'spec')} in "
        f"{plural(summary.stacks, 'stack')}, {plural(summary.problems, 'problem')}, "
        + (f"{summary.unchecked} not checked, " if summary.unchecked else "")
        + f"{plural(summary.tally.requests, 'request')}, {human_size(summary.tally.bytes)}, "
        f"{human_duration(summary.seconds)}",
        file=sys.stderr,
    )
    return EXIT_PARTIAL if summary.problems else EXIT_OK


async def export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    out = Path(args.out)
    async with await _open(config) as store:
        from mirrorsync.export import export_pages
        from mirrorsync.store.manifests import release_packages, release_view

        written = await export_pages(
            store, release=args.release, out=out, packages=args.packages, source=args.source
        )
        removed: list[Path] = []
        if args.clean:
            view = await release_view(store, args.release, args.source)
            removed = _clean_pages(out / args.release, set(await release_packages(store, view)))
    if args.json:
        print_json(
            {
                "release": args.release,
                "out": str(out / args.release),
                "page_count": len(written),
                "pages": [str(path) for path in written],
                "removed": [str(path) for path in removed],
            }
        )
    else:
        print(f"wrote {plural(len(written), 'page')} under {out / args.release}")
        if args.clean:
            print(f"removed {plural(len(removed), 'page')} of packages no longer in {args.release}")
    return EXIT_OK


def _clean_pages(release_dir: Path, packages: set[str]) -> list[Path]:
    """Remove ``<package>/specs.md`` of packages not in ``packages``; keep anything else.

    A package directory is removed only when the page was all it held.
    """
    from mirrorsync.export import PAGE_NAME

    removed = []
    for page in sorted(release_dir.glob(f"*/{PAGE_NAME}")):
        if page.parent.name in packages:
            continue
        page.unlink()
        removed.append(page)
        with contextlib.suppress(OSError):  # not empty: someone else's files stay
            page.parent.rmdir()
    return removed


async def db(args: argparse.Namespace) -> int:
    """``db migrate-to URL``: the configured SQLite history copied into PostgreSQL,
    under the run lock, so no sync writes the history while it is read."""
    from mirrorsync.store import transfer  # only this command needs it

    config = load_config(args.config)
    source = config.database_path
    if not isinstance(source, Path):
        raise UsageError(
            f"{config.path}: database: is already {source}; db migrate-to copies a SQLite "
            "database: point database: at the SQLite file to copy"
        )
    _require_database(config)
    async with hold(source, wait=args.wait):
        report = await transfer.migrate_to(source, PostgresUrl(args.url))
    if args.json:
        print_json(report.to_dict())
        return EXIT_OK
    print_table(["table", "rows"], [(t.name, t.rows) for t in report.tables])
    last_event = report.sequences.get("events.id")
    print(
        f"copied {plural(report.rows, 'row')} of {plural(len(report.tables), 'table')} from "
        f"{report.source} to {report.target} in {human_duration(report.seconds)}"
        + (f"; new event ids follow {last_event}" if last_event else "")
    )
    print(f"next: point database: in {config.path} at {report.target}")
    return EXIT_OK


async def forget(args: argparse.Namespace) -> int:
    """``forget webhook|mirror NAME``: end the listing of one that left the configuration
    (status, webhooks list, metrics no longer show it); its history stays."""
    from mirrorsync.store import mirrors as mirror_store
    from mirrorsync.store import webhooks as webhook_store
    from mirrorsync.store.db import utcnow

    config = load_config(args.config)
    configured = (
        {h.name for h in config.webhooks}
        if args.kind == "webhook"
        else {m.name for m in config.mirrors}
    )
    if args.name in configured:
        raise UsageError(
            f"{args.kind} {args.name} is still in {config.path}: "
            "remove it from the configuration first, then forget it"
        )
    _require_database(config)
    forget_one = webhook_store.forget if args.kind == "webhook" else mirror_store.forget
    async with (
        hold(config.database_path, wait=args.wait, create=False),
        await Store.open(config.database_path, create=False) as store,
    ):
        done = await forget_one(store, args.name, utcnow())
    if done is None:
        raise UsageError(f"no {args.kind} {args.name} in {config.database_path}")
    if done:
        print(f"forgot {args.kind} {args.name}: no longer listed; its history is kept")
    else:
        print(f"{args.kind} {args.name} was forgotten already")
    return EXIT_OK
