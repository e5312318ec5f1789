"""A clock that goes wrong between runs: set back, or ahead and then corrected.

The clock is the store's (``mirrorsync.store.db.now``), replaced in-process; the
queries are asked through the CLI as real processes.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from conftest import Clock, catalog_config, catalog_config_text, run_cli, sync, write_config
from mirrorsync.config import load_config
from mirrorsync.delivery import schedule
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store import Store
from mirrorsync.store import webhooks as store_webhooks
from mirrorsync.store.location import Location
from receiver import Receiver, new_secret


def specs(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"{i}.0", fake_hash(f"{prefix}{i}")) for i in range(n)]


def test_dates_follow_version_order_when_the_clock_was_set_back(
    tmp_path: Path,
    docroot: Path,
    server: FixtureServer,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 3), "e4s": specs("b", 2)}})
    config = catalog_config(tmp_path, server, extra="    manifests: none")
    clock.at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert sync(config).exit_code == 0  # version 1 of each stack
    # Ten days back; both stacks change, so both record a version 2 dated 2026-11-10.
    clock.at = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 1), "e4s": specs("c", 1)}})
    with caplog.at_level(logging.WARNING, logger="mirrorsync.store"):
        assert sync(config).exit_code == 0
    warnings = [r.getMessage() for r in caplog.records if "clock went backwards" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once in the run, not once per stack
    assert "version 2 is recorded at 2026-11-10T10:00:00.000000Z" in warnings[0]

    config_file = write_config(
        tmp_path / "c.yaml", catalog_config_text(tmp_path, server, extra="    manifests: none")
    )

    def at(when: str) -> tuple[int, int]:
        done = run_cli(
            "-c",
            str(config_file),
            "at",
            "--release",
            "develop",
            "--stack",
            "root",
            when,
            "--json",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        return answer["version"], len(answer["specs"])

    # Before version 1 existed, version 2 cannot have: it was made from version 1.
    assert at("2026-11-15") == (0, 0)
    assert at("2026-11-20T09:59") == (0, 0)
    assert at("2026-11-20T10:00") == (2, 1)  # version 2 counts from version 1's time
    assert at("2026-11-20") == (2, 1)
    assert at("1") == (1, 3)  # by number, nothing changes

    done = run_cli(
        "-c",
        str(config_file),
        *("diff", "--release", "develop", "--stack", "root", "2026-11-15", "2026-11-21", "--json"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    diff = json.loads(done.stdout)
    assert (diff["from_version"], diff["to_version"], len(diff["added"])) == (0, 2, 1)

    # show: a spec that left in version 2 never left before it came.
    gone = str(specs("a", 3)[2]["hash"])
    done = run_cli("-c", str(config_file), "show", gone, "--json", cwd=tmp_path)
    (stay,) = json.loads(done.stdout)["intervals"]
    assert (stay["entered_version"], stay["left_version"]) == (1, 2)
    assert stay["entered_at"] == stay["left_at"] == "2026-11-20T10:00:00.000000Z"


def test_a_clock_that_ran_ahead_holds_deliveries_back_no_longer_than_the_longest_wait(
    tmp_path: Path, docroot: Path, server: FixtureServer, clock: Clock
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": specs("w", 2)}})
    secret = new_secret()
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(secret)
    real = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    with Receiver(secret, status=500) as receiver:
        hooks = (
            "    manifests: none\nwebhooks:\n"
            f"  - {{name: h, url: '{receiver.url}', secret_file: '{secret_file}'}}\n"
        )
        config_file = write_config(
            tmp_path / "c.yaml", catalog_config_text(tmp_path, server, extra=hooks)
        )
        config = load_config(str(config_file))
        clock.at = real + timedelta(days=30)  # the clock ran a month ahead
        assert sync(config).exit_code == 1  # the receiver fails: retry in a minute, by that clock
        assert next_attempt(config.database_path) == "2026-12-20T10:01:00.000000Z"

        clock.at = real  # corrected; the receiver is fine again
        receiver.status = 200
        assert sync(config).exit_code == 0
        assert receiver.acknowledged == []  # not due yet, but no longer a month away
        assert next_attempt(config.database_path) == schedule.latest_attempt(
            "2026-11-20T10:00:00.000000Z"
        )

        clock.at = real + timedelta(seconds=schedule.SCHEDULE[-1] + 1)
        assert sync(config).exit_code == 0
        assert [e["type"] for r in receiver.acknowledged for e in r.events] == [
            "release.added",
            "stack.added",
            "spec.added",
            "spec.added",
        ]


def next_attempt(path: Location) -> str | None:
    async def read() -> str | None:
        async with await Store.open_read_only(path) as store:
            row = await store_webhooks.get(store, "h")
        assert row is not None
        return row.next_attempt_at

    return anyio.run(read)
