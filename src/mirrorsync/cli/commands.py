"""One function per command: load what it needs, ask the library, print the answer."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from mirrorsync.cli.render import print_json, print_json_line, print_table
from mirrorsync.cli.verify_output import VerifyOutput
from mirrorsync.config import Config, load_config
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL, UsageError
from mirrorsync.export import export_pages
from mirrorsync.formats._common import is_spec_hash
from mirrorsync.store import Store, queries
from mirrorsync.sync import RunReport, run_once
from mirrorsync.verify import verify as verify_mirror


async def _open(config: Config) -> Store:
    return await Store.open(config.database_path, create=False)


async def once(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    report = await run_once(config, only_source=args.source, dry_run=args.dry_run)
    if args.json:
        print_json(_report_dict(report))
    else:
        _print_report(report)
    for line in report.failures:
        print(f"mirrorsync: failed: {line}", file=sys.stderr)
    return report.exit_code


def _report_dict(report: RunReport) -> dict[str, object]:
    return {
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "seconds": round(report.seconds, 3),
        "dry_run": report.dry_run,
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
    }


def _print_report(report: RunReport) -> None:
    rows = [
        (
            o.source,
            o.release,
            o.stack,
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
        f"{report.tally.requests} requests, {report.tally.bytes} bytes, {report.seconds:.1f}s"
    )
    print_table(
        ["source", "release", "stack", "status", "version", "specs", "+added", "-removed", "error"],
        rows,
        title=title,
    )


async def status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with await _open(config) as store:
        rows = await queries.status(store)
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


async def verify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
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
        written = await export_pages(
            store, release=args.release, out=out, packages=args.packages, source=args.source
        )
    print(f"wrote {len(written)} pages under {out / args.release}")
    return EXIT_OK
