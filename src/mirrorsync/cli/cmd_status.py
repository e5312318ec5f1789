"""``status``: the health model (``mirrorsync.health``) as tables, lines or JSON."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from mirrorsync.cli.render import (
    ago,
    below_table,
    human_size,
    human_time,
    plural,
    print_json,
    print_json_line,
    print_table,
    say,
    verbatim,
)
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL, NoDatabaseError, UsageError
from mirrorsync.health import stack_json
from mirrorsync.logs import WARNING, print_line
from mirrorsync.store import Store, overview

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from mirrorsync.health import Config, Health, Problem
    from mirrorsync.location import ReadLocation


def status_now(args: argparse.Namespace) -> int | None:
    """``status`` of a SQLite database, read with no event loop (no asyncio, no
    aiosqlite: store/readonly.py), by the same code as :func:`status`; None for a
    PostgreSQL database, whose driver needs the loop (the CLI then runs :func:`status`)."""
    from mirrorsync.config_cache import load_status_config
    from mirrorsync.location import PostgresUrl
    from mirrorsync.store import readonly

    config = load_status_config(args.config)  # the compiled configuration's cache, if current
    if isinstance(config.database_path, PostgresUrl):
        return None
    return readonly.run(_status(config, args, readonly.opened))


async def status(args: argparse.Namespace) -> int:
    """Render the health model (``mirrorsync.health``): nothing here decides health."""
    from mirrorsync.config import load_config

    return await _status(load_config(args.config), args, Store.open_read_only)


async def _status(
    config: Config, args: argparse.Namespace, opener: Callable[[ReadLocation], Awaitable[Store]]
) -> int:
    from mirrorsync import health

    if args.max_age is not None and not args.check:
        raise UsageError("--max-age goes with --check")
    async with health.assessed(
        config,
        datetime.now(UTC),
        max_age=args.max_age,
        max_pending_age=args.max_pending_age,
        release=args.release,
        stack=args.stack,
        opener=opener,
    ) as (h, store):  # one connection: the health model, then the distinct specs
        return await _report(config, args, h, store)


async def _report(config: Config, args: argparse.Namespace, h: Health, store: Store | None) -> int:
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
                say(_line(p))
        return EXIT_PARTIAL if h.problems else EXIT_OK
    if not h.database_exists:
        raise NoDatabaseError(
            f"no database yet at {config.database_path}; run 'mirrorsync once' first"
        )
    if not h.stacks and not h.copies:  # e.g. a first run whose catalogue failed
        raise NoDatabaseError(
            f"no stack synced yet in {config.database_path}: the runs so far synced none "
            "(their log says why); run 'mirrorsync once'"
        )
    for p in h.problems:
        if p.kind == "webhook_dead":
            print_line(f"mirrorsync: {_line(p)}", WARNING)
    if args.json:
        print_json([stack_json(s) for s in h.stacks])
        return EXIT_OK
    if h.stacks:
        assert store is not None  # stacks: the database exists
        await _stacks_table(config, args, h, store)
    elif h.problems:  # a receiving site (bundle import): copies only
        say()
        for p in h.problems:
            say(_line(p))
    if h.copies:
        say()
        print_table(
            ["mirror", "path", "version", "binaries", "size", "published", "state"],
            [
                (
                    verbatim(c.row.name),
                    verbatim(c.row.path),
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
                say(
                    f"mirror {verbatim(c.row.name)}: kept {verbatim(f'{k.name}/{k.hash[:7]}')} "
                    f"(left upstream {human_time(k.left_upstream_at)})"
                )
    if h.webhooks:
        say()
        print_table(
            ["webhook", "state", "pending", "oldest pending", "dead", "last success"],
            [
                (
                    verbatim(w.row.name),
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
            f"webhook {verbatim(w.row.name)}: last error: {w.row.disabled_reason or w.row.current_error}"
            for w in h.webhooks
            if (w.row.disabled_reason or w.row.current_error) and not w.problems
        ]
        below_table(errors)
    return EXIT_OK


async def _stacks_table(config: Config, args: argparse.Namespace, h: Health, store: Store) -> None:
    """The stacks' table, then who is syncing now and the problems, one a line."""
    rows = [s.row for s in h.stacks]
    several_sources = len({r.source for r in rows}) > 1
    selected = [(r.source, r.release, r.stack) for r in rows]  # a spec in several stacks: one
    distinct = await overview.distinct_specs(
        store, selected if args.release or args.stack else None
    )
    members = sum(r.spec_count for r in rows)  # a spec in three stacks: three memberships
    print_table(
        ["stack", "version", "specs", "checked", "changed", "state"],
        [
            (
                verbatim(s.subject if several_sources else f"{s.row.release}/{s.row.stack}"),
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
        + f" in {verbatim(config.database_path)}",
    )
    syncing = [s for s in h.stacks if s.row.syncing]
    if syncing or h.problems:  # problems are long (they name URLs): below the table, one a line
        say()
        for s in syncing:
            say(f"{verbatim(s.subject)}: being synced now by {s.row.syncing}")
        for p in h.problems:
            say(_line(p))


def _line(p: Problem) -> str:
    """A problem's line, its subject (a stack, source, mirror or webhook) as named."""
    return f"{verbatim(p.subject)}: {p.what}"
