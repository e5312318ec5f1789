"""``verify --mirror NAME [--checksums] [--repair]``: a local copy on disk against its
published state (``mirrors/check.py``), one line per problem on stdout."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

from mirrorsync.cli.render import human_duration, human_size, plural, print_json_line
from mirrorsync.config import Config
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL, UsageError
from mirrorsync.fetch import HttpClient, Tally
from mirrorsync.lock import hold
from mirrorsync.mirrors.check import CopyCheck, Finding, check_copy, repair
from mirrorsync.mirrors.files import Modes
from mirrorsync.mirrors.target import open_target
from mirrorsync.store import Store
from mirrorsync.store import mirrors as store_mirrors


async def verify_copy(args: argparse.Namespace, config: Config) -> int:
    if not args.mirror:
        raise UsageError("--repair goes with --mirror NAME")
    if args.source or args.release or args.stack:
        raise UsageError("--mirror checks a local copy: --source, --release, --stack do not apply")
    copy = config.mirror(args.mirror)
    if not config.database_path.exists():
        from mirrorsync.errors import NoDatabaseError

        raise NoDatabaseError(
            f"no database yet at {config.database_path}; run 'mirrorsync once' first"
        )
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        if args.repair:  # it writes the copy (and forgets deleted orphans): the run lock
            await stack.enter_async_context(hold(config.database_path))
            store = await stack.enter_async_context(
                await Store.open(config.database_path, create=False)
            )
        else:
            store = await stack.enter_async_context(
                await Store.open_read_only(config.database_path)
            )
        row = await store_mirrors.find(store, copy.name)
        if row is None or not row.version or row.index_checksum is None:
            raise UsageError(
                f"mirror {copy.name} has never been published: nothing to verify "
                "('mirrorsync mirror' makes it)"
            )
        index_checksum, mirror_id = row.index_checksum, row.id
        stacks = await store_mirrors.synced_stacks(store, row.source_id, row.release)
        states = await store_mirrors.manifest_states(store, [s.id for s in stacks])
        manifest_sha256: dict[str, set[str]] = {}
        for (_, spec_hash), state in states.items():
            if state.manifest_sha256:
                manifest_sha256.setdefault(spec_hash, set()).add(state.manifest_sha256)

        source = config.source(copy.source)
        client = await stack.enter_async_context(
            HttpClient(config.http, verify=not getattr(source, "insecure", False))
        )
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mirrorsync-")))
        target = open_target(copy, client, workdir, Tally())
        stack.push_async_callback(target.aclose)
        view = target.view()

        async def check() -> CopyCheck:
            pending = await store_mirrors.orphans(store, mirror_id)
            return await anyio.to_thread.run_sync(
                lambda: check_copy(
                    view,
                    index_checksum,
                    manifest_sha256=manifest_sha256,
                    pending=pending,
                    now=datetime.now(UTC),
                    delete_after=copy.delete_after_seconds,
                    checksums=args.checksums,
                    modes=Modes(copy.file_mode),
                    keys_expected=bool(
                        getattr(config.source(copy.source), "verify_signatures", False)
                    ),
                )
            )

        found = await check()
        for f in found.findings:
            _print(args, copy.name, f)
        summary = (
            f"{plural(found.files, 'file')} ({human_size(found.size)}) of version {row.version}, "
            f"{plural(len(found.findings), 'problem')}"
            + (f", {found.waiting} unreferenced within delete_after" if found.waiting else "")
        )
        if not args.repair or not found.findings:
            _summary(copy.name, summary, started)
            return EXIT_PARTIAL if found.findings else EXIT_OK
        done = await repair(config, store, copy, row, found, workdir, check, target)
        for line in done.done:
            print(f"mirror {copy.name}: repaired: {line}")
        for line in done.unrepairable:
            print(f"mirror {copy.name}: {line}")
        row = await store_mirrors.find(store, copy.name) or row  # a rebuild may publish
        index_checksum = row.index_checksum or index_checksum
        after = await check()
        for f in after.findings:
            _print(args, copy.name, f, prefix="still: ")
        t = done.tally
        _summary(
            copy.name,
            f"{summary}; repair fetched {plural(t.blobs_fetched, 'blob')} "
            f"({human_size(t.bytes_fetched)}) and {plural(t.manifests_fetched, 'manifest')}, "
            f"removed {plural(done.removed, 'orphan')}, "
            f"{plural(len(done.unrepairable), 'problem')} not repaired; "
            f"now {plural(len(after.findings), 'problem')}",
            started,
        )
        return EXIT_PARTIAL if after.findings or done.unrepairable else EXIT_OK
    raise AssertionError("unreachable")  # pragma: no cover


def _print(args: argparse.Namespace, mirror: str, f: Finding, prefix: str = "") -> None:
    if args.json:
        print_json_line(
            {"mirror": mirror, "path": f.path, "kind": f.kind, "spec": f.spec, "problem": f.what}
        )
    else:
        print(prefix + f.line(mirror), flush=True)


def _summary(mirror: str, text: str, started: float) -> None:
    print(
        f"mirrorsync: verify: mirror {mirror}: {text}, "
        f"{human_duration(time.monotonic() - started)}",
        file=sys.stderr,
    )
