"""Tables for scripts, and tables that say what they count (issue 30).

Every test runs ``python -m mirrorsync`` as a real process against a real SQLite
file written through the store's own functions (``bigdb``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bigdb import build_history
from conftest import run_cli

RELEASE = ("--release", "develop", "--stack", "root")
#: A release name holding a tab, a newline and a backslash: a cell that must not split.
NASTY = "dev\tel\nop\\x"


def write_config(tmp_path: Path, database: Path, extra: str = "") -> Path:
    config = tmp_path / "mirrorsync.yaml"
    config.write_text(
        f"database: {database}\nsources: [{{name: test, kind: catalog, manifests: none}}]\n" + extra
    )
    return config


@pytest.fixture(scope="module")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """develop/root: 3 versions of 20 specs; develop/e4s: 3 x 5; a release with a tab."""
    path = tmp_path_factory.mktemp("tables") / "state.db"
    build_history(
        path,
        stacks={("develop", "root"): 20, ("develop", "e4s"): 5, (NASTY, "root"): 1},
        versions=3,
    )
    return path


@pytest.fixture
def config(tmp_path: Path, history_db: Path) -> Path:
    return write_config(tmp_path, history_db)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", str(config), *args, cwd=config.parent)


TABLES = [
    ("status",),
    ("events",),
    ("events", "--reverse", "--limit", "5"),
    ("history", *RELEASE),
    ("specs", *RELEASE),
    ("at", *RELEASE, "2"),
    ("diff", *RELEASE, "1", "3"),
]


def _rows_of(table: str) -> list[str]:
    """The rows of a human table: every line after its rule of dashes."""
    lines = table.splitlines()
    rule = next(i for i, line in enumerate(lines) if line and set(line) <= {"-", " "})
    return lines[rule + 1 :]


@pytest.mark.parametrize("command", TABLES, ids=lambda c: " ".join(c))
def test_no_headers_prints_the_rows_alone(config: Path, command: tuple[str, ...]) -> None:
    """`--no-headers`: the same rows as the table, one line each; no title, header or rule."""
    table = cli(config, *command)
    assert table.returncode == 0, table.stderr
    rows = _rows_of(table.stdout)
    assert rows
    for placement in ((*command, "--no-headers"), ("--no-headers", *command)):
        bare = cli(config, *placement)
        assert bare.returncode == 0, bare.stderr
        assert bare.stdout.splitlines() == rows
        assert not any(line and set(line) <= {"-", " "} for line in bare.stdout.splitlines())


@pytest.mark.parametrize("command", TABLES, ids=lambda c: " ".join(c))
def test_tsv_is_a_header_line_then_one_line_per_row(config: Path, command: tuple[str, ...]) -> None:
    """`--format tsv`: a header line, then each row with exactly as many cells; no title,
    no rule, no padding; `--no-headers` drops the header line."""
    table = cli(config, *command)
    tsv = cli(config, *command, "--format", "tsv")
    assert tsv.returncode == 0, tsv.stderr
    lines = tsv.stdout.splitlines()
    header = lines[0].split("\t")
    assert "-" * 3 not in tsv.stdout.split("\t")[0]
    assert len(lines) - 1 == len(_rows_of(table.stdout))
    for line in lines[1:]:
        cells = line.split("\t")
        assert len(cells) == len(header), line
        assert all(cell == cell.strip() for cell in cells), line
    bare = cli(config, "--format", "tsv", "--no-headers", *command)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.splitlines() == lines[1:]


def test_a_tab_or_newline_in_a_value_cannot_break_a_tsv_row(config: Path) -> None:
    """A release named with a tab, a newline and a backslash: one row, one cell, and the
    escaping undone gives the name back."""
    tsv = cli(config, "events", "--format", "tsv", "--no-headers", "--type", "stack.added")
    assert tsv.returncode == 0, tsv.stderr
    rows = [line.split("\t") for line in tsv.stdout.splitlines()]
    assert len(rows) == 3  # develop/root, develop/e4s and the nasty one
    assert all(len(row) == 7 for row in rows)
    stacks = [row[3] for row in rows]
    nasty = next(s for s in stacks if "\\x09" in s)
    assert nasty == "test:dev\\x09el\\x0aop\\\\x/root"
    undone = nasty.replace("\\x09", "\t").replace("\\x0a", "\n").replace("\\\\", "\\")
    assert undone == f"test:{NASTY}/root"


def test_tsv_with_json_is_a_usage_error(config: Path) -> None:
    both = cli(config, "events", "--json", "--format", "tsv")
    assert both.returncode == 2
    assert "--format tsv and --json" in both.stderr
    unknown = cli(config, "events", "--format", "csv")
    assert unknown.returncode == 2
    assert "invalid choice" in unknown.stderr
