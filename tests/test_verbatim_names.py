"""Names are printed as they were written: upstream's (source, release, stack, package,
version) and the configuration's (mirror), byte for byte, whatever they look like.

Human output passes one gate (``units.humane``) that rewrites mirrorsync's own raw
figures: a stored timestamp to the minute, float seconds to ``human_duration``'s form,
``1 stacks`` to ``1 stack``. A name is not a figure: a release called
``e4s-2026-12-06T08:00:00Z`` or a stack called ``1 stacks`` that came out as
``e4s-2026-12-06 08:00Z`` or ``1 stack`` is a name nobody can type back into a command
or find upstream. Real processes on a real fixture server; the history, JSON and
tables of every command a person reads names in.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from conftest import catalog_config_text, run_cli, write_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.logformat import JsonFormatter, PlainFormatter, ScrubFilter
from mirrorsync.units import Verbatim, humane, verbatim

RELEASE = "e4s-2026-12-06T08:00:00Z"
#: Stack names that are, or hold, each form the gate rewrites.
STACKS = ("1 stacks", "2026-12-06T08:00:00Z", "12.50s", "at 2026-12-06 08:00:00 in 1.25s")
PACKAGE, VERSION = "1.25s", "12.50s"  # a file name too: the mirror copies it
MIRROR = "12.50s"  # a configuration name: letters, digits, '.', '_', '-'

RAW_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")
RAW_DURATION = re.compile(r"\b\d+\.\d\ds\b")
WRONG_PLURAL = re.compile(r"(?<![\w.,])1 (attempt|event|spec|stack|request|file)s\b")


def _without_names(text: str) -> str:
    """``text`` with every name taken out: what is left is mirrorsync's own words."""
    for name in sorted((RELEASE, *STACKS, PACKAGE, VERSION, MIRROR), key=len, reverse=True):
        text = text.replace(name, "<name>")
    return text


def _own_figures_are_human(text: str, what: str) -> None:
    assert "\x1f" not in text and "\\x1f" not in text, f"{what}: a mark left over: {text!r}"
    rest = _without_names(text)
    assert not RAW_TIME.search(rest), f"{what}: {rest}"
    assert not RAW_DURATION.search(rest), f"{what}: {rest}"
    assert not WRONG_PLURAL.search(rest), f"{what}: {rest}"


