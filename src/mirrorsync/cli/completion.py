"""``mirrorsync completion SHELL``: shell completion generated from the argument parser.

No dependency: the parser is walked once (commands, their actions, their
options and any fixed choices) and written out as a bash function, a zsh
script (the same function through zsh's ``bashcompinit``) or fish
``complete`` lines, so completion can never disagree with the parser.

Options that take a name (``--release``, ``--stack``, ``--source``, a copy's or a
webhook's ``--name``) complete from the configuration and the database: the
script runs ``mirrorsync _names KIND`` (with the ``-c PATH`` typed on the line, if
any), which prints those names one a line, and nothing if it cannot read them.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from mirrorsync.errors import EXIT_OK
from mirrorsync.records import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (each TAB: _names)
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from mirrorsync.location import ReadLocation
    from mirrorsync.store import Store

SHELLS = ("bash", "zsh", "fish")


#: The metavars of options whose value is a file name; every other value (a release,
#: a stack, a name, a number of seconds) is completed from nothing rather than from
#: the directory's files.
_FILE_METAVARS = ("PATH", "FILE")


@record
class _Node:
    """One command level: its option strings, option choices and subcommands."""

    options: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)  # option -> values
    takes_value: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)  # options whose value is a file
    directories: set[str] = field(default_factory=set)  # options whose value is a directory
    helps: dict[str, str] = field(default_factory=dict)  # option or command -> help
    commands: dict[str, _Node] = field(default_factory=dict)
    positional: list[str] = field(default_factory=list)  # fixed values of positionals
    names: dict[str, str] = field(default_factory=dict)  # option -> kind of name it takes


#: A name ``_names`` prints: bash's ``compgen -W`` expands each word it is given
#: (``$(...)``, backquotes, ``$VAR``, a leading ``~``) and splits on blanks, so a
#: release or stack name from upstream outside this set is left out, never offered.
_COMPLETABLE = re.compile(r"[A-Za-z0-9_.+@:,=/%-]{1,200}")

#: Options whose value is a name, by the kind ``mirrorsync _names`` lists; ``--name``
#: depends on the command (a copy for ``mirror``, a webhook for ``webhooks ...``).
_NAME_OPTIONS = {"--release": "release", "--stack": "stack", "--source": "source"}


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> _Node:
    node = _Node()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                if name.startswith("_"):  # _names: for these scripts, not for people
                    continue
                node.commands[name] = _walk(sub, (*path, name))
                node.helps[name] = helps.get(name, "")
            continue
        if not action.option_strings and action.choices:
            node.positional += [str(c) for c in action.choices]
        for option in action.option_strings:
            node.options.append(option)
            node.helps[option] = (action.help or "").replace("%(default)s", str(action.default))
            if action.nargs != 0:
                node.takes_value.add(option)
                if action.metavar == "DIR":
                    node.directories.add(option)
                elif action.metavar in _FILE_METAVARS:
                    node.files.add(option)
            if action.choices:
                node.choices[option] = [str(c) for c in action.choices]
            kind = _NAME_OPTIONS.get(option)
            if option == "--name" or option == "--mirror":
                kind = "webhook" if path[:1] == ("webhooks",) else "mirror"
            if kind and action.nargs != 0 and not action.choices:
                node.names[option] = kind
    return node


def names_now(args: argparse.Namespace) -> int | None:
    """:func:`names` of a SQLite database, read with no event loop (each TAB pays the
    start-up: store/readonly.py); None for a PostgreSQL one (the CLI runs :func:`names`)."""
    from mirrorsync.store import readonly

    return readonly.run(_names(args, readonly.opened, loop_free=True))


async def names(args: argparse.Namespace) -> int:
    """``mirrorsync _names KIND``: the names a value of that kind can take, one a line,
    from the configuration (sources, copies, webhooks) and the database (releases,
    stacks, sources synced); nothing, and exit 0, if either cannot be read."""
    from mirrorsync.store import Store

    code = await _names(args, Store.open_read_only)
    assert code is not None
    return code


async def _names(
    args: argparse.Namespace,
    opener: Callable[[ReadLocation], Awaitable[Store]],
    *,
    loop_free: bool = False,
) -> int | None:
    """:func:`names` with ``opener``; ``loop_free``: None for a database that needs the
    event loop (PostgreSQL), before anything is printed. The configuration is read as
    ``status`` reads it: from its compiled cache when nothing it was made from changed."""
    import os

    from mirrorsync.config_cache import load_status_config
    from mirrorsync.errors import MirrorsyncError
    from mirrorsync.location import PostgresUrl

    found: set[str] = set()
    try:
        config = load_status_config(args.config)
        if loop_free and isinstance(config.database_path, PostgresUrl):
            return None
        if args.kind == "source":
            found.update(s.name for s in config.sources)
        elif args.kind == "mirror":
            found.update(m.name for m in config.mirrors)
        elif args.kind == "webhook":
            found.update(config.webhooks)
        database = config.database_path
        if args.kind in ("release", "stack", "source") and (
            isinstance(database, PostgresUrl) or os.path.exists(database)  # noqa: ASYNC240 - one stat
        ):
            from mirrorsync.store import overview  # status's readers, not the history's

            async with await opener(database) as store:
                for row in await overview.status(store):
                    found.add(
                        {"release": row.release, "stack": row.stack}.get(args.kind, row.source)
                    )
    except (MirrorsyncError, OSError):
        pass  # completion says nothing rather than an error in the middle of a line
    # As they are: not through say's human forms, which would turn a stack named like
    # a timestamp into another name.
    sys.stdout.write("".join(f"{n}\n" for n in sorted(found) if _COMPLETABLE.fullmatch(n)))
    return EXIT_OK


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    tree = _walk(parser)
    prog = parser.prog
    if shell == "fish":
        return _fish(prog, tree)
    body = _bash(prog, tree)
    if shell == "zsh":
        return (
            f'#compdef {prog}\n# zsh completion for {prog}: eval "$({prog} completion zsh)"\n'
            "autoload -U +X bashcompinit && bashcompinit\n" + body
        )
    return f'# bash completion for {prog}: eval "$({prog} completion bash)"\n' + body


def _paths(node: _Node, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], _Node]]:
    found = [(path, node)]
    for name, sub in node.commands.items():
        found += _paths(sub, (*path, name))
    return found


def _bash(prog: str, tree: _Node) -> str:
    func = "_" + prog.replace("-", "_")
    cases = []
    for path, node in _paths(tree):
        key = " ".join(path)
        words = sorted(node.commands) + node.positional + node.options
        value_cases = "".join(
            f"            {shlex.quote(opt)}) COMPREPLY=($(compgen -W "
            f'{shlex.quote(" ".join(values))} -- "$cur")); return;;\n'
            for opt, values in node.choices.items()
        )
        for opt, name_kind in sorted(node.names.items()):
            value_cases += (
                f"            {shlex.quote(opt)}) COMPREPLY=($(compgen -W "
                f'"$(_mirrorsync_names {name_kind})" -- "$cur")); return;;\n'
            )
        free = [o for o in node.takes_value if o not in node.choices and o not in node.names]
        for kind, reply in (
            (node.files, '($(compgen -f -- "$cur"))'),
            (node.directories, '($(compgen -d -- "$cur"))'),
            (set(free) - node.files - node.directories, "()"),  # a name: nothing to offer
        ):
            chosen = sorted(o for o in free if o in kind)
            if chosen:
                value_cases += (
                    f"            {'|'.join(shlex.quote(o) for o in chosen)}) "
                    f"COMPREPLY={reply}; return;;\n"
                )
        cases.append(
            f"        {shlex.quote(key)})\n"
            f'            case "$prev" in\n{value_cases}            esac\n'
            f'            COMPREPLY=($(compgen -W {shlex.quote(" ".join(words))} -- "$cur"));;\n'
        )
    commands = sorted({name for path, node in _paths(tree) for name in node.commands})
    names = (  # the names a value can take, from the -c typed on the line if any
        "_mirrorsync_names() {\n"
        "    local config=() i\n"
        "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
        '        case "${COMP_WORDS[i]}" in -c|--config) config=(-c "${COMP_WORDS[i+1]}");; esac\n'
        "    done\n"
        '    "${COMP_WORDS[0]}" _names "$1" "${config[@]}" 2>/dev/null\n'
        "}\n"
    )
    return names + (
        f"{func}() {{\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"\n'
        '    local path="" word i\n'
        "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
        '        word="${COMP_WORDS[i]}"\n'
        f'        case "$word" in {"|".join(commands)}) '
        '[[ -z "$path" ]] && path="$word" || path="$path $word";; esac\n'
        "    done\n"
        '    case "$path" in\n' + "".join(cases) + "    esac\n"
        "}\n"
        f"complete -F {func} {prog}\n"
    )


def _fish(prog: str, tree: _Node) -> str:
    lines = [
        f"# fish completion for {prog}: {prog} completion fish | source",
        f"complete -c {prog} -f",
    ]
    for path, node in _paths(tree):
        if path:
            condition = f"__fish_seen_subcommand_from {path[-1]}"
            if len(path) > 1:
                condition = f"__fish_seen_subcommand_from {path[-2]}; and {condition}"
        else:
            condition = "__fish_use_subcommand"
        for name in node.positional:
            lines.append(f"complete -c {prog} -n {shlex.quote(condition)} -a {shlex.quote(name)}")
        for name in sorted(node.commands):
            lines.append(
                f"complete -c {prog} -n {shlex.quote(condition)} -a {shlex.quote(name)}"
                f" -d {shlex.quote(node.helps.get(name, ''))}"
            )
        for option in node.options:
            flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
            extra = ""
            if option in node.choices:
                extra = f" -x -a {shlex.quote(' '.join(node.choices[option]))}"
            elif option in node.names:
                extra = f" -x -a {shlex.quote(f'({prog} _names {node.names[option]} 2>/dev/null)')}"
            elif option in node.files:
                extra = " -r -F"
            elif option in node.directories:
                extra = " -x -a '(__fish_complete_directories)'"
            elif option in node.takes_value:
                extra = " -x"  # a name or a number: no file names
            lines.append(
                f"complete -c {prog} -n {shlex.quote(condition)} {flag}{extra}"
                f" -d {shlex.quote(node.helps.get(option, '')[:60])}"
            )
    return "\n".join(lines) + "\n"
