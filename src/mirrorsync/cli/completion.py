"""``mirrorsync completion SHELL``: shell completion generated from the argument parser.

No dependency: the parser is walked once (commands, their actions, their
options and any fixed choices) and written out as a bash function, a zsh
script (the same function through zsh's ``bashcompinit``) or fish
``complete`` lines, so completion can never disagree with the parser.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")


#: The metavars of options whose value is a file name; every other value (a release,
#: a stack, a name, a number of seconds) is completed from nothing rather than from
#: the directory's files.
_FILE_METAVARS = ("PATH", "FILE")


@dataclass
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


def _walk(parser: argparse.ArgumentParser) -> _Node:
    node = _Node()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                node.commands[name] = _walk(sub)
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
    return node


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
        free = [o for o in node.takes_value if o not in node.choices]
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
    return (
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
