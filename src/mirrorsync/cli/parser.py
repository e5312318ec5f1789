"""argparse as mirrorsync uses it: a usage error on one line, the terminal's width
without ``shutil``, the options every command takes, and each command's parser built
only when that command is chosen (``_LazyParsers``). The commands themselves, their
options and help, are in :mod:`mirrorsync.cli.arguments`."""

from __future__ import annotations

import argparse
import sys

from mirrorsync.choices import LOG_FORMATS, TABLE_FORMATS

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

    Build = Callable[[argparse.ArgumentParser], None]

# Built for every command and --help: nothing here imports the configuration's parser,
# the store or the error types. Each command's own parser is built only when that
# command is chosen (or for the man page and the completion scripts): ``_LazyParsers``.


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line: what is wrong, a guess at what was
    meant (``did you mean 'once'?``), and where help is: the command's own ``--help``."""

    def error(self, message: str) -> NoReturn:
        from mirrorsync.errors import EXIT_USAGE

        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's own, with the width it would take from shutil.get_terminal_size:
        # importing shutil (bz2, lzma) is a tenth of ``--help``'s start-up.
        return self.formatter_class(prog=self.prog, width=_terminal_columns() - 2)  # type: ignore[call-arg]

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is not None and value not in choices:
            from mirrorsync.vocab import did_you_mean

            names = [str(c) for c in choices if not str(c).startswith("_")]  # _names: hidden
            raise argparse.ArgumentError(
                action,
                f"invalid choice: {value!r}{did_you_mean(str(value), names)} "
                f"(choose from {', '.join(names)})",
            )

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Refuse what no parser knows here, where it was given: a command's unknown
        option points at that command's ``--help``, not the top level's."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._guess(extras)}")
        return parsed, extras

    def _guess(self, extras: list[str]) -> str:
        from mirrorsync.vocab import did_you_mean

        options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        for extra in extras:
            if extra.startswith("-"):
                guess = did_you_mean(extra.split("=", 1)[0], options)
                if guess:
                    return guess
        return ""


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, as shutil computes it (COLUMNS, else the
    terminal on stdout, else 80), without importing shutil."""
    import os

    def env(name: str) -> int:
        try:
            return int(os.environ[name])
        except (KeyError, ValueError):
            return 0

    columns = env("COLUMNS")
    if columns <= 0 or env("LINES") <= 0:
        try:
            size = os.get_terminal_size(sys.__stdout__.fileno())  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            size = os.terminal_size((80, 24))
        if columns <= 0:
            columns = size.columns or 80
    return columns


def common_options(parser: argparse.ArgumentParser, *, top: bool, config: bool = True) -> None:
    """-c/-v/-q are accepted before and after the command name (-c only where a
    configuration is read)."""
    default = None if top else argparse.SUPPRESS
    if config:
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
        help="more log output: -v debug, -vv also one line per HTTP request",
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
    parser.add_argument(
        "--format",
        choices=TABLE_FORMATS,
        default="table" if top else argparse.SUPPRESS,
        help="tables as aligned columns (table, default) or tab-separated values (tsv)",
    )
    parser.add_argument(
        "--no-headers",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="tables without title, header and rule: one line per row",
    )


class _LazyParsers(dict[str, argparse.ArgumentParser]):
    """A subcommand's name -> its parser, each built the first time it is looked up.

    ``mirrorsync --help`` lists every command from its one-line summary and builds
    no command's parser; ``mirrorsync status`` builds only ``status``'s. The man page
    and the completion scripts walk ``items()``, which builds them all, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self._builders: dict[str, Callable[[], argparse.ArgumentParser]] = {}

    def later(self, name: str, build: Callable[[], argparse.ArgumentParser]) -> None:
        self._builders[name] = build
        super().__setitem__(name, None)  # type: ignore[assignment]  # the key, in order

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        parser = super().__getitem__(name)
        if parser is None:
            parser = self._builders.pop(name)()
            super().__setitem__(name, parser)
        return parser

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def values(self) -> Any:
        return [self[name] for name in self]

    def items(self) -> Any:
        return [(name, self[name]) for name in self]


def lazy_subcommands(
    parser: argparse.ArgumentParser, dest: str, metavar: str
) -> argparse._SubParsersAction[Parser]:
    """``add_subparsers``, whose parsers are each built when first looked up."""
    action = parser.add_subparsers(dest=dest, metavar=metavar, required=True, parser_class=Parser)
    action._name_parser_map = action.choices = _LazyParsers()  # type: ignore[assignment]
    return action


def add_later(
    action: argparse._SubParsersAction[Parser],
    name: str,
    build: Build,
    help_text: str | None,
    *,
    config: bool = True,
    description: str | None = None,
    epilog: str | None = None,
) -> None:
    """Register command ``name`` as ``add_parser`` would (its line in the parent's help
    now), its parser built by ``build`` when it is first looked up."""
    if help_text is not None:
        action._choices_actions.append(action._ChoicesPseudoAction(name, (), help_text))
    prog = f"{action._prog_prefix} {name}"

    def make() -> argparse.ArgumentParser:
        sub = Parser(prog=prog, description=description, epilog=epilog)
        common_options(sub, top=False, config=config)
        build(sub)
        return sub

    lazy = action._name_parser_map
    assert isinstance(lazy, _LazyParsers)
    lazy.later(name, make)
