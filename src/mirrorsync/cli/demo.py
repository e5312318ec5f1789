"""``mirrorsync demo``: the whole loop, offline, against a bundled local mirror.

Serves a build cache made from a real cache.spack.io snapshot on 127.0.0.1,
syncs it, changes it the way the two bundled snapshots differ, syncs again and
shows what the history now answers.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
from collections import Counter
from pathlib import Path

from mirrorsync.cli.render import (
    console,
    human_duration,
    human_size,
    human_time,
    plural,
    print_table,
    verbatim,
)
from mirrorsync.config import parse_config
from mirrorsync.errors import EXIT_OK
from mirrorsync.fixture.build import build_from_seed
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.store import Store, eventlog, names, queries
from mirrorsync.sync.report import RunReport
from mirrorsync.sync.run import run_once

DEMO_DIR = "mirrorsync-demo"


def _config_text(url: str, database: Path) -> str:
    return (
        f"# Written by 'mirrorsync demo'. The local mirror it names is gone when the demo ends;\n"
        f"# the history in {database.name} stays, for status, history, diff, show and events.\n"
        f"database: {database}\n"
        "sources:\n"
        "  - name: demo\n"
        "    kind: catalog\n"
        f"    url: {url}/cache_spack_io_index.json\n"
        f"    bucket_urls: {{spack-binaries: {url}/}}\n"
        "http: {per_host_rate: 1000}  # a local server: no need to be gentle\n"
    )


def _summary(report: RunReport) -> None:
    rows = [
        (
            verbatim(o.release),
            verbatim(o.stack),
            o.status,
            o.version,
            o.spec_count,
            f"+{o.added}",
            f"-{o.removed}",
        )
        for o in sorted(report.stacks, key=lambda o: (o.release, o.stack))
    ]
    print_table(
        ["release", "stack", "status", "version", "specs", "+added", "-removed"],
        rows,
        title=f"{plural(report.events, 'event')}, {plural(report.tally.requests, 'request')}, "
        f"{human_size(report.tally.bytes)}, {human_duration(report.seconds)}",
    )


def _command_name() -> str:
    """How to run this mirrorsync again from any directory: its name if PATH finds
    this very program, else its absolute path (e.g. a venv's bin/mirrorsync), else
    ``python -m mirrorsync`` with this interpreter."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "mirrorsync" and argv0.exists():
        found = shutil.which("mirrorsync")
        if found and Path(found).resolve() == argv0.resolve():
            return "mirrorsync"
        return shlex.quote(str(argv0.resolve()))
    return f"{shlex.quote(sys.executable)} -m mirrorsync"


async def run_demo(args: argparse.Namespace) -> int:
    if not args.verbose:  # the tables tell the story; per-stack log lines would repeat it
        logging.getLogger("mirrorsync").setLevel(logging.WARNING)
    out = console()
    base = Path.cwd() / DEMO_DIR
    docroot = base / "www"
    docroot.mkdir(parents=True, exist_ok=True)
    database = base / "mirrorsync.db"
    for stale in base.glob("mirrorsync.db*"):
        stale.unlink()
    config_path = base / "mirrorsync.yaml"

    build_from_seed(docroot, "000")
    with FixtureServer(docroot) as server:
        config_path.write_text(_config_text(server.url, database))
        config = parse_config(config_path.read_text(), str(config_path))
        out.rule(f"1. A local build cache on {server.url}, from a cache.spack.io snapshot")
        out.print("Syncing it for the first time: every stack and spec is new.")
        _summary(await run_once(config))
        async with await Store.open_read_only(database) as store:
            since = await eventlog.last_event_id(store)

        out.rule("2. The mirror changes (the second snapshot), and we sync again")
        build_from_seed(docroot, "001")
        report = await run_once(config)
        _summary(report)

    async with await Store.open_read_only(database) as store:
        counts: Counter[tuple[str, str]] = Counter()
        async for event in eventlog.events(store, since=since):
            counts[(event.stack or "", event.type)] += 1
        out.rule(f"3. What changed, as events (mirrorsync events --since {since})")
        print_table(
            ["stack", "event", "count"],
            [(verbatim(s), t, n) for (s, t), n in sorted(counts.items())],
        )
        root = await names.find_stack(store, "develop", "root")
        out.rule("4. History of develop/root (mirrorsync history --release develop --stack root)")
        print_table(
            ["version", "created", "specs", "+added", "-removed"],
            [
                (r.version, human_time(r.created_at), r.spec_count, f"+{r.added}", f"-{r.removed}")
                for r in await queries.history(store, root)
            ],
        )
        diff = await queries.diff(store, root, 1, 2)
        out.rule("5. Diff of develop/root, version 1 -> 2 (mirrorsync diff ... 1 2), first 10")
        print_table(
            ["", "name", "version", "hash", "os", "target"],
            [
                ("-", *map(verbatim, (s.name, s.version, s.hash, s.os, s.target)))
                for s in diff.removed[:10]
            ]
            + [
                ("+", *map(verbatim, (s.name, s.version, s.hash, s.os, s.target)))
                for s in diff.added[:10]
            ],
            title=f"+{len(diff.added)} -{len(diff.removed)}",
        )
    me = _command_name()
    cfg = shlex.quote(str(config_path))
    out.rule("Next")
    out.print(
        "Explore this history (paste any of these):\n"
        f"  {me} -c {cfg} status\n"
        f"  {me} -c {cfg} events --since {since}\n"
        f"  {me} -c {cfg} history --release develop --stack root\n"
        "Sync the real public cache (network needed):\n"
        f"  {me} config init mirrorsync.yaml   # a commented starter; edit releases/stacks\n"
        f"  {me} once                                # then: {me} status",
        markup=False,
        highlight=False,
        soft_wrap=True,  # never wrapped: a long path must still paste as one command
    )
    return EXIT_OK
