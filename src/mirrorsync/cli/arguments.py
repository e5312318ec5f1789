"""The command line: every command, its options and their help (``build_parser``).

Built for every command and --help: nothing here imports the configuration's parser,
the store or the error types; an option's converter (:mod:`mirrorsync.cli.values`)
imports what it needs when it is given. How the parsers behave is
:mod:`mirrorsync.cli.parser`'s."""

from __future__ import annotations

import argparse

from mirrorsync import __version__
from mirrorsync.cli.parser import Parser, add_later, common_options, lazy_subcommands
from mirrorsync.cli.values import (
    duration_arg,
    event_id,
    positive_int,
    postgresql_url,
    seconds_arg,
    since_arg,
    until_arg,
    version_or_date,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from mirrorsync.cli.parser import Build

_WHEN_HELP = "a version (3 or v3), an ISO 8601 date/time, or a relative time (2h, 3d, yesterday)"


#: What ``mirrorsync _names KIND`` lists for the completion scripts.
NAME_KINDS = ("release", "stack", "source", "mirror", "webhook")

#: Commands that read no configuration file: ``-c`` given to them is a usage error.
NO_CONFIG = ("demo", "completion", "help")


def _stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", required=True, help="release, e.g. develop (or a glob)")
    parser.add_argument("--stack", required=True, help="stack, e.g. e4s or root (or a glob)")
    parser.add_argument(
        "--source", help="source name (or glob), when several sources have this stack"
    )


def _lock_option(parser: argparse.ArgumentParser) -> None:
    """For commands that write the database, and so take the run lock."""
    parser.add_argument(
        "--wait",
        type=seconds_arg,
        default=0.0,
        metavar="DURATION",
        help="if another run holds the lock, wait up to DURATION for it (e.g. 90, 5m, 1h; "
        "default: exit 75 at once)",
    )


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


_EPILOG = "examples: mirrorsync --help; exit codes: mirrorsync help exit-codes"


def build_parser() -> argparse.ArgumentParser:
    from mirrorsync.cli.topics import epilog

    parser = Parser(
        prog="mirrorsync",
        description="Keep versioned history of Spack build caches and announce what changed.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mirrorsync {__version__}")
    common_options(parser, top=True)
    commands = lazy_subcommands(parser, "command", "COMMAND")
    for name, help_text, build, config in _COMMANDS:
        if help_text is None:  # _names: for the shell completion scripts only (not listed)
            add_later(commands, name, build, None)
            continue
        add_later(
            commands,
            name,
            build,
            help_text,
            config=config,
            description=help_text,
            epilog=_EPILOG,
        )
    return parser


def _once(once: argparse.ArgumentParser) -> None:
    once.add_argument("--source", help="sync only this source")
    once.add_argument("--dry-run", action="store_true", help="show what would change; keep nothing")
    once.add_argument(
        "--progress-every",
        type=seconds_arg,
        default=30.0,
        metavar="DURATION",
        help="off a terminal, log a progress line this often (e.g. 30, 1m; default 30s; 0: never)",
    )
    _lock_option(once)
    _json(once)


def _mirror(mirror: argparse.ArgumentParser) -> None:
    mirror.add_argument("--name", help="only this copy (a name or a glob)")
    mirror.add_argument(
        "--dry-run", action="store_true", help="show what would be downloaded and deleted"
    )
    _lock_option(mirror)
    _json(mirror)


def _status(status: argparse.ArgumentParser) -> None:
    status.add_argument("--release", help="only stacks of this release (a name or a glob)")
    status.add_argument("--stack", help="only stacks with this name (a name or a glob)")
    status.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if nothing is wrong (stacks, manifests, copies, webhooks, sources), else 1 "
        "with one line per problem (README, 'status --check')",
    )
    status.add_argument(
        "--max-age",
        type=duration_arg,
        metavar="DURATION",
        help="with --check: a last successful check older than this is a problem (e.g. 2h, 3d)",
    )
    status.add_argument(
        "--max-pending-age",
        type=duration_arg,
        default=3600.0,
        metavar="DURATION",
        help="a webhook whose oldest undelivered event is older than this is a problem "
        "(default 1h)",
    )
    _json(status)


def _history(history: argparse.ArgumentParser) -> None:
    _stack_options(history)
    history.add_argument("--limit", type=positive_int, metavar="N", help="only the newest N")
    _json(history)


