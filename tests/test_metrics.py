"""Prometheus metrics: written after each run, checked against the database itself."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import QUICK_RETRIES, catalog_config_text, run_cli
from mirrorsync import __version__
from mirrorsync.config import parse_config
from mirrorsync.errors import ConfigError
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.metrics import Family, Sample, render

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

_SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$"
)
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_prometheus(text: str) -> Samples:
    """A strict reader of the text format: HELP and TYPE before each family's samples."""
    samples: Samples = {}
    typed: set[str] = set()
    helped: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped, f"HELP twice for {name}"
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("gauge", "counter") and name in helped and name not in typed
            typed.add(name)
            continue
        match = _SAMPLE_RE.match(line)
        assert match is not None, f"not a sample line: {line!r}"
        assert match["name"] in typed, f"{match['name']} has no TYPE line before it"
        labels: list[tuple[str, str]] = []
        rest = match["labels"] or ""
        while rest:
            pair = _LABEL_RE.match(rest)
            assert pair is not None, f"bad labels in {line!r}"
            value = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), pair[2])
            labels.append((pair[1], value))
            rest = rest[pair.end() :]
        key = (match["name"], tuple(labels))
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(match["value"])
    return samples


def stack_key(name: str, release: str, stack: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (
        f"mirrorsync_{name}",
        (("source", "test"), ("release", release), ("stack", stack)),
    )


def epoch(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def specs(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"{i}.0", fake_hash(f"{prefix}{i}")) for i in range(n)]


def write_config(tmp_path: Path, server: FixtureServer, textfile: Path) -> Path:
    path = tmp_path / "mirrorsync.yaml"
    metrics = f"metrics: {{textfile: {textfile}}}"
    path.write_text(
        catalog_config_text(tmp_path, server, extra=metrics, http=QUICK_RETRIES, database="m.db")
    )
    return path


def check_against_database(samples: Samples, database: Path) -> None:
    with sqlite3.connect(database) as db:
        stacks = db.execute("SELECT release, name, version, spec_count FROM stacks").fetchall()
        events = dict(db.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    assert stacks
    for release, name, version, spec_count in stacks:
        assert samples[stack_key("stack_version", release, name)] == version
        assert samples[stack_key("stack_specs", release, name)] == spec_count
    exported_stacks = {labels for (metric, labels) in samples if metric == "mirrorsync_stack_specs"}
    assert len(exported_stacks) == len(stacks)
    exported_events = {
        dict(labels)["type"]: value
        for (metric, labels), value in samples.items()
        if metric == "mirrorsync_events_total"
    }
    assert exported_events == events


def test_metrics_file_matches_the_database_and_the_run(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    textfile_dir = tmp_path / "textfile_collector"
    textfile_dir.mkdir()
    textfile = textfile_dir / "mirrorsync.prom"
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 4), "e4s": specs("b", 2)}})
    config = write_config(tmp_path, server, textfile)

    first = run_cli("-c", str(config), "once", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    samples = parse_prometheus(textfile.read_text())
    check_against_database(samples, tmp_path / "m.db")
    assert samples[("mirrorsync_last_run_success", ())] == 1
    assert samples[("mirrorsync_build_info", (("version", __version__),))] == 1
    assert samples[("mirrorsync_last_run_http_requests", ())] == report["requests"]
    assert samples[("mirrorsync_last_run_http_received_bytes", ())] == report["bytes"]
    assert samples[("mirrorsync_last_run_events", ())] == report["events"] == 1 + 2 + 6
    start = samples[("mirrorsync_last_run_start_timestamp_seconds", ())]
    assert start == pytest.approx(epoch(report["started_at"]), abs=1e-3)
    end = samples[("mirrorsync_last_run_end_timestamp_seconds", ())]
    assert end == pytest.approx(epoch(report["finished_at"]), abs=1e-3)
    assert samples[("mirrorsync_last_run_success_timestamp_seconds", ())] == end
    assert samples[("mirrorsync_last_run_duration_seconds", ())] == pytest.approx(
        report["seconds"], abs=1e-3
    )
    assert samples[("mirrorsync_last_run_stacks", (("status", "changed"),))] == 2
    assert samples[("mirrorsync_last_run_failures", (("kind", "stack"),))] == 0
    # node_exporter runs as another user; no temporary file is left for it to see.
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert [p.name for p in textfile_dir.iterdir()] == ["mirrorsync.prom"]
    inode = textfile.stat().st_ino

    # Second run: e4s changes but its blobs fail; root loses two specs.
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2), "e4s": specs("c", 1)}})
    server.add_fault("/develop/e4s/*", "status", status=500, times=None)
    second = run_cli("-c", str(config), "once", "--json", cwd=tmp_path)
    assert second.returncode == 1, second.stderr
    report2 = json.loads(second.stdout)
    samples2 = parse_prometheus(textfile.read_text())
    assert textfile.stat().st_ino != inode  # replaced by rename, not rewritten in place
    check_against_database(samples2, tmp_path / "m.db")
    assert samples2[stack_key("stack_version", "develop", "root")] == 2
    assert samples2[stack_key("stack_version", "develop", "e4s")] == 1  # kept its version
    assert samples2[stack_key("stack_failing", "develop", "e4s")] == 1
    assert samples2[stack_key("stack_failing", "develop", "root")] == 0
    assert samples2[("mirrorsync_last_run_success", ())] == 0
    assert samples2[("mirrorsync_last_run_failures", (("kind", "stack"),))] == 1
    assert samples2[("mirrorsync_last_run_http_requests", ())] == report2["requests"]
    assert samples2[("mirrorsync_last_run_start_timestamp_seconds", ())] > start
    # The last good run is still the first one.
    assert samples2[("mirrorsync_last_run_success_timestamp_seconds", ())] == end
    assert samples2[("mirrorsync_events_total", (("type", "spec.removed"),))] == 2


