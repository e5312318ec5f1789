"""``mirrorsync completion SHELL``: generated from the parser, tried in a real bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, catalog_config_text, run_cli, write_config
from mirrorsync.cli.arguments import build_parser
from mirrorsync.config import EVENT_TYPES
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from receiver import new_secret


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
    commands.discard("_names")  # the scripts' own helper, not offered
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


def test_names_complete_from_the_configuration_and_the_database(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """--release, --stack, --source and a copy's or webhook's --name complete from what
    the configuration and the history hold (issue 30, missing), with the -c typed."""
    specs = [spec_node("zlib", "1.3", fake_hash("complete:1"))]
    build_catalog_from_specs(docroot, {"develop": {"root": specs, "e4s": specs}})
    config = write_config(tmp_path / "site.yaml", catalog_config_text(tmp_path, server))
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    config.write_text(
        config.read_text()
        + f"mirrors: [{{name: local-copy, path: {tmp_path / 'copy'}, source: test,"
        " release: develop}]\n"
        f"webhooks: [{{name: team-chat, url: 'http://127.0.0.1:9/h', secret: '{new_secret()}'}}]\n"
    )
    config.chmod(0o600)  # its inline webhook secret is read only from a private file
    bin_dir = tmp_path / "bin"  # the script runs the mirrorsync it completes for
    bin_dir.mkdir()
    wrapper = bin_dir / "mirrorsync"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH={REPO / "src"} exec {sys.executable} -m mirrorsync "$@"\n'
    )
    wrapper.chmod(0o755)
    script = tmp_path / "mirrorsync.bash"
    script.write_text(run_cli("completion", "bash", cwd=tmp_path).stdout)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("MIRRORSYNC_CONFIG", None)

    def offered(*words: str) -> list[str]:
        quoted = " ".join(f"'{w}'" for w in ("mirrorsync", "-c", str(config), *words))
        program = (
            f"source {script}\n"
            f"COMP_WORDS=({quoted}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=()\n"
            '_mirrorsync; printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        done = subprocess.run(
            ["bash", "-c", program], capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == 0, done.stderr
        return sorted(line for line in done.stdout.splitlines() if line)

    assert offered("status", "--release", "") == ["develop"]
    assert offered("history", "--release", "develop", "--stack", "") == ["e4s", "root"]
    assert offered("events", "--stack", "e") == ["e4s"]
    assert offered("once", "--source", "") == ["test"]
    assert offered("mirror", "--name", "") == ["local-copy"]
    assert offered("webhooks", "retry", "--name", "t") == ["team-chat"]
    assert offered("verify", "--mirror", "") == ["local-copy"]
    fish = run_cli("completion", "fish", cwd=tmp_path).stdout
    assert "-l release -x -a '(mirrorsync _names release 2>/dev/null)'" in fish


def test_names_offers_no_name_the_shell_would_expand(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """bash's ``compgen -W`` runs a ``$(...)`` in a word it is given: a stack name from
    upstream that the shell would expand or split is left out of ``_names``; the others
    are printed as stored (not in a timestamp's human form)."""
    specs = [spec_node("zlib", "1.3", fake_hash("complete:2"))]
    stacks = {"root": specs, "x$(id)": specs, "2026-01-01T00:00:00": specs}
    build_catalog_from_specs(docroot, {"develop": stacks})
    config = write_config(tmp_path / "site.yaml", catalog_config_text(tmp_path, server))
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    shown = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert shown.returncode == 0 and "x$(id)" in shown.stdout  # the stack was synced
    done = run_cli("-c", str(config), "_names", "stack", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["2026-01-01T00:00:00", "root"]  # as stored
