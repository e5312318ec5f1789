"""The history queries: ``history``, ``diff``, ``at``, ``specs``, ``show``, ``events``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses

from mirrorsync.cli.common import open_store
from mirrorsync.cli.render import (
    Column,
    TableWriter,
    human_size,
    human_time,
    plural,
    print_json,
    print_json_array,
    print_json_line,
    print_table,
    say,
    verbatim,
)
from mirrorsync.config import EVENT_TYPES, PagesSource, load_config
from mirrorsync.errors import EXIT_OK, UsageError
from mirrorsync.formats._common import is_spec_hash
from mirrorsync.store import Store, eventlog, instants, queries
from mirrorsync.store import names as name_store
from mirrorsync.store import specs as spec_store
from mirrorsync.store.manifests import PAGE
from mirrorsync.text import escape


async def _named_stack(store: Store, args: argparse.Namespace) -> tuple[int, str]:
    """The stack ``--release``/``--stack``/``--source`` name, and its label (with globs,
    the stack they named)."""
    stack_id = await name_store.find_stack(store, args.release, args.stack, args.source)
    return stack_id, await name_store.stack_label(store, stack_id)


async def history(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(await open_store(config))
        stack_id, label = await _named_stack(store, args)
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
            title=verbatim(label),
        )
        async for r in rows:
            table.row(
                (r.version, human_time(r.created_at), r.spec_count, f"+{r.added}", f"-{r.removed}")
            )
    return EXIT_OK


async def diff(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with await open_store(config) as store:
        stack_id, label = await _named_stack(store, args)
        a = await queries.resolve_version(store, stack_id, args.from_)
        b = await queries.resolve_version(store, stack_id, args.to)
        result = await queries.diff(store, stack_id, a, b)
        note = await _before_history(store, stack_id, [(args.from_, a), (args.to, b)])
    if args.json:
        print_json(dataclasses.asdict(result))
        return EXIT_OK
    rows = [("+", *_names(s.name, s.version, s.hash, s.os, s.target)) for s in result.added]
    rows += [("-", *_names(s.name, s.version, s.hash, s.os, s.target)) for s in result.removed]
    print_table(
        ["", "name", "version", "hash", "os", "target"],
        rows,
        title=f"{verbatim(label)} v{a} -> v{b}: +{len(result.added)} -{len(result.removed)}{note}",
    )
    return EXIT_OK


def _names(*names: str) -> tuple[str, ...]:
    """Cells of names (package, version, hash, OS, target): shown as upstream wrote them."""
    return tuple(verbatim(n) for n in names)


async def _before_history(store: Store, stack_id: int, asked: list[tuple[str, int]]) -> str:
    """When a date was asked for that falls before a stack's first version (so it
    resolved to version 0): a note saying when the history starts; else ''."""
    if not any(v == 0 and not instants.is_version(text) for text, v in asked):
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
        store = await stack.enter_async_context(await open_store(config))
        stack_id, label = await _named_stack(store, args)
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
            title=f"{verbatim(label)} at v{version}: {plural(count, 'spec')}{note}",
        )
        async for s in specs:
            table.row(_names(s.hash, s.name, s.version, s.os, s.target, s.compiler or "none"))
    return EXIT_OK


async def specs(args: argparse.Namespace) -> int:
    """The specs a stack holds now, with what the crawler recorded of each."""
    config = load_config(args.config)
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(await open_store(config))
        stack_id = await name_store.find_stack(store, args.release, args.stack, args.source)
        await name_store.require_match(store, "package", args.package)
        records = await stack.enter_async_context(
            contextlib.aclosing(spec_store.stack_specs(store, stack_id, package=args.package))
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
                Column("manifest", 11),
                Column("tarball checksum"),
            ]
        )
        pages = {s.name for s in config.sources if isinstance(s, PagesSource)}
        async for r in records:
            table.row(
                (
                    verbatim(r.hash),
                    verbatim(f"{r.name}@{r.version}"),
                    human_size(r.tarball_size),
                    _manifest_text(r.manifest_status, r.source in pages),
                    verbatim(_short_checksum(r.tarball_checksum)),
                )
            )
    return EXIT_OK


def _manifest_text(status: str | None, pages_source: bool) -> str:
    """A spec's manifest as ``specs`` shows it: its status, ``not yet`` before the crawl
    reached it; a pages source is never crawled (its sizes are the pages')."""
    if pages_source or status == PAGE:
        return "not crawled"
    return status or "not yet"


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
    async with await open_store(config) as store:
        found = await spec_store.specs_by_prefix(store, wanted, limit=11)
        if not found:
            raise UsageError(f"no spec {wanted} has been seen in {config.database_path}")
        if len(found) > 1:
            listed = ", ".join(f"{s.hash} ({s.name}@{s.version})" for s in found[:10])
            more = " and more" if len(found) > 10 else ""
            raise UsageError(f"{wanted} is ambiguous: {listed}{more}")
        spec = found[0]
        stays = await queries.intervals(store, spec.hash)
        records = await spec_store.spec_records(store, spec.hash)
    if args.json:
        print_json(
            {
                "spec": dataclasses.asdict(spec),
                "intervals": [dataclasses.asdict(i) for i in stays],
                "manifests": [r.to_dict() for r in records],
            }
        )
        return EXIT_OK
    say(
        f"{verbatim(f'{spec.name}@{spec.version}')} {verbatim(spec.hash)}  "
        f"{verbatim(f'{spec.platform}-{spec.os}-{spec.target}')}"
        f"  compiler {verbatim(spec.compiler or 'none')}  {verbatim(' '.join(spec.variants))}"
    )
    say()
    print_table(
        ["source", "release", "stack", "entered", "since", "left", "until"],
        [
            (
                *_names(i.source, i.release, i.stack),
                f"v{i.entered_version}",
                human_time(i.entered_at),
                f"v{i.left_version}" if i.left_version else "",
                human_time(i.left_at) if i.left_at else "(still there)",
            )
            for i in stays
        ],
    )
    if records:
        say()
        print_table(
            ["stack", "size", "manifest", "checked", "tarball checksum"],
            [
                (
                    verbatim(f"{r.source}:{r.release}/{r.stack}"),
                    human_size(r.tarball_size),
                    r.manifest_status,
                    human_time(r.fetched_at),
                    verbatim(r.tarball_checksum) if r.tarball_checksum else r.problem or "",
                )
                for r in records
            ],
        )
    return EXIT_OK


async def events(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    since_id, since_at = (args.since, None) if isinstance(args.since, int) else (0, args.since)
    where = eventlog.EventFilter(
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
        await open_store(config) as store,
        contextlib.aclosing(eventlog.events(store, where=where)) as stream,
    ):
        for option in ("source", "release", "stack", "package"):  # a glob matching nothing: 2
            await name_store.require_match(store, option, getattr(args, option))
        if args.json:
            async for event in stream:
                print_json_line(event.to_dict())
            return EXIT_OK
        # Streamed, so sized before the first row: to every stack's label, every type asked.
        labels = await name_store.stack_labels(store)
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
                    verbatim(where_),
                    e.stack_version or "",
                    verbatim(e.hash or ""),
                    verbatim(f"{e.name}@{e.version}") if e.name else "",
                )
            )
    return EXIT_OK