def test_unwritable_metrics_file_fails_the_run_after_syncing(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2)}})
    missing = tmp_path / "no-such-dir" / "mirrorsync.prom"
    config = write_config(tmp_path, server, missing)
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"mirrorsync: failed: {missing}: cannot write metrics: No such file or directory"
    )
    with sqlite3.connect(tmp_path / "m.db") as db:  # the sync itself was kept
        assert db.execute("SELECT version FROM stacks").fetchall() == [(1,)]


def test_dry_run_writes_no_metrics(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2)}})
    textfile = tmp_path / "m.prom"
    config = write_config(tmp_path, server, textfile)
    done = run_cli("-c", str(config), "once", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not textfile.exists()


def test_render_escapes_label_values_and_refuses_bad_names() -> None:
    odd = 'rel"ease\\with\nnewline'
    text = render(
        [
            Family("mirrorsync_x", "gauge", "help with \\ and\nnewline", [Sample(1.5, {"r": odd})]),
            Family("mirrorsync_y_total", "counter", "y", [Sample(3), Sample(4, {"a": "b"})]),
        ]
    )
    samples = parse_prometheus(text)
    assert samples == {
        ("mirrorsync_x", (("r", odd),)): 1.5,
        ("mirrorsync_y_total", ()): 3,
        ("mirrorsync_y_total", (("a", "b"),)): 4,
    }
    assert "# HELP mirrorsync_x help with \\\\ and\\nnewline\n" in text
    with pytest.raises(ValueError, match="metric name"):
        Family("bad-name", "gauge", "h", [])
    with pytest.raises(ValueError, match="label name"):
        Family("ok", "gauge", "h", [Sample(1, {"bad-label": "x"})])
    with pytest.raises(ValueError, match="twice"):
        render([Family("a", "gauge", "h", []), Family("a", "gauge", "h", [])])


def test_metrics_textfile_must_be_a_prom_file() -> None:
    with pytest.raises(
        ConfigError, match=r"metrics\.textfile: expected a file name ending in \.prom"
    ):
        parse_config("sources: [{name: a, kind: catalog}]\nmetrics: {textfile: /tmp/m.txt}\n")
    with pytest.raises(ConfigError, match=r"metrics\.port: unknown key"):
        parse_config("sources: [{name: a, kind: catalog}]\nmetrics: {port: 9100}\n")
    config = parse_config("sources: [{name: a, kind: catalog}]\nmetrics: {textfile: ~/m.prom}\n")
    assert config.metrics.textfile_path == Path.home() / "m.prom"


def test_webhook_backlog_is_exported(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    textfile = tmp_path / "mirrorsync.prom"
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 4), "e4s": specs("b", 2)}})
    config = write_config(tmp_path, server, textfile)
    with config.open("a") as out:  # a receiver that is down, subscribed to e4s only
        out.write(
            "webhooks:\n"
            "  - name: down\n"
            "    url: http://127.0.0.1:9/hook\n"
            "    secret_env: HOOK_SECRET\n"
            "    filter: {stacks: [e4s]}\n"
        )
    env = {"HOOK_SECRET": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="}
    done = run_cli("-c", str(config), "once", cwd=tmp_path, env=env)
    assert done.returncode == 1 and "webhook down" in done.stderr
    samples = parse_prometheus(textfile.read_text())
    with sqlite3.connect(tmp_path / "m.db") as db:
        (e4s_events,) = db.execute(
            "SELECT count(*) FROM events e JOIN stacks s ON s.id = e.stack_id WHERE s.name = 'e4s'"
        ).fetchone()
    assert e4s_events == 3  # stack.added and two spec.added
    listed = json.loads(
        run_cli("-c", str(config), "webhooks", "list", "--json", cwd=tmp_path, env=env).stdout
    )
    assert listed[0]["pending_events"] == e4s_events
    hook = (("webhook", "down"),)
    assert samples[("mirrorsync_webhook_pending_events", hook)] == e4s_events
    assert samples[("mirrorsync_webhook_dead_events", hook)] == 0
    assert samples[("mirrorsync_webhook_enabled", hook)] == 1


def test_webhooks_retry_rewrites_the_metrics_and_keeps_the_last_run(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """`webhooks retry` empties the backlog: the metrics file says so at once (before:
    only the next `once` did), and the last sync run's figures stay as `once` wrote them."""
    from receiver import Receiver, new_secret

    textfile = tmp_path / "mirrorsync.prom"
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3)}})
    config = write_config(tmp_path, server, textfile)
    base = config.read_text()
    secret = new_secret()
    hook = "webhooks: [{{name: site, url: '{}', secret_env: HOOK_SECRET}}]\n"
    config.write_text(base + hook.format("http://127.0.0.1:9/hook"))
    env = {"HOOK_SECRET": secret}
    assert run_cli("-c", str(config), "once", cwd=tmp_path, env=env).returncode == 1
    before = parse_prometheus(textfile.read_text())
    site = (("webhook", "site"),)
    assert before[("mirrorsync_webhook_pending_events", site)] == 5  # release, stack, 3 specs
    with Receiver(secret) as receiver:
        config.write_text(base + hook.format(receiver.url))
        retried = run_cli("-c", str(config), "webhooks", "retry", cwd=tmp_path, env=env)
        assert retried.returncode == 0, retried.stderr
    after = parse_prometheus(textfile.read_text())
    assert after[("mirrorsync_webhook_pending_events", site)] == 0
    assert after[("mirrorsync_build_info", (("version", __version__),))] == 1
    last_run = {k: v for k, v in before.items() if k[0].startswith("mirrorsync_last_run_")}
    assert last_run and {k: after[k] for k in last_run} == last_run
    assert {k for k in after if k[0].startswith("mirrorsync_last_run_")} == set(last_run)
