"""Human output keeps the README's formatting rules (issue 30's "false today" 3-5).

Times in tables, messages and plain log lines are UTC to the minute (never
``2026-12-05T08:43:22.322470Z``), durations go through one formatter (never
``0.00s``), and counts agree with their nouns (``after 1 attempt``). JSON keeps
full precision. Real processes against a real fixture server and receiver.
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import catalog_config_text, run_cli, write_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from receiver import Receiver, new_secret

#: A stored timestamp as it is kept: seconds, often a fraction. Human output shows minutes.
RAW_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")
#: A duration printed by a format of its own rather than human_duration.
RAW_DURATION = re.compile(r"\b\d+\.\d\ds\b")
WRONG_PLURAL = re.compile(r"\b1 (attempt|event|spec|stack|delivery|file)s\b")

COLUMNS_80 = {"COLUMNS": "80"}
ATTEMPTS_1 = (
    "http: {timeout: 5, retries: {attempts: 1, backoff_initial: 0.01, backoff_max: 0.02}}\n"
)


def _table_lines(text: str) -> list[str]:
    """Every header and row of the tables in ``text`` (a header sits above its dashes)."""
    lines = text.splitlines()
    found: list[str] = []
    for i, line in enumerate(lines):
        if i and line and set(line) <= {"-", " "}:
            found.append(lines[i - 1])
            found.extend(row for row in _until_blank(lines[i + 1 :]))
    return found


def _until_blank(lines: list[str]) -> list[str]:
    return lines[: next((i for i, line in enumerate(lines) if not line.strip()), len(lines))]


def _human_rules_hold(text: str) -> None:
    assert not RAW_TIME.search(text), text
    assert not RAW_DURATION.search(text), text
    assert not WRONG_PLURAL.search(text), text


def test_webhook_times_durations_and_counts_follow_the_rules(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(new_secret() + "\n")
    secret_file.chmod(0o600)
    specs = [spec_node(f"lib{i}", "1.0", fake_hash(f"human:{i}")) for i in range(2)]
    build_catalog_from_specs(docroot, {"develop": {"root": specs}})
    secret = secret_file.read_text().strip()
    with Receiver(secret, status=500) as down, Receiver(secret) as up:
        hooks = (
            f"webhooks:\n  - {{name: down, url: '{down.url}', secret_file: {secret_file}}}"
            f"\n  - {{name: up, url: '{up.url}', secret_file: {secret_file}}}"
        )
        text = catalog_config_text(tmp_path, server, extra=hooks, http=ATTEMPTS_1)
        config = write_config(tmp_path / "c.yaml", text)
        once = run_cli("-c", str(config), "once", cwd=tmp_path)
        assert once.returncode == 1, once.stderr
        assert "next attempt after" in once.stderr
        _human_rules_hold(once.stderr)
        for command in ("status", "webhooks list"):
            shown = run_cli("-c", str(config), *command.split(), cwd=tmp_path, env=COLUMNS_80)
            _human_rules_hold(shown.stdout)
            rows = _table_lines(shown.stdout)
            assert any(row.startswith("down ") for row in rows), shown.stdout
            assert not any("HTTP 500" in row for row in rows), shown.stdout  # the error: below
            if command == "status":  # (webhooks list shows the URL, as long as it is)
                assert all(len(row) <= 80 for row in rows), shown.stdout
            assert "webhook down: " in shown.stdout and "HTTP 500" in shown.stdout
        status = run_cli("-c", str(config), "status", cwd=tmp_path, env=COLUMNS_80)
        assert re.search(r"^down\s.*\d{4}-\d\d-\d\d \d\d:\d\dZ", status.stdout, re.M), status.stdout
        test = run_cli("-c", str(config), "webhooks", "test", "--name", "up", cwd=tmp_path)
        assert re.search(r"with HTTP 2\d\d in \d+(ms|\.\ds|s)\b", test.stdout), test
        _human_rules_hold(test.stdout + test.stderr)


def test_a_fetch_that_failed_on_its_one_attempt_says_1_attempt(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = [spec_node("lib", "1.0", fake_hash("human:one"))]
    build_catalog_from_specs(docroot, {"develop": {"root": specs}})
    server.add_fault("*index.manifest.json", "status", status=503, times=None)
    text = catalog_config_text(tmp_path, server, http=ATTEMPTS_1)
    config = write_config(tmp_path / "c.yaml", text)
    once = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert once.returncode == 1
    assert "HTTP 503 Service Unavailable after 1 attempt" in once.stderr, once.stderr
    _human_rules_hold(once.stderr)
