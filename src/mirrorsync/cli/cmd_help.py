"""``mirrorsync help [TOPIC]``, ``help --man`` and ``config init``: the texts of
``topics`` printed, the man page built from the parser (``manpage``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mirrorsync.cli.arguments import build_parser
from mirrorsync.cli.manpage import manpage
from mirrorsync.cli.render import say
from mirrorsync.cli.topics import STARTER_CONFIG, TOPICS
from mirrorsync.errors import EXIT_OK, UsageError
from mirrorsync.vocab import did_you_mean


async def show_topic(args: argparse.Namespace) -> int:
    """``mirrorsync help [TOPIC]``: a topic, or the list of them."""
    topic = args.topic
    if args.man:
        say(manpage(build_parser()).removesuffix("\n"))
        return EXIT_OK
    if topic is None:
        say("topics (mirrorsync help TOPIC):")
        for name in TOPICS:
            say(f"  {name}")
        return EXIT_OK
    if topic not in TOPICS:
        raise UsageError(
            f"no help topic {topic!r}{did_you_mean(topic, list(TOPICS))} "
            f"(topics: {', '.join(TOPICS)})"
        )
    say(TOPICS[topic].removesuffix("\n"))
    return EXIT_OK


async def config_init(args: argparse.Namespace) -> int:
    """``mirrorsync config init [PATH]``: the starter, to PATH (never over a file) or
    stdout; ``-c PATH`` names the file as well as PATH does."""
    if args.path and args.config and args.path != args.config:
        raise UsageError(f"config init: two files named ({args.config} and {args.path}); give one")
    args.path = args.path or args.config
    if args.path is None:
        say(STARTER_CONFIG.removesuffix("\n"))
        return EXIT_OK
    path = Path(args.path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise UsageError(f"{path}: already exists; not overwritten (remove it first)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(STARTER_CONFIG)
    say(f"wrote {path}; next: mirrorsync -c {path} config check", stderr=True)
    return EXIT_OK
