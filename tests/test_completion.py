"""``mirrorsync completion SHELL``: generated from the parser, tried in a real bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from mirrorsync.cli.parser import build_parser
from mirrorsync.config import EVENT_TYPES


def complete(script: Path, *words: str) -> list[str]:
    """What bash offers for ``words`` (the last one being typed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=()\n"
        '_mirrorsync; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("completion")
    done = run_cli("completion", "bash", cwd=where)  # needs no configuration
    assert done.returncode == 0 and done.stderr == ""
    path = where / "mirrorsync.bash"
    path.write_text(done.stdout)
    return path


def test_bash_completes_commands_options_and_choices(bash_script: Path) -> None:
    commands = {a for a in build_parser()._subparsers._group_actions[0].choices}  # type: ignore[union-attr]
    assert set(complete(bash_script, "mirrorsync", "")) >= commands
    assert complete(bash_script, "mirrorsync", "ev") == ["events"]
    assert "--reverse" in complete(bash_script, "mirrorsync", "events", "--")
    assert complete(bash_script, "mirrorsync", "events", "--type", "") == list(EVENT_TYPES)
    assert sorted(complete(bash_script, "mirrorsync", "webhooks", "r")) == ["replay", "retry"]
    assert complete(bash_script, "mirrorsync", "webhooks", "list", "--j") == ["--json"]
    assert complete(bash_script, "mirrorsync", "export", "pages", "--ou") == ["--out"]
    assert complete(bash_script, "mirrorsync", "completion", "f") == ["fish"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_command(shell: str, tmp_path: Path) -> None:
    done = run_cli("completion", shell, cwd=tmp_path)
    assert done.returncode == 0
    for command in ("events", "status", "specs", "webhooks", "export"):
        assert command in done.stdout
    if shell == "fish":
        assert "complete -c mirrorsync -n '__fish_seen_subcommand_from events' -l reverse" in (
            done.stdout
        )
    program = shutil.which(shell)
    if program is not None:  # parse it with the real shell where there is one
        script = tmp_path / f"c.{shell}"
        script.write_text(done.stdout)
        check = (
            [program, "-n", str(script)]
            if shell == "zsh"
            else [program, "--no-execute", str(script)]
        )
        assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0


def test_an_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("completion", "tcsh", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
