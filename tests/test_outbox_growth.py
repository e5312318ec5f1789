"""The webhook outbox stays bounded: delivered and dead batches are purged after
their retention, and the backlog is reported by status and the metrics."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from conftest import Clock, catalog_config_text, run_cli, sync, write_config
from dbstate import sqlite_file
from mirrorsync import metrics
from mirrorsync.config import Config, load_config, parse_config
from mirrorsync.errors import ConfigError
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from receiver import Receiver, new_secret

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def specs(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"{i}.0", fake_hash(f"{prefix}{i}")) for i in range(n)]


def config_for(tmp_path: Path, server: FixtureServer, url: str, secret: str, **keys: str) -> Config:
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(secret)
    options = "".join(f", {k}: {v}" for k, v in keys.items())
    extra = (
        "    manifests: none\n"
        f"metrics: {{textfile: {tmp_path / 'mirrorsync.prom'}}}\n"
        "webhooks:\n"
        f"  - {{name: h, url: '{url}', secret_file: '{secret_file}'{options}}}\n"
    )
    path = write_config(tmp_path / "c.yaml", catalog_config_text(tmp_path, server, extra=extra))
    return load_config(str(path))


def outbox(config: Config) -> dict[str, int]:
    """Rows per table and delivery state, read straight from the file."""
    with contextlib.closing(sqlite3.connect(sqlite_file(config.database_path))) as conn:
        counts = dict(
            conn.execute(
                "SELECT 'deliveries ' || state, count(*) FROM webhook_deliveries GROUP BY state"
            ).fetchall()
        )
        (counts["outbox rows"],) = conn.execute("SELECT count(*) FROM webhook_outbox").fetchone()
    return counts


def test_delivered_batches_are_purged_after_keep_delivered(
    tmp_path: Path, docroot: Path, server: FixtureServer, clock: Clock
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2)}})
    secret = new_secret()
    with Receiver(secret) as receiver:
        config = config_for(tmp_path, server, receiver.url, secret, keep_delivered="1d")
        clock.at = T0
        assert sync(config).exit_code == 0
        assert len(receiver.acknowledged) == 1
        assert outbox(config) == {"deliveries delivered": 1, "outbox rows": 0}
        clock.at = T0 + DAY - timedelta(seconds=1)
        assert sync(config).exit_code == 0
        assert outbox(config) == {"deliveries delivered": 1, "outbox rows": 0}  # kept a day
        clock.at = T0 + DAY + timedelta(seconds=1)
        assert sync(config).exit_code == 0
        assert outbox(config) == {"outbox rows": 0}


def test_with_a_dead_endpoint_dead_batches_expire_after_keep_dead(
    tmp_path: Path, docroot: Path, server: FixtureServer, clock: Clock
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2)}})
    dead_url = "http://127.0.0.1:9/hook"  # nothing listens: connection refused
    config = config_for(tmp_path, server, dead_url, new_secret(), max_age="1h", keep_dead="1d")
    clock.at = T0
    assert sync(config).exit_code == 1  # 4 events pending
    assert outbox(config) == {"deliveries pending": 1, "outbox rows": 4}

    clock.at = T0 + timedelta(hours=2)  # due again; the first 4 are now past max_age
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3)}})  # +1 event
    assert sync(config).exit_code == 1
    assert outbox(config) == {"deliveries dead": 1, "outbox rows": 5}
    status = run_cli("-c", config.path, "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "4 events in 1 delivery are dead" in status.stderr
    # Its row in the webhooks table (the problems above it name "webhook h: ...").
    row = next(line for line in status.stdout.splitlines() if line.startswith("h "))
    assert "2026-11-20 12:00Z" in row  # the oldest pending event, to the minute
    report = sync(config)  # not due: the metrics report the backlog
    anyio.run(metrics.export, config, report)
    prom = (tmp_path / "mirrorsync.prom").read_text()
    assert 'mirrorsync_webhook_pending_events{webhook="h"} 1' in prom
    assert 'mirrorsync_webhook_dead_events{webhook="h"} 4' in prom
    oldest = next(
        line.split()[-1]
        for line in prom.splitlines()
        if line.startswith('mirrorsync_webhook_oldest_pending_event_timestamp_seconds{webhook="h"}')
    )
    assert float(oldest) == (T0 + timedelta(hours=2)).timestamp()

    # A day after the first batch died, it expires; the second (dead since) stays.
    clock.at = T0 + timedelta(hours=2) + DAY + timedelta(seconds=1)
    assert sync(config).exit_code == 1
    assert outbox(config) == {"deliveries dead": 1, "outbox rows": 1}
    clock.at += DAY + timedelta(hours=7)
    assert sync(config).exit_code == 0  # nothing left to send, so nothing failed
    assert outbox(config) == {"outbox rows": 0}  # nothing stays forever


@pytest.mark.parametrize("value", ["0", ".inf", ".nan", "-1", "forever"])
@pytest.mark.parametrize("key", ["keep_delivered", "keep_dead"])
def test_retention_settings_are_validated(tmp_path: Path, key: str, value: str) -> None:
    text = (
        "sources: [{name: s, kind: mirror, url: 'https://example.org/'}]\n"
        "webhooks:\n"
        f"  - {{name: h, url: 'https://hooks.example.org/', secret_env: X, {key}: {value}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, str(tmp_path / "m.yaml"))
    # A number out of range is told its range (config.RANGES); other text the forms.
    expected = "a number above 0 and at most" if value != "forever" else "seconds or a duration"
    assert f"webhooks[0].{key}: expected {expected}" in str(caught.value)
