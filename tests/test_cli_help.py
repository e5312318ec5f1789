"""A CLI that helps (issue 30): typo help, help topics, ``config init``, wording,
``-c`` where it means nothing, and completion that offers files only for files.
Every check runs ``python -m mirrorsync`` as a real process."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from mirrorsync.config import parse_config

SOURCE = "sources:\n  - name: a\n    kind: catalog\n    url: http://127.0.0.1:9/\n"


def one_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mirrorsync.yaml"
    path.write_text(text)
    return path


# --- typo help ------------------------------------------------------------------------


def test_an_unknown_command_suggests_the_closest(tmp_path: Path) -> None:
    line = one_error(run_cli("onse", cwd=tmp_path))
    assert "invalid choice: 'onse'; did you mean 'once'?" in line
    assert line.endswith("(see 'mirrorsync --help')")
    line = one_error(run_cli("config", "chek", cwd=tmp_path))
    assert "did you mean 'check'?" in line and "(see 'mirrorsync config --help')" in line
    line = one_error(run_cli("events", "--type", "spec.add", cwd=tmp_path))
    assert "did you mean 'spec.added'?" in line


def test_an_unknown_option_suggests_and_points_at_its_commands_help(tmp_path: Path) -> None:
    line = one_error(run_cli("once", "--dry-rn", cwd=tmp_path))
    assert line == (
        "mirrorsync once: error: unrecognized arguments: --dry-rn; "
        "did you mean '--dry-run'? (see 'mirrorsync once --help')"
    )
    line = one_error(run_cli("config", "check", "--jsn", cwd=tmp_path))
    assert "did you mean '--json'?" in line and "(see 'mirrorsync config check --help')" in line
    # Nothing close: no guess, still the command's own help.
    line = one_error(run_cli("status", "--zzzzzz", cwd=tmp_path))
    assert "did you mean" not in line and "(see 'mirrorsync status --help')" in line


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        (
            SOURCE + "    manifest: all\n",
            "sources[0].manifest: unknown key; did you mean 'manifests'?",
        ),
        (SOURCE + "mirors: []\n", "mirors: unknown key; did you mean 'mirrors'?"),
        (
            SOURCE + "http:\n  retries:\n    atempts: 3\n",
            "http.retries.atempts: unknown key; did you mean 'attempts'?",
        ),
        (
            SOURCE + "webhooks:\n  - name: w\n    url: http://x/\n    filter:\n      stack: [a]\n",
            "webhooks[0].filter.stack: unknown key; did you mean 'stacks'?",
        ),
    ],
)
def test_an_unknown_config_key_suggests_the_closest(
    tmp_path: Path, yaml: str, expected: str
) -> None:
    config = write(tmp_path, yaml)
    line = one_error(run_cli("-c", str(config), "config", "check", cwd=tmp_path))
    assert line == f"mirrorsync: error: {config}: {expected}"


def test_an_unknown_key_far_from_any_gets_no_guess(tmp_path: Path) -> None:
    config = write(tmp_path, SOURCE + "    zzzzqqq: 1\n")
    line = one_error(run_cli("-c", str(config), "status", cwd=tmp_path))
    assert line.endswith("sources[0].zzzzqqq: unknown key")


# --- help topics and --help -----------------------------------------------------------


def test_help_config_names_sources_and_database(tmp_path: Path) -> None:
    done = run_cli("help", "config", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert "sources" in done.stdout and "database" in done.stdout
    for topic in ("exit-codes", "events", "copies"):
        shown = run_cli("help", topic, cwd=tmp_path)
        assert shown.returncode == 0 and shown.stdout.strip()
    listing = run_cli("help", cwd=tmp_path)
    assert listing.stdout.split()[-4:] == ["config", "exit-codes", "events", "copies"]
    line = one_error(run_cli("help", "confg", cwd=tmp_path))
    assert "did you mean 'config'?" in line


def test_help_shows_examples_and_the_exit_code_table_of_help_exit_codes(tmp_path: Path) -> None:
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "examples:" in done.stdout and "mirrorsync config init" in done.stdout
    table = run_cli("help", "exit-codes", cwd=tmp_path).stdout
    assert table in done.stdout  # one text, not two that drift apart
    for code in ("0", "1", "2", "65", "66", "69", "73", "75"):
        assert any(line.split()[:1] == [code] for line in table.splitlines()), code
    # A command's --help says where the examples and the exit codes are.
    assert "mirrorsync help exit-codes" in run_cli("status", "--help", cwd=tmp_path).stdout


# --- config init ----------------------------------------------------------------------


def test_config_init_writes_a_starter_the_parser_accepts(tmp_path: Path) -> None:
    path = tmp_path / "new.yaml"
    done = run_cli("config", "init", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = path.read_text()
    assert "\nsources:" in text and "\ndatabase:" in text and "# mirrors:" in text
    config = parse_config(text, str(path))
    assert [s.name for s in config.sources] == ["spack-public"]
    # config check gets past parsing (what fails is only the source, exit 1, not 2);
    # the source pointed at a closed local port, so no network is needed.
    local = tmp_path / "local.yaml"
    public = "https://binaries.spack.io/cache_spack_io_index.json"
    local.write_text(text.replace(public, "http://127.0.0.1:9/"))
    check = run_cli("-c", str(local), "config", "check", cwd=tmp_path, timeout=120)
    assert check.returncode in (0, 1), check.stderr
    assert "ok      database:" in check.stdout
    # Without a PATH: the same text on stdout.
    printed = run_cli("config", "init", cwd=tmp_path)
    assert printed.returncode == 0 and printed.stdout == text


def test_config_init_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("precious\n")
    line = one_error(run_cli("config", "init", str(path), cwd=tmp_path))
    assert "already exists" in line
    assert path.read_text() == "precious\n"
    # -c names the file too.
    one_error(run_cli("-c", str(path), "config", "init", cwd=tmp_path))
    assert path.read_text() == "precious\n"


# --- wording --------------------------------------------------------------------------


def test_a_list_field_given_one_value_asks_for_a_list_of_names(tmp_path: Path) -> None:
    config = write(tmp_path, SOURCE + "    releases: develop\n")
    line = one_error(run_cli("-c", str(config), "config", "check", cwd=tmp_path))
    assert line.endswith("sources[0].releases: expected a list of names, got str")
    assert "array" not in line and "null" not in line


def test_no_configuration_file_has_one_prefix(tmp_path: Path) -> None:
    line = one_error(run_cli("status", cwd=tmp_path))
    assert line.startswith("mirrorsync: error: no configuration file: give -c PATH")
    assert line.count("mirrorsync:") == 1


def test_a_number_of_seconds_is_asked_for_clearly(tmp_path: Path) -> None:
    line = one_error(run_cli("once", "--wait", "abc", cwd=tmp_path))
    assert "invalid float value" not in line and "--wait" in line


def test_a_lock_under_a_file_says_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    config = write(tmp_path, "database: f/x.db\n" + SOURCE)
    line = one_error(run_cli("-c", str(config), "once", cwd=tmp_path), code=1)
    assert "cannot open lock file: Not a directory" in line and "File exists" not in line


def test_postgres_connection_refused_reads_as_sentences(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write(tmp_path, f"database: postgresql://127.0.0.1:{port}/x\n" + SOURCE)
    line = one_error(run_cli("-c", str(config), "status", cwd=tmp_path), code=69)
    assert "Connection refused. Is the server running" in line


# --- -c where no configuration is read ------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("demo", "-c", "x.yaml"),
        ("-c", "x.yaml", "demo"),
        ("completion", "bash", "-c", "x.yaml"),
        ("-c", "x.yaml", "completion", "bash"),
    ],
)
def test_demo_and_completion_refuse_c(tmp_path: Path, argv: tuple[str, ...]) -> None:
    one_error(run_cli(*argv, cwd=tmp_path))
    assert not (tmp_path / "mirrorsync-demo").exists()


# --- completion: file names only where a file is meant --------------------------------


def complete(script: Path, cwd: Path, *words: str) -> list[str]:
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=()\n"
        '_mirrorsync; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, timeout=30, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return sorted(line for line in done.stdout.splitlines() if line)


def test_completion_offers_files_only_for_files(tmp_path: Path) -> None:
    done = run_cli("completion", "bash", cwd=tmp_path)
    script = tmp_path / "c.bash"
    script.write_text(done.stdout)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("")
    for words in (
        ("status", "--release", "a"),
        ("status", "--stack", "a"),
        ("mirror", "--name", "a"),
        ("once", "--source", "a"),
        ("once", "--wait", "a"),
    ):
        assert complete(script, tmp_path, "mirrorsync", *words) == [], words
    assert complete(script, tmp_path, "mirrorsync", "export", "pages", "--out", "a") == ["adir"]
    assert complete(script, tmp_path, "mirrorsync", "status", "-c", "a") == ["adir", "afile"]
    fish = run_cli("completion", "fish", cwd=tmp_path).stdout
    assert "__fish_seen_subcommand_from status' -l release -x" in fish


def test_help_man_is_a_man_page_of_every_command_and_the_exit_codes(tmp_path: Path) -> None:
    done = run_cli("help", "--man", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    page = done.stdout
    assert page.startswith(".TH MIRRORSYNC 1")
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "EXAMPLES", "EXIT STATUS"):
        assert f"\n.SH {section}\n" in page
    for command in ("once", "mirror", "status", "config init", "webhooks retry", "help"):
        assert f"\n.SS {command}\n" in page, command
    groff = shutil.which("groff")
    if groff is not None:  # rendered by the real formatter, without a warning
        source = tmp_path / "mirrorsync.1"
        source.write_text(page)
        shown = subprocess.run(
            [groff, "-man", "-Tutf8", "-ww", str(source)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        rendered = re.sub(r".\x08", "", shown.stdout)
        assert "75  another run holds the lock" in rendered


def test_the_demo_suggests_config_init_which_works_from_anywhere(tmp_path: Path) -> None:
    done = run_cli("demo", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "config init mirrorsync.yaml" in done.stdout
    assert "cp config/" not in done.stdout  # config/ is in the source tree only
