"""The command line: every command, its options and their help."""

from __future__ import annotations

import argparse

from mirrorsync import __version__
from mirrorsync.config import EVENT_TYPES
from mirrorsync.logs import LOG_FORMATS


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """-c/-v/-q are accepted before and after the command name."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=default,
        help="configuration file (else $MIRRORSYNC_CONFIG, ./mirrorsync.yaml, "
        "/etc/mirrorsync/mirrorsync.yaml)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="more log output (repeat for debug)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="less log output",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="plain" if top else argparse.SUPPRESS,
        help="plain: one line per event (default); json: one JSON object per line",
    )


def _stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", required=True, help="release, e.g. develop")
    parser.add_argument("--stack", required=True, help="stack, e.g. e4s or root")
    parser.add_argument("--source", help="source name, when several sources have this stack")


def _lock_option(parser: argparse.ArgumentParser) -> None:
    """For commands that write the database, and so take the run lock."""
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another run holds the lock, wait up to SECONDS for it (default: exit 75 at once)",
    )


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirrorsync",
        description="Keep versioned history of Spack build caches and announce what changed.",
    )
    parser.add_argument("--version", action="version", version=f"mirrorsync {__version__}")
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common(sub, top=False)
        return sub

    once = command("once", "sync every source once, then exit")
    once.add_argument("--source", help="sync only this source")
    once.add_argument("--dry-run", action="store_true", help="show what would change; keep nothing")
    _lock_option(once)
    _json(once)

    mirror = command("mirror", "bring the local copies (config mirrors:) up to the synced state")
    mirror.add_argument("--name", help="only this copy")
    mirror.add_argument(
        "--dry-run", action="store_true", help="show what would be downloaded and deleted"
    )
    _lock_option(mirror)
    _json(mirror)

    status = command("status", "current version, size and health of every stack")
    _json(status)

    history = command("history", "versions of one stack, with +added/-removed counts")
    _stack_options(history)
    _json(history)

    diff = command("diff", "specs added and removed between two versions or dates")
    _stack_options(diff)
    diff.add_argument("from_", metavar="FROM", help="version number or ISO date")
    diff.add_argument("to", metavar="TO", help="version number or ISO date")
    _json(diff)

    at = command("at", "what one stack held at a version or date")
    _stack_options(at)
    at.add_argument("when", metavar="WHEN", help="version number or ISO date")
    _json(at)

    show = command("show", "where a spec hash has been, and when it came and went")
    show.add_argument("hash", metavar="HASH")
    _json(show)

    events = command("events", "change events in id order")
    events.add_argument("--since", type=int, default=0, metavar="ID", help="only ids above ID")
    events.add_argument(
        "--type", dest="types", action="append", choices=EVENT_TYPES, help="repeatable"
    )
    events.add_argument("--limit", type=int, metavar="N")
    _json(events)

    command("demo", "sync a bundled local mirror twice and show what changed (offline)")

    hooks = command("webhooks", "webhook endpoints: what is pending, retry, test, replay")
    actions = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        _common(sub, top=False)
        return sub

    _json(action("list", "endpoints with pending and dead counts, last success and error"))
    retry = action("retry", "deliver everything pending now, whatever the schedule says")
    retry.add_argument("--name", help="only this webhook (also enables it again after a 410 Gone)")
    retry.add_argument("--dead", action="store_true", help="also send dead deliveries again")
    _lock_option(retry)
    _json(retry)
    test = action("test", "send one signed ping and show the answer")
    test.add_argument("--name", required=True, help="webhook name")
    _json(test)
    replay = action("replay", "send every matching event above an id again")
    replay.add_argument("--name", required=True, help="webhook name")
    replay.add_argument(
        "--since", type=int, required=True, metavar="EVENT_ID", help="events with ids above this"
    )
    _lock_option(replay)
    _json(replay)

    verify = command(
        "verify", "check that every binary the latest synced indexes list is on the mirror"
    )
    verify.add_argument("--source", help="only stacks of this source")
    verify.add_argument("--release", help="only stacks of this release")
    verify.add_argument("--stack", help="only stacks with this name")
    verify.add_argument(
        "--checksums", action="store_true", help="download every blob and check its digest"
    )

    export = command("export", "write documents from the synced state")
    kinds = export.add_subparsers(dest="what", metavar="WHAT", required=True)
    pages = kinds.add_parser(
        "pages",
        help="cache.spack.io package pages: OUT/<release>/<package>/specs.md",
        description="cache.spack.io package pages: OUT/<release>/<package>/specs.md",
    )
    _common(pages, top=False)
    pages.add_argument("--release", required=True, help="release, e.g. develop")
    pages.add_argument(
        "--package",
        dest="packages",
        action="extend",
        nargs="+",
        default=[],
        metavar="P",
        help="only these packages (repeatable; default: every package of the release)",
    )
    pages.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    pages.add_argument("--source", help="source name, when several sources have this release")
    return parser
