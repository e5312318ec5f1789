"""``db migrate-to`` and ``forget webhook|mirror``: acting on the database itself."""

from __future__ import annotations

import argparse
from pathlib import Path

from mirrorsync.cli.common import is_glob, matching, require_database
from mirrorsync.cli.render import (
    human_duration,
    plural,
    print_json,
    print_table,
    say,
    verbatim,
)
from mirrorsync.config import load_config
from mirrorsync.errors import EXIT_OK, UsageError
from mirrorsync.lock import hold
from mirrorsync.store import Store
from mirrorsync.store.location import PostgresUrl


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
    require_database(config)
    async with hold(source, wait=args.wait):
        report = await transfer.migrate_to(source, PostgresUrl(args.url))
    if args.json:
        print_json(report.to_dict())
        return EXIT_OK
    print_table(["table", "rows"], [(t.name, t.rows) for t in report.tables])
    last_event = report.sequences.get("events.id")
    say(
        f"copied {plural(report.rows, 'row')} of {plural(len(report.tables), 'table')} from "
        f"{verbatim(report.source)} to {verbatim(report.target)} in {human_duration(report.seconds)}"
        + (f"; new event ids follow {last_event}" if last_event else "")
    )
    say(f"next: point database: in {verbatim(config.path)} at {verbatim(report.target)}")
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
    if args.name in configured:  # said before anything is opened
        raise UsageError(
            f"{args.kind} {args.name} is still in {config.path}: "
            "remove it from the configuration first, then forget it"
        )
    require_database(config)
    forget_one = webhook_store.forget if args.kind == "webhook" else mirror_store.forget
    known = webhook_store.names if args.kind == "webhook" else mirror_store.names
    async with (
        hold(config.database_path, wait=args.wait, create=False),
        await Store.open(config.database_path, create=False) as store,
    ):
        # NAME: a name or a glob; matching nothing the database knows is a usage error.
        names = (
            matching(args.name, await known(store), args.kind, config.database_path)
            if is_glob(args.name)
            else [args.name]
        )
        still = [n for n in names if n in configured]
        if still:
            raise UsageError(
                f"{args.kind} {', '.join(still)} {'is' if len(still) == 1 else 'are'} still in "
                f"{config.path}: remove it from the configuration first, then forget it"
            )
        done = {name: await forget_one(store, name, utcnow()) for name in names}
    for name, forgotten in done.items():
        if forgotten is None:
            raise UsageError(f"no {args.kind} {name} in {config.database_path}")
        if forgotten:
            say(f"forgot {args.kind} {verbatim(name)}: no longer listed; its history is kept")
        else:
            say(f"{args.kind} {verbatim(name)} was forgotten already")
    return EXIT_OK