def _diff(diff: argparse.ArgumentParser) -> None:
    _stack_options(diff)
    diff.add_argument("from_", metavar="FROM", type=version_or_date, help=_WHEN_HELP)
    diff.add_argument("to", metavar="TO", type=version_or_date, help=_WHEN_HELP)
    _json(diff)


def _at(at: argparse.ArgumentParser) -> None:
    _stack_options(at)
    at.add_argument("when", metavar="WHEN", type=version_or_date, help=_WHEN_HELP)
    _json(at)


def _show(show: argparse.ArgumentParser) -> None:
    show.add_argument(
        "hash", metavar="HASH", help="a hash, a unique prefix of 7+ characters, or /HASH"
    )
    _json(show)


def _specs(specs: argparse.ArgumentParser) -> None:
    _stack_options(specs)
    specs.add_argument(
        "--package", metavar="P", help="only specs of this package (a name or a glob)"
    )
    _json(specs)


def _events(events: argparse.ArgumentParser) -> None:
    from mirrorsync.vocab import EVENT_TYPES

    events.add_argument(
        "--since",
        type=since_arg,
        default=0,
        metavar="ID|DATE",
        help="only ids above ID, or events from DATE on (ISO 8601, or 2h, 3d, yesterday)",
    )
    events.add_argument(
        "--until",
        type=until_arg,
        metavar="DATE",
        help="only events up to DATE (ISO 8601, or 2h, 3d, yesterday)",
    )
    events.add_argument(
        "--type", dest="types", action="append", choices=EVENT_TYPES, help="repeatable"
    )
    events.add_argument("--source", help="only events of this source (a name or a glob)")
    events.add_argument("--release", help="only events of this release (a name or a glob)")
    events.add_argument("--stack", help="only events of stacks with this name (a glob too)")
    events.add_argument(
        "--package", metavar="P", help="only events of specs of this package (a glob too)"
    )
    events.add_argument("--limit", type=positive_int, metavar="N", help="at most N events")
    events.add_argument("--reverse", action="store_true", help="newest first")
    _json(events)


def _nothing(parser: argparse.ArgumentParser) -> None:
    pass


def _help(topic: argparse.ArgumentParser) -> None:
    from mirrorsync.cli.topics import TOPICS

    topic.add_argument(
        "topic", nargs="?", choices=tuple(TOPICS), metavar="TOPIC", help=", ".join(TOPICS)
    )
    topic.add_argument(
        "--man",
        action="store_true",
        help="print the man page (roff: mirrorsync help --man > mirrorsync.1; man ./mirrorsync.1)",
    )


def _config(config_cmd: argparse.ArgumentParser) -> None:
    config_actions = config_cmd.add_subparsers(
        dest="config_command", metavar="ACTION", required=True, parser_class=Parser
    )
    check = config_actions.add_parser(
        "check",
        help="parse, validate, resolve paths and secrets, reach each source with one request",
        description="parse, validate, resolve paths and secrets, reach each source with one "
        "request; exit 0 if all pass, 2 for a local setting, 1 for a server",
    )
    common_options(check, top=False)
    _json(check)
    init = config_actions.add_parser(
        "init",
        help="write a commented starter configuration to PATH (never over a file), else stdout",
        description="write a commented starter configuration (sources, database, a mirrors: "
        "example) to PATH, or to stdout without one; an existing file is never overwritten "
        "(exit 2)",
    )
    common_options(init, top=False)
    init.add_argument("path", nargs="?", metavar="PATH", help="the file to write (or -c PATH)")


def _completion(completion: argparse.ArgumentParser) -> None:
    completion.add_argument(
        "shell", choices=("bash", "zsh", "fish"), metavar="SHELL", help="bash, zsh or fish"
    )


