"""``db migrate-to`` and ``forget webhook|mirror``: acting on the database itself."""

from __future__ import annotations

import argparse
from pathlib import Path

from mirrorsync.cli.common import require_database
from mirrorsync.cli.render import (
    human_duration,
    plural,
    print_json,
    print_table,
    say,
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
        f"{report.source} to {report.target} in {human_duration(report.seconds)}"
        + (f"; new event ids follow {last_event}" if last_event else "")
    )
    say(f"next: point database: in {config.path} at {report.target}")
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
    require_database(config)
    forget_one = webhook_store.forget if args.kind == "webhook" else mirror_store.forget
    async with (
        hold(config.database_path, wait=args.wait, create=False),
        await Store.open(config.database_path, create=False) as store,
    ):
        done = await forget_one(store, args.name, utcnow())
    if done is None:
        raise UsageError(f"no {args.kind} {args.name} in {config.database_path}")
    if done:
        say(f"forgot {args.kind} {args.name}: no longer listed; its history is kept")
    else:
        say(f"{args.kind} {args.name} was forgotten already")
    return EXIT_OK
