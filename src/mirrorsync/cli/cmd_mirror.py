"""``mirror``: bring the local copies up to the synced state (or say what it would do)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from mirrorsync.cli.common import matching, refresh_metrics
from mirrorsync.cli.render import (
    human_size,
    human_time,
    plural,
    print_json,
    say,
    verbatim,
)
from mirrorsync.config import load_config
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, UsageError
from mirrorsync.lock import hold
from mirrorsync.logs import print_line
from mirrorsync.store import Store, utcnow
from mirrorsync.store import webhooks as webhook_table

if TYPE_CHECKING:
    from mirrorsync.delivery import WebhookResult
    from mirrorsync.mirrors.run import MirrorOutcome


async def mirror(args: argparse.Namespace) -> int:
    """Update the configured copies (or one) under the run lock; a dry run writes nothing."""
    import tempfile

    from mirrorsync.mirrors.run import run_mirrors

    config = load_config(args.config)
    if not config.mirrors:
        raise UsageError(f"{config.path}: no mirrors configured")
    # A name or a glob; one matching no copy is a usage error naming it, before the lock.
    names = (
        matching(args.name, [m.name for m in config.mirrors], "mirror", config.path)
        if args.name
        else None
    )
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
        outbox = None
        if args.dry_run:
            pass
        elif config.webhooks:
            from mirrorsync.delivery import Outbox

            outbox = await Outbox.open(config, store)
        else:  # what Outbox.open does with none configured, without loading the delivery
            # code (signing, payloads: ~30 ms of every copy's start): the table learns that
            # any webhook stored earlier has left the configuration (it gets no event).
            await webhook_table.register(store, [], utcnow())
        outcomes = await run_mirrors(config, store, Path(tmp), only=names, dry_run=args.dry_run)
        if outbox is not None and any(o.status == "published" for o in outcomes):
            webhooks = await outbox.deliver()  # mirror.updated
        metrics_error = None if args.dry_run else await refresh_metrics(config)
    if args.json:
        print_json([mirror_dict(o) for o in outcomes])
    elif args.dry_run:
        for o in outcomes:
            if not o.error:
                say(dry_run_line(o))
    if not args.json:
        for o in outcomes:  # each spec the copy refused, and why
            for x in o.left_out:
                say(f"mirror {verbatim(o.name)}: left out {_names(x.name, x.hash)}: {x.reason}")
            for h, n in o.wanted_missing:
                say(f"mirror {verbatim(o.name)}: wanted but not in upstream: {_names(n or '?', h)}")
            for k in o.kept:
                say(
                    f"mirror {verbatim(o.name)}: kept {_names(k.name, k.hash)} "
                    f"(left upstream {human_time(k.left_upstream_at)})"
                )
    failures = [line for o in outcomes if (line := o.failure_line(verbatim))]
    failures += [line for r in webhooks if (line := r.failure_line(verbatim))]
    failures += [metrics_error] if metrics_error else []
    for line in failures:
        print_line(f"mirrorsync: failed: {line}")
    if any(o.failure and o.exit_code == EXIT_USAGE for o in outcomes):
        return EXIT_USAGE  # a copy configured to do what cannot be done (a v2 source)
    return EXIT_PARTIAL if failures else EXIT_OK


def dry_run_line(o: MirrorOutcome) -> str:
    """What ``mirror --dry-run`` would do to one copy: how many binaries the filters
    chose and how many came in as their dependencies (a copy of 22 chosen specs holds
    their closure too, other OSes' specs included), the tarballs apart from the whole
    copy, what would be downloaded and deleted."""
    c = o.copied
    dependencies = o.binaries - o.matched
    return (
        f"mirror {verbatim(o.name)}: {plural(o.binaries, 'binary', 'binaries')}: "
        f"{o.matched} matched the filters, {dependencies} came in as dependencies; "
        f"tarballs {human_size(o.tarball_bytes)}, the whole copy {human_size(o.bytes)}; "
        f"would download {plural(c.blobs_fetched, 'blob')} ({human_size(c.bytes_fetched)}) "
        f"and {plural(c.manifests_fetched, 'manifest')}; "
        f"would delete up to {plural(o.deleted, 'file')} ({human_size(o.deleted_bytes)})"
    )


def _names(*names: str) -> str:
    """A spec's name and hash (or more names), one space between, shown as written."""
    return " ".join(verbatim(n) for n in names)


def mirror_dict(o: MirrorOutcome) -> dict[str, object]:
    return {
        "name": o.name,
        "status": o.status,
        "version": o.version,
        "binaries": o.binaries,
        "matched": o.matched,
        "dependencies": o.binaries - o.matched,
        "bytes": o.bytes,
        "tarball_bytes": o.tarball_bytes,
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
