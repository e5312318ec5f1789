"""``mirrorsync help --man``: a man page (roff) written from the parser and the help
topics, so it says what ``--help`` and ``help TOPIC`` say.

``mirrorsync help --man > mirrorsync.1; man ./mirrorsync.1``
"""

from __future__ import annotations

import argparse

from mirrorsync import __version__
from mirrorsync.cli.topics import EXAMPLES, EXIT_CODES, TOPICS


def _roff(text: str) -> str:
    """Plain text as roff: backslashes and leading dots and quotes cannot be requests."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _preformatted(text: str) -> str:
    return ".nf\n" + _roff(text.rstrip("\n")) + "\n.fi\n"


#: Options every command takes: described once, under OPTIONS.
_COMMON = ("config", "verbose", "quiet", "log_format", "version")


def _options(parser: argparse.ArgumentParser, *, common: bool) -> list[str]:
    out = []
    for option in parser._actions:
        if (
            option.help in (None, argparse.SUPPRESS)
            or isinstance(option, argparse._SubParsersAction | argparse._HelpAction)
            or (option.dest in _COMMON) != common
        ):
            continue
        names = ", ".join(option.option_strings) or str(option.metavar or option.dest)
        if option.option_strings and option.nargs != 0:
            names += f" {option.metavar or option.dest.upper()}"
        out.append(f".TP\n.B {_roff(names)}\n{_roff(option.help or '')}\n")
    return out


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    """One section per command: its description, then its own options."""
    out: list[str] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            if name.startswith("_"):  # _names: for the completion scripts only
                continue
            path = f"{prefix} {name}".strip()
            out.append(f".SS {_roff(path)}\n{_roff(sub.description or '')}\n")
            out += _options(sub, common=False)
            out += _commands(sub, path)
    return out


def manpage(parser: argparse.ArgumentParser) -> str:
    topics = "".join(
        f".SS help {name}\n{_preformatted(text)}"
        for name, text in TOPICS.items()
        if name != "exit-codes"
    )
    return (
        f'.TH MIRRORSYNC 1 "" "mirrorsync {__version__}" "User Commands"\n'
        ".SH NAME\nmirrorsync \\- " + _roff(parser.description or "") + "\n"
        ".SH SYNOPSIS\n.B mirrorsync\n[\\-c PATH] [\\-v] [\\-q] COMMAND [OPTIONS]\n"
        ".SH OPTIONS\nAccepted before and after the command name.\n"
        + "".join(_options(parser, common=True))
        + ".SH COMMANDS\n"
        + "".join(_commands(parser, ""))
        + ".SH EXAMPLES\n"
        + _preformatted(EXAMPLES.format(topics=", ".join(TOPICS)).split("\n", 1)[1])
        + ".SH EXIT STATUS\n"
        + _preformatted(EXIT_CODES.split("\n", 1)[1])
        + ".SH TOPICS\n"
        + topics
        + ".SH SEE ALSO\nThe README of mirrorsync; mirrorsync help TOPIC.\n"
    )
