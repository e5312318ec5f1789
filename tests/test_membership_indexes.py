"""Migration 0014 (issue 31, storage): the partial index of current memberships goes.

A database made by the landed version, with churn and webhook deliveries
pending, is migrated by the next run: every query answers as before, the same
events stay pending for the same webhooks and are delivered, and the index is
gone, on SQLite and PostgreSQL. The bytes per membership it saves are asserted
at the issue's size in test_derived_events.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO, catalog_config_text, database_value, json_lines
from landed import answers, cli, landed_source, pending_hooks, rows
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import synthetic_specs
from receiver import Receiver, new_secret

#: The last commit of main before migration 0014: the "landed version".
LANDED = "6442e9eb3e6aaaae52b1e1e5e7f1a30f950ed5df"


def _site(docroot: Path, state: int) -> list[str]:
    """Two stacks; state 2 churns both (5 specs gone, 10 new). The hashes listed."""
    pool = synthetic_specs(80, seed=14)
    root = pool[:60] if state == 1 else pool[5:70]
    build_catalog_from_specs(docroot, {"develop": {"root": root, "e4s": root[::3]}}, signed=False)
    return [str(n["hash"]) for n in pool[:70]]


#: Read commands whose answers the migration must not change.
QUERIES: tuple[tuple[str, ...], ...] = (
    ("events", "--json"),
    ("history", "--release", "develop", "--stack", "root", "--json"),
    ("at", "--release", "develop", "--stack", "root", "1", "--json"),
    ("diff", "--release", "develop", "--stack", "e4s", "1", "2", "--json"),
    ("specs", "--release", "develop", "--stack", "root", "--json"),
)


def _answers(src: Path, config: Path, hashes: list[str]) -> list[str]:
    return answers(src, config, (*QUERIES, *(("show", h, "--json") for h in hashes[2::30])))


def test_a_landed_database_with_churn_and_pending_webhooks_migrates_with_the_same_answers(
    tmp_path: Path, docroot: Path, server: FixtureServer, backend: str
) -> None:
    landed = landed_source(tmp_path, LANDED)
    current = REPO / "src"
    database = database_value(tmp_path)
    index = (
        "SELECT indexname FROM pg_indexes WHERE indexname = 'memberships_current'"
        if backend == "postgresql"
        else "SELECT name FROM sqlite_master WHERE name = 'memberships_current'"
    )
    secret = new_secret()
    (tmp_path / "hook.secret").write_text(secret)
    with Receiver(secret, status=500) as receiver:  # deliveries fail: events stay pending
        hooks = pending_hooks(tmp_path, receiver.url)
        config = tmp_path / "mirrorsync.yaml"
        config.write_text(catalog_config_text(tmp_path, server, extra=hooks))
        config.chmod(0o600)  # a PostgreSQL URL holds a password
        for state in (1, 2):
            hashes = _site(docroot, state)
            done = cli(landed, config, "once")
            assert done.returncode in (0, 1), done.stderr
        old = _answers(landed, config, hashes)
        outbox = "SELECT webhook_id, event_id FROM webhook_outbox"
        old_outbox = rows(database, outbox)
        assert old_outbox and rows(database, index)  # pending; the landed schema
        kinds = {e["type"] for e in json_lines(old[0])}
        assert {"spec.added", "spec.removed", "stack.added"} <= kinds

        done = cli(current, config, "once")  # migrates; the site has not changed since
        assert done.returncode in (0, 1), done.stderr
        assert rows(database, index) == []
        assert _answers(current, config, hashes) == old
        assert rows(database, outbox) == old_outbox
        if backend == "sqlite":
            assert rows(database, "PRAGMA integrity_check") == [("ok",)]

        receiver.status = 200
        done = cli(current, config, "webhooks", "retry")
        assert done.returncode == 0, done.stderr
        by_id = {e["id"]: e for e in json_lines(old[0])}
        sent = [e for r in receiver.acknowledged for e in r.events]
        assert sorted(json.dumps(e, sort_keys=True) for e in sent) == sorted(
            json.dumps(by_id[i], sort_keys=True) for _, i in old_outbox
        )
        assert rows(database, outbox) == []
