"""``mirrorsync serve``: the web view in the foreground until SIGTERM (or Ctrl-C).

The web stack (aiohttp.web, Jinja2) is imported here, only when this command
runs: ``mirrorsync --version`` and every other command never load it.

The first SIGTERM, SIGINT or SIGHUP stops it gracefully: no new connection,
the requests under way finish, the database is closed, exit 0, as a service
manager expects of a server it stops. A second signal cancels at once (128 + N).
"""

from __future__ import annotations

import argparse
import logging

from mirrorsync.cli import signals
from mirrorsync.config import load_config
from mirrorsync.errors import EXIT_OK
from mirrorsync.logs import print_line


async def serve(args: argparse.Namespace) -> int:
    from mirrorsync.serve import parse_listen
    from mirrorsync.serve import serve as run

    parse_listen(args.listen)  # a bad --listen is a usage error before anything loads
    config = load_config(args.config)
    current = signals.CURRENT.get()

    def ready(url: str) -> None:
        print_line(
            f"mirrorsync serve: listening on {url} (database {config.database_path})",
            logging.INFO,
        )

    with signals.stop_event() as stop:
        await run(
            config,
            args.listen,
            stop=stop,
            base_url=args.base_url,
            max_age=args.max_age,
            ready=ready,
        )
    if current is not None and current.received is not None:
        print_line(f"mirrorsync serve: stopped ({signals.WORDS[current.received]})", logging.INFO)
        current.handled()
    return EXIT_OK
