"""Every command's human output keeps the README's forms, through one gate (issue 30, Shape).

Each command family lives in its own ``cli/cmd_*`` module and prints nothing itself:
lines go through ``render.say``, cells through ``render.TableWriter``, and both through
``units.humane``. These tests run every command as a real process on a real history
(a fixture server, a failing webhook receiver, a local copy) and grep what a person
reads for a raw timestamp (seconds or fractions), a ``0.00s`` or a ``1 attempts``;
and they read the command modules' source for a ``print`` or a write to
``sys.stdout`` that would bypass the gate.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO, catalog_config_text, run_cli, write_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.units import humane
from receiver import Receiver, new_secret
from test_startup import _LINE, HEAVY, heavy

RAW_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")
RAW_DURATION = re.compile(r"\b\d+\.\d\ds\b")
WRONG_PLURAL = re.compile(
    r"(?<![\w.,])1 (attempt|event|spec|stack|request|blob|file|binarie|page)s\b"
)
CLI = REPO / "src" / "mirrorsync" / "cli"
ATTEMPTS_1 = (
    "http: {timeout: 5, retries: {attempts: 1, backoff_initial: 0.01, backoff_max: 0.02}}\n"
)


def _humane(text: str, what: str) -> None:
    assert not RAW_TIME.search(text), f"{what}: {text}"
    assert not RAW_DURATION.search(text), f"{what}: {text}"
    assert not WRONG_PLURAL.search(text), f"{what}: {text}"


def test_every_commands_human_output_keeps_times_to_the_minute_and_one_duration_form(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    first = [spec_node(f"lib{i}", "1.0", fake_hash(f"render:{i}")) for i in range(3)]
    build_catalog_from_specs(docroot, {"develop": {"root": first}})
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(new_secret() + "\n")
    secret_file.chmod(0o600)
    with Receiver(secret_file.read_text().strip(), status=500) as down:
        extra = (
            f"webhooks:\n  - {{name: down, url: '{down.url}', secret_file: {secret_file}}}\n"
            f"mirrors:\n  - {{name: local, path: {tmp_path / 'copy'}, source: test, "
            "release: develop}\n"
        )
        config = write_config(
            tmp_path / "c.yaml", catalog_config_text(tmp_path, server, extra=extra, http=ATTEMPTS_1)
        )
        c = ("-c", str(config))
        once = run_cli(*c, "once", cwd=tmp_path)
        assert once.returncode == 1, once.stderr  # the webhook failed; the rest synced
        _humane(once.stderr, "once")
        second = [*first[1:], spec_node("lib9", "2.0", fake_hash("render:9"))]
        build_catalog_from_specs(docroot, {"develop": {"root": second}})
        dry = run_cli(*c, "once", "--dry-run", "-v", cwd=tmp_path)
        _humane(dry.stdout + dry.stderr, "once --dry-run")
        once = run_cli(*c, "once", cwd=tmp_path)
        _humane(once.stdout + once.stderr, "once")
        stack = ("--release", "develop", "--stack", "root")
        commands = [
            ("status",),
            ("status", "--check"),
            ("events",),
            ("specs", *stack),
            ("show", str(first[1]["hash"])),
            ("history", *stack),
            ("diff", *stack, "1", "2"),
            ("at", *stack, "v1"),
            ("webhooks", "list"),
            ("mirror", "--dry-run"),
            ("mirror",),
            ("webhooks", "retry"),
        ]
        for command in commands:
            shown = run_cli(*c, *command, cwd=tmp_path)
            assert shown.returncode in (0, 1), (command, shown.stderr)
            assert shown.stdout.strip() or command[-1] in ("--check", "mirror"), command
            _humane(shown.stdout + shown.stderr, " ".join(command))
        # A status of a history with a copy and a failing webhook: still no transport,
        # delivery or sync machinery imported (issue 31, start-up).
        timed = run_cli(*c, "status", cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
        modules = {m[2] for line in timed.stderr.splitlines() if (m := _LINE.match(line))}
        assert "mirrorsync.health" in modules and heavy(modules, HEAVY) == []
        events = run_cli(*c, "events", "--json", cwd=tmp_path).stdout
        assert RAW_TIME.search(events), "JSON keeps the stored times, at full precision"


def test_the_gate_rewrites_raw_times_and_float_seconds_only() -> None:
    assert humane("since 2026-12-05T08:43:22.322470Z") == "since 2026-12-05 08:43Z"
    assert humane("answered in 0.00s") == "answered in 0ms"
    assert humane("took 12.345s.") == "took 12s."
    assert humane("after 1 attempts; 1 spec manifests, 1 binaries") == (
        "after 1 attempt; 1 spec manifest, 1 binary"
    )
    kept = "py-foo@1.25s 0.4s 3m05s 2026-12-05 08:43Z v12 11 events 0.1 specs v1 stacks 2 rows"
    assert humane(kept) == kept


def _bypasses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "print":
            found.append(f"{path.name}:{node.lineno}: print()")
        if (
            isinstance(f, ast.Attribute)
            and f.attr == "write"
            and isinstance(f.value, ast.Attribute)
            and f.value.attr in ("stdout", "stderr")
        ):
            found.append(f"{path.name}:{node.lineno}: sys.{f.value.attr}.write()")
    return found


def test_no_command_module_prints_around_the_gate() -> None:
    modules = sorted(CLI.glob("cmd_*.py"))
    assert len(modules) >= 6
    assert [b for path in modules for b in _bypasses(path)] == []
