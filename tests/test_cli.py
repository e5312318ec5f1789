"""The CLI as a real process: exit codes, one-line errors, machine output."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import EVENT_FIELDS, QUICK_RETRIES, catalog_config_text, json_lines, run_cli
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node


def write_catalog_config(tmp_path: Path, server: FixtureServer) -> Path:
    path = tmp_path / "mirrorsync.yaml"
    path.write_text(catalog_config_text(tmp_path, server, http=QUICK_RETRIES, database="cli.db"))
    return path


def specs(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"{i}.0", fake_hash(f"{prefix}{i}")) for i in range(n)]


def test_once_then_queries(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3), "e4s": specs("b", 2)}})
    config = write_catalog_config(tmp_path, server)

    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # Not at a terminal: nothing on stdout; one log line per stack on stderr.
    assert done.stdout == ""
    stack_lines = [line for line in done.stderr.splitlines() if " changed: " in line]
    assert sorted(line.split(" changed: ")[0].split()[-1] for line in stack_lines) == [
        "test:develop/e4s",
        "test:develop/root",
    ]
    assert "Traceback" not in done.stderr

    events = run_cli("events", "-c", str(config), "--json", cwd=tmp_path)
    assert events.returncode == 0, events.stderr
    rows = json_lines(events.stdout)
    assert len(rows) == 1 + 2 + 5  # release.added, stack.added x2, spec.added x5
    assert all(set(r) == EVENT_FIELDS for r in rows)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    only_specs = json_lines(
        run_cli(
            "-c",
            str(config),
            "events",
            "--type",
            "spec.added",
            "--since",
            "2",
            "--json",
            cwd=tmp_path,
        ).stdout
    )
    assert {r["type"] for r in only_specs} == {"spec.added"} and all(
        r["id"] > 2 for r in only_specs
    )

    status = json.loads(run_cli("-c", str(config), "status", "--json", cwd=tmp_path).stdout)
    assert {(s["release"], s["stack"], s["version"], s["spec_count"]) for s in status} == {
        ("develop", "root", 1, 3),
        ("develop", "e4s", 1, 2),
    }
    human = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert human.returncode == 0 and "e4s" in human.stdout

    # MIRRORSYNC_CONFIG is honoured when -c is absent.
    via_env = run_cli("status", "--json", cwd=tmp_path, env={"MIRRORSYNC_CONFIG": str(config)})
    assert via_env.returncode == 0 and json.loads(via_env.stdout) == status


def test_failed_stack_exits_1_naming_it_and_keeps_the_rest(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3), "e4s": specs("b", 2)}})
    server.add_fault("/develop/e4s/*", "status", status=500, times=None)
    config = write_catalog_config(tmp_path, server)
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 1
    failed = [line for line in done.stderr.splitlines() if line.startswith("mirrorsync: failed:")]
    assert len(failed) == 1
    assert (
        "test:develop/e4s" in failed[0]
        and "HTTP 500" in failed[0]
        and "after 2 attempts" in failed[0]
    )
    assert "Traceback" not in done.stderr
    status = json.loads(run_cli("-c", str(config), "status", "--json", cwd=tmp_path).stdout)
    by_stack = {s["stack"]: s for s in status}
    assert by_stack["root"]["version"] == 1 and by_stack["root"]["last_error"] is None
    assert by_stack["e4s"]["version"] == 0 and "HTTP 500" in by_stack["e4s"]["last_error"]


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{name: a, kind: catalog}]\nhttp: {concurrency: many}\n")
    done = run_cli("-c", str(bad), "once", cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"mirrorsync: error: {bad}: http.concurrency: expected int, got str"
    )


def test_no_config_anywhere_exits_2(tmp_path: Path) -> None:
    done = run_cli("status", cwd=tmp_path)
    assert done.returncode == 2
    assert "no configuration file" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_unreachable_catalogue_exits_1_naming_the_url(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"database: {tmp_path / 'x.db'}\n"
        "sources: [{name: gone, kind: catalog, url: 'http://127.0.0.1:9/cache_spack_io_index.json'}]\n"
        "http: {timeout: 2, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}\n"
    )
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 1
    assert (
        "source gone: http://127.0.0.1:9/cache_spack_io_index.json: connection failed"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_queries_before_any_sync_and_bad_arguments(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"database: {tmp_path / 'none.db'}\nsources: [{{name: a, kind: catalog}}]\n")
    done = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert done.returncode == 66 and "no database yet" in done.stderr
    assert not (tmp_path / "none.db").exists()
    bad_hash = run_cli("-c", str(config), "show", "NOT-A-HASH", cwd=tmp_path)
    assert bad_hash.returncode == 2 and "is not a spec hash" in bad_hash.stderr
    usage = run_cli("history", cwd=tmp_path)
    assert usage.returncode == 2 and "--release" in usage.stderr


def test_dry_run_keeps_nothing(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3)}})
    config = write_catalog_config(tmp_path, server)
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 1)}})
    dry = run_cli("-c", str(config), "once", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True
    assert [(s["stack"], s["removed"]) for s in report["stacks"]] == [("root", 2)]
    events = json_lines(run_cli("-c", str(config), "events", "--json", cwd=tmp_path).stdout)
    assert not any(e["type"] == "spec.removed" for e in events)


def test_a_failed_catalogue_shows_in_status(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """Its stacks could not be checked: status says so, status --check fails, and the
    next good run clears it."""
    build_catalog_from_specs(docroot, {"develop": {"root": [spec_node("z", "1", fake_hash("z"))]}})
    config = tmp_path / "c.yaml"
    config.write_text(
        catalog_config_text(tmp_path, server, extra="    manifests: none", http=QUICK_RETRIES)
    )
    server.add_fault("/cache_spack_io_index.json", "status", status=500, times=None)
    # A first run that syncs nothing leaves nothing to show: not an empty table and 0.
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 1
    empty = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert (empty.returncode, empty.stdout) == (66, "")
    assert empty.stderr == (
        f"mirrorsync: error: no stack synced yet in {tmp_path / 'state.db'}: the runs so far "
        "synced none (their log says why); run 'mirrorsync once'\n"
    )
    server.clear_faults()
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    server.add_fault("/cache_spack_io_index.json", "status", status=500, times=None)
    failed = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert failed.returncode == 1
    error = f"{server.url}/cache_spack_io_index.json: HTTP 500 Internal Server Error"
    status = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert status.returncode == 0
    assert any(
        line.startswith("develop/root") and line.rstrip().endswith("failed")
        for line in status.stdout.splitlines()
    ), status.stdout
    # The catalogue's failure is its source's: one line, not one per stack.
    line = f"source test: catalogue failing: {error} after 2 attempts"
    assert line in status.stdout.splitlines()
    check = run_cli("-c", str(config), "status", "--check", cwd=tmp_path)
    assert check.returncode == 1
    assert check.stdout == f"{line}\n"

    server.clear_faults()
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    assert run_cli("-c", str(config), "status", "--check", cwd=tmp_path).returncode == 0