def test_upstream_and_configured_names_are_printed_verbatim(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    ml = spec_node(PACKAGE, VERSION, fake_hash("verbatim:ml"))
    lib = spec_node("lib", "1.0", fake_hash("verbatim:lib"))
    build_catalog_from_specs(docroot, {RELEASE: {s: [ml, lib] for s in STACKS}})
    copy = f"mirrors:\n  - {{name: '{MIRROR}', path: {tmp_path / 'copy'}, source: test, "
    copy += f"release: '{RELEASE}'}}\n"
    config = write_config(tmp_path / "c.yaml", catalog_config_text(tmp_path, server, extra=copy))
    c = ("-c", str(config))

    once = run_cli(*c, "once", cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    for stack in STACKS:  # the log line of each stack's outcome
        assert f"INFO mirrorsync.sync: test:{RELEASE}/{stack} changed: version 1" in once.stderr
    assert f"INFO mirrorsync.mirror: mirror {MIRROR} " in once.stderr, once.stderr
    _own_figures_are_human(once.stderr, "once")

    status = run_cli(*c, "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    rows = {line.split("  ")[0] for line in status.stdout.splitlines()}
    assert {f"{RELEASE}/{stack}" for stack in STACKS} <= rows, status.stdout
    assert MIRROR in rows, status.stdout
    _own_figures_are_human(status.stdout, "status")

    shown = json.loads(run_cli(*c, "status", "--json", cwd=tmp_path).stdout)
    assert sorted((s["release"], s["stack"]) for s in shown) == sorted(
        (RELEASE, stack) for stack in STACKS
    )

    for stack in STACKS:
        specs = run_cli(*c, "specs", "--release", RELEASE, "--stack", stack, cwd=tmp_path)
        assert specs.returncode == 0, specs.stderr
        assert f"{ml['hash']}  {PACKAGE}@{VERSION}  " in specs.stdout, specs.stdout
        history = run_cli(*c, "history", "--release", RELEASE, "--stack", stack, cwd=tmp_path)
        assert history.stdout.startswith(f"{RELEASE}/{stack}\n"), history.stdout
        _own_figures_are_human(specs.stdout + history.stdout, f"specs/history {stack}")

    events = run_cli(*c, "events", cwd=tmp_path)
    for stack in STACKS:
        assert f"  test:{RELEASE}/{stack}  " in events.stdout, events.stdout
    assert f"  test:{RELEASE}  " in events.stdout  # release.added: no stack
    assert f"  {PACKAGE}@{VERSION}\n" in events.stdout
    _own_figures_are_human(events.stdout, "events")

    show = run_cli(*c, "show", str(ml["hash"]), cwd=tmp_path)
    assert show.stdout.startswith(f"{PACKAGE}@{VERSION} {ml['hash']}  "), show.stdout
    for stack in STACKS:
        assert re.search(
            rf"^test +{re.escape(RELEASE)} +{re.escape(stack)} +v1 ", show.stdout, re.M
        )
        assert f"test:{RELEASE}/{stack}  " in show.stdout, show.stdout
    _own_figures_are_human(show.stdout, "show")

    dry = run_cli(*c, "mirror", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert f"mirror {MIRROR}: 2 binaries" in dry.stdout, dry.stdout
    _own_figures_are_human(dry.stdout, "mirror --dry-run")

    # A copy that fails: its name in the log line and in the failure line that ends the run.
    failing = "1.25s"
    broken = (
        f"  - {{name: '{failing}', path: {tmp_path / 'b'}, source: test, release: '{RELEASE}', "
    )
    broken += "stacks: [nomatch]}\n"
    write_config(config, catalog_config_text(tmp_path, server, extra=copy + broken))
    failed = run_cli(*c, "mirror", "--name", failing, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    why = f"no synced stack matching 'nomatch' in test:{RELEASE}"
    assert f"ERROR mirrorsync.mirror: mirror {failing} failed: {why}" in failed.stderr
    assert f"mirrorsync: failed: mirror {failing}: {why}" in failed.stderr, failed.stderr
    write_config(config, catalog_config_text(tmp_path, server, extra=copy))

    # JSON log lines: the message holds the names as they are, and no mark.
    build_catalog_from_specs(docroot, {RELEASE: {s: [lib] for s in STACKS}})
    again = run_cli(*c, "--log-format", "json", "once", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    messages = [json.loads(line)["message"] for line in again.stderr.splitlines()]
    for stack in STACKS:
        assert f"test:{RELEASE}/{stack} changed: version 2, 1 spec, +0 -1, " in "\n".join(
            messages
        ), messages
    assert not any("\x1f" in m for m in messages), messages


def test_the_gate_leaves_a_marked_name_and_rewrites_the_words_around_it() -> None:
    line = f"{verbatim('1 stacks')} took 0.00s since 2026-12-05T08:43:22.3Z: 1 stacks"
    assert humane(line) == "1 stacks took 0ms since 2026-12-05 08:43Z: 1 stack"
    for name in (RELEASE, *STACKS, PACKAGE):
        assert humane(f"stack {verbatim(name)}, 1 files") == f"stack {name}, 1 file"
    # Unmarked text (an error, a problem): a figure inside a URL, a path, a label or
    # quotes is part of a name, not a figure of mirrorsync's.
    inside = (
        f"GET https://host/{RELEASE}/12.50s/x: 404; see /srv/1.25s/{RELEASE}; "
        f"test:{RELEASE}/12.50s: stack '1 stacks' of release '2026-12-06T08:00:00Z'"
    )
    assert humane(inside) == inside
    assert humane("at 2026-12-05T08:43:22Z: 1 files") == "at 2026-12-05 08:43Z: 1 file"
    # A mark inside a name is part of the name; nested marks leave one name.
    assert humane(verbatim(f"{verbatim('1 stacks')}/12.50s")) == "1 stacks/12.50s"


def test_a_log_records_names_are_plain_text_to_every_handler_and_verbatim_in_its_lines() -> None:
    record = logging.LogRecord(
        "mirrorsync.sync",
        logging.INFO,
        "",
        0,
        "%s changed in %.2fs, 1 files (%s)",
        (Verbatim(f"test:{RELEASE}/1 stacks"), 2.5, "2026-12-05T08:43:22Z"),
        None,
    )
    assert record.getMessage() == (  # what any handler reads (pytest's, a library user's)
        f"test:{RELEASE}/1 stacks changed in 2.50s, 1 files (2026-12-05T08:43:22Z)"
    )
    assert PlainFormatter().format(record) == (
        f"INFO mirrorsync.sync: test:{RELEASE}/1 stacks changed in 2.5s, 1 file (2026-12-05 08:43Z)"
    )
    assert json.loads(JsonFormatter().format(record))["message"] == record.getMessage()
    # Masking a credential keeps the names' type, so the plain line still keeps them.
    secret = logging.LogRecord(
        "mirrorsync.fetch",
        logging.WARNING,
        "",
        0,
        "%s: %s failed after 1 attempts",
        (Verbatim("12.50s"), "https://user:token@host/x"),
        None,
    )
    assert ScrubFilter().filter(secret)
    assert PlainFormatter().format(secret) == (
        "WARNING mirrorsync.fetch: 12.50s: https://***@host/x failed after 1 attempt"
    )


def test_an_error_names_what_failed_as_it_was_typed(tmp_path: Path) -> None:
    """An error line (``mirrorsync: error: ...``) is its raiser's text: a name in it
    (a release glob, a stack, a file) stays as typed, however much it looks like one
    of the figures the gate rewrites. Real processes on ``mirrorsync demo``'s database."""
    demo = run_cli("demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr[-2000:]
    c = ("-c", str(tmp_path / "mirrorsync-demo" / "mirrorsync.yaml"))
    cases = {
        ("events", "--release", "r 1 stacks"): "--release r 1 stacks matches no release",
        ("specs", "--release", "develop", "--stack", "12.50s*"): "no stack develop/12.50s* in",
        ("history", "--release", RELEASE, "--stack", "1 stacks"): f"no stack {RELEASE}/1 stacks",
    }
    for args, says in cases.items():
        done = run_cli(*c, *args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(f"mirrorsync: error: {says}"), (args, done.stderr)
    missing = tmp_path / "1.25s at 2026-12-06T08:00:00Z.yaml"
    done = run_cli("-c", str(missing), "status", cwd=tmp_path)
    assert done.stderr == f"mirrorsync: error: {missing}: file not found\n", done.stderr
