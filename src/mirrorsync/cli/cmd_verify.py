"""``verify``: the mirror against the synced indexes, or a local copy on disk."""

from __future__ import annotations

import argparse

from mirrorsync.cli.common import require_database
from mirrorsync.cli.render import (
    human_duration,
    human_size,
    plural,
    say,
)
from mirrorsync.config import load_config
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL


async def verify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.mirror or args.repair:  # a local copy on disk (cli/verify_copy.py)
        from mirrorsync.cli.verify_copy import verify_copy

        return await verify_copy(args, config)
    require_database(config)
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
    say(
        f"mirrorsync: verify: {plural(summary.specs, 'spec')} in "
        f"{plural(summary.stacks, 'stack')}, {plural(summary.problems, 'problem')}, "
        + (f"{summary.unchecked} not checked, " if summary.unchecked else "")
        + f"{plural(summary.tally.requests, 'request')}, {human_size(summary.tally.bytes)}, "
        f"{human_duration(summary.seconds)}",
        stderr=True,
    )
    return EXIT_PARTIAL if summary.problems else EXIT_OK