def _webhooks(hooks: argparse.ArgumentParser) -> None:
    actions = hooks.add_subparsers(
        dest="webhooks_command", metavar="ACTION", required=True, parser_class=Parser
    )

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        common_options(sub, top=False)
        return sub

    _json(action("list", "endpoints with pending and dead counts, last success and error"))
    retry = action("retry", "deliver everything pending now, whatever the schedule says")
    retry.add_argument(
        "--name", help="only this webhook, or a glob (also enables it again after a 410 Gone)"
    )
    retry.add_argument("--dead", action="store_true", help="also send dead deliveries again")
    _lock_option(retry)
    _json(retry)
    test = action("test", "send one signed ping and show the answer")
    test.add_argument("--name", required=True, help="webhook name (or a glob)")
    _json(test)
    replay = action("replay", "send every matching event above an id again")
    replay.add_argument("--name", required=True, help="webhook name (or a glob)")
    replay.add_argument(
        "--since",
        type=event_id,
        required=True,
        metavar="EVENT_ID",
        help="events with ids above this",
    )
    _lock_option(replay)
    _json(replay)


def _names(names: argparse.ArgumentParser) -> None:
    names.add_argument("kind", choices=NAME_KINDS)


def _forget(forget: argparse.ArgumentParser) -> None:
    forget.add_argument(
        "kind", choices=("webhook", "mirror"), metavar="KIND", help="webhook or mirror"
    )
    forget.add_argument(
        "name", metavar="NAME", help="its name (or a glob), no longer in the configuration"
    )
    _lock_option(forget)


def _db(db: argparse.ArgumentParser) -> None:
    db_actions = db.add_subparsers(
        dest="db_command", metavar="ACTION", required=True, parser_class=Parser
    )
    migrate = db_actions.add_parser(
        "migrate-to",
        help="copy the configured SQLite history into an empty PostgreSQL database",
        description="copy the configured SQLite history (every version, event with its id, "
        "pending webhook delivery, crawl and mirror state) into an empty PostgreSQL database, "
        "in one transaction; exit 73 if the target already holds a mirrorsync history",
    )
    common_options(migrate, top=False)
    migrate.add_argument(
        "url",
        metavar="URL",
        type=postgresql_url,
        help="postgresql://USER@HOST[:PORT]/DBNAME[?sslmode=...]; the password from the URL, "
        "PGPASSWORD or ~/.pgpass",
    )
    _lock_option(migrate)
    _json(migrate)


def _verify(verify: argparse.ArgumentParser) -> None:
    verify.add_argument("--source", help="only stacks of this source (a name or a glob)")
    verify.add_argument("--release", help="only stacks of this release (a name or a glob)")
    verify.add_argument("--stack", help="only stacks with this name (a name or a glob)")
    verify.add_argument(
        "--checksums", action="store_true", help="download every blob and check its digest"
    )
    verify.add_argument(
        "--mirror",
        metavar="NAME",
        help="check this local copy (config mirrors:) on disk instead: every file of its "
        "published state, and the files it does not reference",
    )
    verify.add_argument(
        "--repair",
        action="store_true",
        help="with --mirror: fetch again what is missing or damaged, delete orphans",
    )
    _json(verify)


def _serve(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8080; port 0: any free port)",
    )
    serve.add_argument(
        "--base-url",
        metavar="URL",
        help="the site's public URL, for the links in feeds (default: the request's own)",
    )
    serve.add_argument(
        "--max-age",
        type=duration_arg,
        metavar="DURATION",
        help="a stack or copy last checked longer ago is a problem (/healthz, as status --check)",
    )


def _export(export: argparse.ArgumentParser) -> None:
    kinds = export.add_subparsers(dest="what", metavar="WHAT", required=True, parser_class=Parser)
    pages = kinds.add_parser(
        "pages",
        help="cache.spack.io package pages: OUT/<release>/<package>/specs.md",
        description="cache.spack.io package pages: OUT/<release>/<package>/specs.md",
    )
    common_options(pages, top=False)
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
    pages.add_argument(
        "--clean",
        action="store_true",
        help="also remove the pages of packages no longer in the release",
    )
    _json(pages)


