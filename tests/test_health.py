"""Honest monitoring: ``status --check`` prints one documented line per problem
(README, "status --check") and exits 1 on any, 0 on a healthy system, on SQLite
and PostgreSQL alike. Every failure here is real: a failing server, manifests
signed (and tampered) with real gpg, a crawl stopped by SIGINT, a corrupt blob,
webhook receivers answering 410 and 500. The last test is the model alone, from
rows, for what no other branch has landed yet (specs a copy left out).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import (
    QUICK_RETRIES,
    REPO,
    catalog_config_text,
    database_value,
    json_lines,
    run_cli,
    write_config,
)
from mirrorsync import health
from mirrorsync.config import parse_config
from mirrorsync.fixture.build import build_catalog_from_specs, write_catalog, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import gpg_clearsign
from mirrorsync.fixture.specs import Node, fake_hash, spec_node
from mirrorsync.store.health import ManifestCounts
from mirrorsync.store.mirrors import LeftOut, MirrorStatus
from mirrorsync.store.overview import StackStatus
from mirrorsync.store.webhooks import WebhookSummary
from receiver import Receiver, new_secret

BOTH = pytest.mark.usefixtures("backend")  # once on SQLite, once on PostgreSQL


def nodes(prefix: str, n: int) -> list[Node]:
    return [spec_node(f"lib{prefix}{i}", "1.0", fake_hash(f"health:{prefix}{i}")) for i in range(n)]


def config_file(tmp_path: Path, server: FixtureServer, extra: str = "") -> Path:
    text = catalog_config_text(tmp_path, server, extra=extra, http=QUICK_RETRIES)
    return write_config(tmp_path / "c.yaml", text)


def check(config: Path, *args: str) -> tuple[int, list[str]]:
    done = run_cli("-c", str(config), "status", "--check", *args, cwd=config.parent)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.splitlines()


def once(config: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", str(config), "once", cwd=config.parent)


@BOTH
def test_a_healthy_system_exits_0_and_its_metrics_say_healthy(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("a", 3), "e4s": nodes("b", 2)}})
    prom = tmp_path / "m.prom"
    config = config_file(tmp_path, server, f"metrics: {{textfile: {prom}}}")
    assert once(config).returncode == 0
    assert check(config) == (0, [])
    assert check(config, "--json") == (0, [])
    metrics = prom.read_text()
    assert "mirrorsync_healthy 1\n" in metrics
    assert 'mirrorsync_problems{kind="stack_sync_failed"} 0\n' in metrics
    assert 'mirrorsync_problems{kind="no_database"} 0\n' in metrics


def test_no_database_yet_is_a_problem_on_both_backends(tmp_path: Path, backend: str) -> None:
    """A missing SQLite file and an empty PostgreSQL database answer alike: exit 1."""
    config = tmp_path / "c.yaml"
    config.write_text(
        f"database: {database_value(tmp_path)}\nsources: [{{name: test, kind: catalog}}]\n"
    )
    code, lines = check(config)
    assert code == 1
    (line,) = lines
    assert line.endswith(": no database yet: nothing has been synced")
    assert line.startswith("postgresql://***@" if backend == "postgresql" else str(tmp_path))
    ((problem,),) = [json_lines("\n".join(check(config, "--json")[1]))]
    assert problem["kind"] == "no_database"
    # Plain status still says there is nothing to show (exit 66).
    plain = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert plain.returncode == 66 and "no database yet" in plain.stderr


@BOTH
def test_a_source_never_synced_and_a_first_sync_that_failed(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("a", 2)}})
    config = config_file(tmp_path, server)
    server.add_fault("/cache_spack_io_index.json", "status", status=500, times=None)
    assert once(config).returncode == 1
    code, lines = check(config)
    assert (code, lines) == (
        1,
        [
            "source test: never synced: no stack of it in the database"
            " (the log of 'mirrorsync once' says why)"
        ],
    )
    # The catalogue answers, the stack's index does not: a first sync that failed
    # is a failure, not a stack that is gone.
    server.clear_faults()
    server.add_fault("/develop/*", "status", status=500, times=None)
    assert once(config).returncode == 1
    code, lines = check(config)
    assert code == 1
    (line,) = lines
    assert line.startswith("test:develop/root: first sync failed: ")
    assert "HTTP 500" in line
    table = run_cli("-c", str(config), "status", cwd=tmp_path).stdout
    assert re.search(r"^develop/root\s+0\s+0\s+.*\bfailed$", table, re.M), table
    server.clear_faults()
    assert once(config).returncode == 0
    assert check(config) == (0, [])


@BOTH
def test_manifest_failures_are_counted_by_kind(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path
) -> None:
    specs = nodes("s", 5)
    infos = build_catalog_from_specs(docroot, {"develop": {"root": specs}}, gpg_home=gpg_home)
    files = infos["develop"]["root"].spec_files
    # 1: a size changed under a good signature (gpg: bad signature).
    tampered = docroot / files[specs[0]["hash"]]
    text = tampered.read_text()
    size = re.search(r'"contentLength":(\d+)', text)
    assert size is not None
    tampered.write_text(text.replace(size[0], f'"contentLength":{int(size[1]) + 1}', 1))
    # 2: no manifest at all; 3: a good signature over text that is not a manifest.
    (docroot / files[specs[1]["hash"]]).unlink()
    (docroot / files[specs[2]["hash"]]).write_bytes(gpg_clearsign(gpg_home, "not a manifest\n"))
    config = config_file(tmp_path, server, "    verify_signatures: true")
    assert once(config).returncode == 1
    code, lines = check(config)
    assert code == 1
    assert [re.sub(r" \(first: .*\)$", "", line) for line in lines] == [
        "test:develop/root: 1 spec manifest with a bad signature",
        "test:develop/root: 1 spec manifest missing",
        "test:develop/root: 1 spec manifest malformed",
    ]
    assert all(" (first: " in line for line in lines)
    kinds = [p["kind"] for p in json_lines("\n".join(check(config, "--json")[1]))]
    assert kinds == ["manifests_bad_signature", "manifests_missing", "manifests_malformed"]
    table = run_cli("-c", str(config), "status", cwd=tmp_path).stdout
    assert re.search(r"^develop/root\s.*manifests failing$", table, re.M), table


@BOTH
def test_a_crawl_stopped_by_sigint_is_incomplete_until_resumed(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("c", 40)}})
    config = config_file(tmp_path, server)
    server.add_fault("*.spec.manifest.json", "delay", delay=0.4, times=None)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MIRRORSYNC_CONFIG", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync", "-c", str(config), "once"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while server.count("*.spec.manifest.json") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, stderr
    code, lines = check(config)
    assert code == 1
    (line,) = lines
    assert re.fullmatch(
        r"test:develop/root: spec manifest crawl incomplete: (\d+) of 40 spec manifests never"
        r" fetched \(the next 'mirrorsync once' resumes it\)",
        line,
    ), line
    server.clear_faults()
    assert once(config).returncode == 0
    assert check(config) == (0, [])


def _tarball(node: Node) -> bytes:
    return (str(node["hash"]) * 40).encode()


@BOTH
def test_a_failed_copy_is_a_problem(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    specs = nodes("m", 3)
    root = docroot / "develop"
    write_v3_mirror(root, specs, tarball=_tarball)
    write_catalog(docroot, {"develop": {"root": "develop"}})
    copy = (
        f"mirrors:\n  - {{name: local, path: {tmp_path / 'copy'}, source: test, release: develop}}"
    )
    prom = tmp_path / "m.prom"
    config = config_file(tmp_path, server, f"{copy}\nmetrics: {{textfile: {prom}}}")
    assert once(config).returncode == 0, "first copy"
    assert check(config) == (0, [])
    extra = nodes("n", 1)
    info = write_v3_mirror(root, [*specs, *extra], tarball=_tarball)
    write_catalog(docroot, {"develop": {"root": "develop"}})
    blob = docroot / "develop" / info.tarballs[extra[0]["hash"]]
    blob.write_bytes(bytes(b ^ 0xFF for b in blob.read_bytes()))  # same length, wrong digest
    assert once(config).returncode == 1
    code, lines = check(config)
    assert code == 1
    line, left = lines  # the failure, then the spec it left out and why
    assert line.startswith("mirror local: last publish failed: ")
    assert line.endswith(" (it keeps its last published state)")
    bad = extra[0]
    assert left.startswith(
        f"mirror local: left out {bad['name']}/{str(bad['hash'])[:7]}: corrupt blob"
    )
    table = run_cli("-c", str(config), "status", cwd=tmp_path).stdout
    assert re.search(r"^local\s.*\bfailed$", table, re.M), table
    metrics = prom.read_text()
    assert "mirrorsync_healthy 0\n" in metrics
    assert 'mirrorsync_problems{kind="copy_failed"} 1\n' in metrics
    assert 'mirrorsync_problems{kind="copy_left_out"} 1\n' in metrics


def _hook(name: str, url: str, secret: Path, max_age: str) -> str:
    return f"  - {{name: {name}, url: '{url}', secret_file: {secret}, max_age: {max_age}}}"


@BOTH
def test_a_disabled_webhook_late_and_dead_events(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    secret = new_secret()
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("w", 2)}})
    with Receiver(secret, status=410) as gone, Receiver(secret, status=500) as down:
        hooks = "webhooks:\n" + "\n".join(
            [_hook("gone", gone.url, secret_file, "1d"), _hook("down", down.url, secret_file, "2s")]
        )
        config = config_file(tmp_path, server, hooks)
        assert once(config).returncode == 1
        started = time.monotonic()
        code, lines = check(config)
        assert code == 1
        (disabled,) = lines  # the pending events of 'down' are young yet
        assert disabled.startswith("webhook gone: disabled: ")
        assert disabled.endswith(
            "(4 events pending); 'mirrorsync webhooks retry --name gone' enables it again"
        )
        time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
        code, lines = check(config, "--max-pending-age", "1s")
        assert code == 1 and lines[1] == disabled
        assert re.fullmatch(
            r"webhook down: 4 events pending, the oldest from \S+ \S+Z \(\S+ ago, more than"
            r" 1\.0s\); last error: .*HTTP 500.*",
            lines[0],
        ), lines[0]
        time.sleep(max(0.0, 2.1 - (time.monotonic() - started)))
        retried = run_cli("-c", str(config), "webhooks", "retry", cwd=tmp_path)
        assert "Traceback" not in retried.stderr
        code, lines = check(config)
        assert code == 1 and lines[1] == disabled
        assert re.fullmatch(
            r"webhook down: 4 events in 1 delivery are dead \(oldest from \S+ \S+Z\);"
            r" 'mirrorsync webhooks retry --name down --dead' sends them again",
            lines[0],
        ), lines[0]
        kinds = [p["kind"] for p in json_lines("\n".join(check(config, "--json")[1]))]
        assert kinds == ["webhook_dead", "webhook_disabled"]


# -- the model from rows alone ------------------------------------------------------


def test_the_model_names_each_left_out_spec_and_decides_states_from_rows() -> None:
    """Left-out specs come from the copy branch's table; the model's part is here."""
    config = parse_config(
        "database: /nowhere/state.db\n"
        "sources: [{name: test, kind: catalog}]\n"
        "mirrors: [{name: local, path: /nowhere/copy, source: test, release: develop}]\n",
        "c.yaml",
    )
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)

    def at(hours: float) -> str:
        return (now - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def stack(name: str, **kw: object) -> StackStatus:
        row: dict[str, object] = dict(
            source="test", release="develop", stack=name, present=True, version=3,
            spec_count=2, layout="v3", last_checked=at(1), last_changed=at(5), last_error=None,
        )  # fmt: skip
        row.update(kw)
        return StackStatus(**row)  # type: ignore[arg-type]

    rows = [
        stack("ok"),
        stack("gone", present=False),  # retired by the catalogue: history, not a problem
        stack("old", last_checked=at(30)),
        stack("busy", syncing="host-1"),  # a crawl under way is not incomplete
        stack("new", present=False, version=0, spec_count=0, last_checked=None),
    ]
    counts = {
        ("test", "develop", "ok"): ManifestCounts(2, {"ok": 2}),
        ("test", "develop", "old"): ManifestCounts(2, {"ok": 2}),
        ("test", "develop", "busy"): ManifestCounts(2, {"ok": 1, "unfetched": 1}),
    }
    copy = MirrorStatus("local", "/nowhere/copy", "test", "develop", 2, 5, 100, at(1), at(1), None)
    stray = MirrorStatus("stray", "/x", "test", "develop", 0, 0, 0, None, None, "boom")
    left = [
        LeftOut("a" * 32, "zlib", "bad signature"),
        LeftOut("b" * 32, "python", "needs zlib/aaaaaaa, left out"),
    ]
    hook = WebhookSummary(
        "old-hook", "http://x", False, False, "410", 5, 1, 0, 0, None, 0, None, None, None, None
    )
    h = health.assess(
        "db", config, now, rows, counts, [copy, stray], {"local": left}, [hook], max_age=86400
    )
    assert [p.line for p in h.problems] == [
        "test:develop/old: last checked 1d06h ago (2026-11-19 06:00Z), more than 1d00h",
        "test:develop/new: never synced",
        "mirror local: left out zlib/aaaaaaa: bad signature",
        "mirror local: left out python/bbbbbbb: needs zlib/aaaaaaa, left out",
    ]
    assert [s.state for s in h.stacks] == ["ok", "gone", "stale", "syncing", "never synced"]
    assert [(c.row.name, c.state) for c in h.copies] == [
        ("local", "partial"),
        ("stray", "not in config"),
    ]
    assert [w.state for w in h.webhooks] == ["not in config"]
    assert not h.healthy and h.counts()["copy_left_out"] == 2
    assert h.counts()["stack_stale"] == 1 and sum(h.counts().values()) == 4
    # Without left-out specs and limits, the copy is simply ok.
    quiet = health.assess("db", config, now, rows[:2], counts, [copy], {}, [], max_age=None)
    assert quiet.healthy and [c.state for c in quiet.copies] == ["ok"]


def test_the_readme_documents_every_kind() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("### status --check: every problem it reports", 1)[1].split("\n### ")[0]
    documented = re.findall(r"^\| `([a-z_]+)` \| `", section, re.M)
    assert documented == list(health.KINDS)
