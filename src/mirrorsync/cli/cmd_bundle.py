"""``bundle export|import|list|show``: carry a copy to a site with no network.

``export`` and ``import`` write the database and so take the run lock; ``import``
needs no source and no network (a configuration holding only ``database:`` will
do), and creates the database if there is none yet. ``show`` reads only the
bundle; ``list`` only the database.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from mirrorsync.bundles.export import ExportRequest, export_bundle
from mirrorsync.bundles.import_ import bundle_summary, import_bundle
from mirrorsync.bundles.reader import open_bundle
from mirrorsync.cli.render import (
    human_size,
    plural,
    print_json,
    print_raw,
    print_table,
    say,
    verbatim,
)
from mirrorsync.config import load_config, parse_size
from mirrorsync.errors import EXIT_OK, UsageError
from mirrorsync.lock import hold
from mirrorsync.logs import print_line
from mirrorsync.store import Store
from mirrorsync.store import bundles as store_bundles


async def bundle(args: argparse.Namespace) -> int:
    handlers = {"export": _export, "import": _import, "list": _list, "show": _show}
    return await handlers[args.bundle_command](args)


async def _export(args: argparse.Namespace) -> int:
    if args.full and args.since is not None:
        raise UsageError("--since and --full: choose one")
    if args.out is None and not args.paths_only:
        raise UsageError("give OUT, the bundle to write (or --paths-only)")
    if args.paths_only and (args.split or args.dir or args.sign):
        raise UsageError("--paths-only writes no bundle: --split, --dir, --sign do not apply")
    if args.split is not None and args.dir:
        raise UsageError("--split writes tar volumes; --dir a directory: choose one")
    split = None
    if args.split is not None:
        try:
            split = parse_size(args.split)
        except ValueError as exc:
            raise UsageError(f"--split {args.split}: {exc}") from None
        if split < 16 << 10:
            raise UsageError(f"--split {args.split}: a volume holds at least 16 KiB")
    config = load_config(args.config)
    config.mirror(args.name)  # an unknown name is a usage error, before the lock
    request = ExportRequest(
        args.name,
        Path(args.out) if args.out else None,
        since=args.since,
        full=args.full,
        split=split,
        as_dir=args.dir,
        sign=args.sign,
        paths_only=args.paths_only,
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(hold(config.database_path, wait=args.wait, create=False))
        store = await stack.enter_async_context(
            await Store.open(config.database_path, create=False)
        )
        outcome = await export_bundle(config, store, request)
    if args.json:
        print_json(outcome.to_dict())
    elif outcome.status == "paths":
        for path in outcome.carried:
            print_raw(path)
    elif outcome.status == "unchanged":
        print_line(outcome.message)
    else:
        kind = "full" if outcome.from_version == 0 else f"from version {outcome.from_version}"
        say(
            f"mirror {verbatim(outcome.copy)}: version {outcome.to_version} ({kind}): "
            f"{plural(outcome.files, 'file')}, {human_size(outcome.bytes)}, "
            f"+{len(outcome.added)} -{len(outcome.removed)}"
            + (f", signed by {verbatim(outcome.signed_by)}" if outcome.signed_by else "")
            + f" -> {', '.join(map(verbatim, outcome.paths))}"
        )
    return EXIT_OK


async def _import(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    opened = open_bundle(Path(args.bundle))  # checked before anything is locked or made
    webhooks = False
    async with contextlib.AsyncExitStack() as stack:
        if not args.dry_run or config.database_path.exists():
            await stack.enter_async_context(hold(config.database_path, wait=args.wait))
        store = await stack.enter_async_context(
            await Store.open(config.database_path, dry_run=args.dry_run)
        )
        outbox = None
        if config.webhooks and not args.dry_run:
            from mirrorsync.delivery import Outbox

            outbox = await Outbox.open(config, store)
        outcome = await import_bundle(
            config,
            store,
            opened,
            name=args.name,
            directory=Path(args.dir) if args.dir else None,
            dry_run=args.dry_run,
        )
        if outbox is not None and outcome.status == "imported":
            await outbox.deliver()  # mirror.updated, on the closed side too
            webhooks = True
    if args.json:
        print_json({**outcome.to_dict(), "webhooks_delivered": webhooks})
    elif outcome.status == "unchanged":
        say(outcome.message)
    else:
        verb = "would import" if outcome.status == "dry run" else "imported"
        kind = "full" if outcome.from_version == 0 else f"from version {outcome.from_version}"
        say(
            f"mirror {verbatim(outcome.copy)}: {verb} version {outcome.to_version} of "
            f"{verbatim(outcome.origin)} "
            f"({kind}): {plural(outcome.files, 'file')}, {human_size(outcome.bytes)}, "
            f"{outcome.written} written, +{len(outcome.added)} -{len(outcome.removed)}"
            + (f"; now version {outcome.version}" if outcome.version else "")
            + (f", signed by {verbatim(outcome.signed_by)}" if outcome.signed_by else "")
        )
    return EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    if args.bundle is not None:  # what one bundle carries, read from it alone
        manifest = open_bundle(Path(args.bundle)).manifest
        if args.json:
            print_json([f.to_dict() for f in manifest.files])
        else:
            print_table(
                ["path", "size", "sha256", "volume"],
                [(verbatim(f.path), f.size, verbatim(f.sha256), f.volume) for f in manifest.files],
            )
        return EXIT_OK
    config = load_config(args.config)
    async with await Store.open_read_only(config.database_path) as store:
        rows = await store_bundles.history(store)
    if args.json:
        print_json(rows)
        return EXIT_OK
    print_table(
        ["when", "direction", "copy", "origin", "from", "to", "files", "size", "version"],
        [
            (
                r["at"][:19].replace("T", " "),
                r["direction"],
                verbatim(r["copy"]),
                verbatim(r["origin"]),
                r["from"] or "full",
                r["to"],
                r["files"],
                human_size(r["bytes"]),
                r["version"],
            )
            for r in rows
        ],
    )
    return EXIT_OK


async def _show(args: argparse.Namespace) -> int:
    opened = open_bundle(Path(args.bundle))
    summary = bundle_summary(opened.manifest)
    summary["signed"] = opened.signature is not None
    if args.json:
        if args.files:
            summary["paths"] = [f.to_dict() for f in opened.manifest.files]
        print_json(summary)
        return EXIT_OK
    m = opened.manifest
    joins = "full (for a copy holding nothing)" if m.full else f"from version {m.from_version}"
    say(f"bundle of copy {verbatim(m.copy)}: version {m.to_version}, {joins}")
    say(f"  made by {verbatim(m.created_by)} at {m.created_at}")
    say(
        f"  carries {plural(len(m.files), 'file')} ({human_size(m.size)}) in "
        f"{plural(m.volumes, 'volume')}; the new version holds "
        f"{plural(m.state_files, 'file')} ({human_size(m.state_bytes)})"
    )
    say(f"  specs: +{len(m.added)} -{len(m.removed)}")
    say(
        "  signed (checked by import against bundle.trusted_keys)"
        if summary["signed"]
        else "  not signed"
    )
    if args.files:
        for f in m.files:
            print_raw(f"{f.path}\t{f.size}\t{f.sha256}")
    return EXIT_OK