def _bundle(group: argparse.ArgumentParser) -> None:
    """``bundle export|import|list|show`` (cli/cmd_bundle.py): copies for air-gapped sites."""
    actions = group.add_subparsers(
        dest="bundle_command", metavar="ACTION", required=True, parser_class=Parser
    )

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(
            name, help=help_text, description=help_text
        )
        common_options(sub, top=False)
        return sub

    export = action(
        "export",
        "write a bundle of a copy's published version: what a receiver at --since lacks "
        "(default: the version exported last; everything the first time)",
    )
    export.add_argument("name", metavar="NAME", help="the copy (config mirrors:)")
    export.add_argument(
        "out", metavar="OUT", nargs="?", help="the bundle to write (a tar; OUT.000... with --split)"
    )
    since = export.add_mutually_exclusive_group()
    since.add_argument(
        "--since", type=int, metavar="VERSION", help="the copy's version the receiver holds"
    )
    since.add_argument("--full", action="store_true", help="everything: for an empty receiver")
    export.add_argument(
        "--split",
        metavar="SIZE",
        help="numbered tar volumes of at most SIZE each (e.g. 4G, 700MiB), each a whole tar",
    )
    export.add_argument("--dir", action="store_true", help="write a directory instead of a tar")
    export.add_argument(
        "--sign", metavar="KEYID", help="sign the bundle manifest with this gpg key (detached)"
    )
    export.add_argument(
        "--paths-only",
        action="store_true",
        help="print the paths the receiver lacks, one per line (for rsync); write no bundle "
        "(the export is recorded, as --since's default)",
    )
    _lock_option(export)
    _json(export)

    imp = action(
        "import",
        "check a bundle (manifest, signature, every file's size and sha256, versions) and "
        "publish it into a copy, index last; no network",
    )
    imp.add_argument("bundle", metavar="BUNDLE", help="a bundle: tar, OUT.000 volumes, directory")
    imp.add_argument(
        "dir",
        metavar="DIR",
        nargs="?",
        help="the copy's directory (default: the path of the copy --name in mirrors:)",
    )
    imp.add_argument("--name", help="the receiving copy (default: the bundle's copy name)")
    imp.add_argument("--dry-run", action="store_true", help="check everything; write nothing")
    _lock_option(imp)
    _json(imp)

    listing = action(
        "list", "the bundles exported and imported here; with BUNDLE, the files it carries"
    )
    listing.add_argument(
        "bundle", metavar="BUNDLE", nargs="?", help="list this bundle's files (reads the bundle)"
    )
    _json(listing)

    show = action("show", "what a bundle holds and which versions it joins (reads the bundle)")
    show.add_argument("bundle", metavar="BUNDLE", help="a bundle: tar, OUT.000 volumes, directory")
    show.add_argument("--files", action="store_true", help="also every file it carries")
    _json(show)


#: Every command, in the order ``--help`` lists them: (name, one-line summary, what adds
#: its own arguments, whether it reads a configuration). A summary of None: not listed.
_COMMANDS: tuple[tuple[str, str | None, Build, bool], ...] = (
    ("once", "sync every source once, then exit", _once, True),
    ("mirror", "bring the local copies (config mirrors:) up to the synced state", _mirror, True),
    ("status", "current version, size and health of every stack", _status, True),
    ("history", "versions of one stack, with +added/-removed counts", _history, True),
    ("diff", "specs added and removed between two versions or dates", _diff, True),
    ("at", "what one stack held at a version or date", _at, True),
    ("show", "where a spec hash has been, and when it came and went", _show, True),
    ("specs", "the specs one stack holds now, with sizes and manifest status", _specs, True),
    ("events", "change events in id order", _events, True),
    (
        "demo",
        "sync a bundled local mirror twice and show what changed (offline; its own "
        "configuration, in ./mirrorsync-demo)",
        _nothing,
        False,
    ),
    ("help", "a help topic: config, exit-codes, events, copies", _help, False),
    ("config", "the configuration: check it before a timer runs it", _config, True),
    (
        "completion",
        'print shell completion: eval "$(mirrorsync completion bash)"',
        _completion,
        False,
    ),
    ("webhooks", "webhook endpoints: what is pending, retry, test, replay", _webhooks, True),
    ("_names", None, _names, True),
    (
        "forget",
        "stop listing a webhook or copy that left the configuration; keep its history",
        _forget,
        True,
    ),
    ("db", "the database itself: move the history to PostgreSQL", _db, True),
    (
        "verify",
        "check that every binary the latest synced indexes list is on the mirror",
        _verify,
        True,
    ),
    (
        "serve",
        "a read-only web view of the history, with feeds, /metrics and /healthz",
        _serve,
        True,
    ),
    (
        "bundle",
        "carry a copy to a site with no network: export, import, list, show",
        _bundle,
        True,
    ),
    ("export", "write documents from the synced state", _export, True),
)
