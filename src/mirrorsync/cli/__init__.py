"""``mirrorsync`` command line. Parses arguments, runs one command, prints, exits.

Exit codes: 0 success, 1 some stack or source failed, 2 configuration or
usage error, 75 another run holds the lock.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio

from mirrorsync.cli import commands
from mirrorsync.cli.parser import build_parser
from mirrorsync.errors import EXIT_PARTIAL, MirrorsyncError
from mirrorsync.redact import ScrubFilter

Command = Callable[[argparse.Namespace], Awaitable[int]]

COMMANDS: dict[str, Command] = {
    "once": commands.once,
    "status": commands.status,
    "history": commands.history,
    "diff": commands.diff,
    "at": commands.at,
    "show": commands.show,
    "events": commands.events,
}


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    handler = logging.StreamHandler(sys.stderr)
    # No timestamps: journald and most log collectors add their own.
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ScrubFilter())  # no credentials in logs, whoever logs them
    root = logging.getLogger("mirrorsync")
    root.handlers[:] = [handler]
    root.setLevel(max(logging.DEBUG, min(logging.CRITICAL, level)))
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    if args.command == "demo":
        from mirrorsync.cli.demo import run_demo  # only the demo needs the fixture server

        handler: Command = run_demo
    else:
        handler = COMMANDS[args.command]
    try:
        try:
            return anyio.run(handler, args)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
    except MirrorsyncError as exc:
        print(f"mirrorsync: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mirrorsync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_PARTIAL
    except OSError as exc:
        print(f"mirrorsync: error: {exc}", file=sys.stderr)
        return EXIT_PARTIAL


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A task group's failure, reduced to the one error worth reporting."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if isinstance(exc, MirrorsyncError | KeyboardInterrupt | OSError):
            return exc
    return group
