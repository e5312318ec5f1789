"""Migration 0015 (issue 31, storage): PostgreSQL's memberships grouped, one row per
stack, entered and left versions, the spec ids an ascending array; the view
``memberships`` shows them a row each as before.

A database made by the landed version, with churn (specs that left, one that
came back) and webhook deliveries pending, is migrated by the next run: every
query answers as before, the memberships read the same, the same events stay
pending for the same webhooks and are delivered, and later churn splits the
groups with the events and answers SQLite gives. On SQLite the migration changes
nothing, and the same history must read the same. The size it saves is asserted
in test_pg_memberships.py.
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

#: The last commit of main before migration 0015: the "landed version".
LANDED = "389ad0bbee881818aefb0021212efe10a12658ca"

#: The root stack's specs (indexes into the pool) at each state of the site; e4s
#: holds every third of them. 2 drops 0-4 and adds 60-69; 3 brings 0-2 back,
#: drops 20-24 and adds 70-74; 4 (after the migration) drops specs that entered
#: at three different versions (some of a group, all of another) and adds 75-79.
STATES: dict[int, list[int]] = {
    1: list(range(60)),
    2: list(range(5, 70)),
    3: [0, 1, 2, *range(5, 20), *range(25, 75)],
    4: [1, *range(5, 18), *range(25, 60), *range(62, 72), *range(75, 80)],
}


def _site(docroot: Path, state: int) -> list[str]:
    """The site at ``state``; the hashes of the whole pool."""
    pool = synthetic_specs(80, seed=15)
    root = [pool[i] for i in STATES[state]]
    build_catalog_from_specs(docroot, {"develop": {"root": root, "e4s": root[::3]}}, signed=False)
    return [str(n["hash"]) for n in pool]


QUERIES: tuple[tuple[str, ...], ...] = (
    ("events", "--json"),
    ("history", "--release", "develop", "--stack", "root", "--json"),
    ("at", "--release", "develop", "--stack", "root", "1", "--json"),
    ("at", "--release", "develop", "--stack", "root", "2", "--json"),
    ("diff", "--release", "develop", "--stack", "root", "1", "3", "--json"),
    ("diff", "--release", "develop", "--stack", "e4s", "2", "3", "--json"),
    ("specs", "--release", "develop", "--stack", "root", "--json"),
)


def _answers(src: Path, config: Path, hashes: list[str]) -> list[str]:
    # show: a spec's every stay, found by spec (0-4 left and 0-2 came back)
    return answers(
        src, config, (*QUERIES, *(("show", h, "--json") for h in [*hashes[:6], *hashes[20:80:9]]))
    )


MEMBERSHIPS = (
    "SELECT st.name, s.hash, m.entered, m.left FROM memberships m"
    " JOIN stacks st ON st.id = m.stack_id JOIN specs s ON s.id = m.spec_id"
)


def test_a_landed_database_with_churn_and_pending_webhooks_migrates_to_grouped_memberships(
    tmp_path: Path, docroot: Path, server: FixtureServer, backend: str
) -> None:
    landed = landed_source(tmp_path, LANDED)
    current = REPO / "src"
    database = database_value(tmp_path)
    secret = new_secret()
    (tmp_path / "hook.secret").write_text(secret)
    with Receiver(secret, status=500) as receiver:  # deliveries fail: events stay pending
        hooks = pending_hooks(tmp_path, receiver.url)
        config = tmp_path / "mirrorsync.yaml"
        config.write_text(catalog_config_text(tmp_path, server, extra=hooks))
        config.chmod(0o600)  # a PostgreSQL URL holds a password
        for state in (1, 2, 3):
            hashes = _site(docroot, state)
            done = cli(landed, config, "once")
            assert done.returncode in (0, 1), done.stderr
        old = _answers(landed, config, hashes)
        old_members = rows(database, MEMBERSHIPS)
        outbox = "SELECT webhook_id, event_id FROM webhook_outbox"
        old_outbox = rows(database, outbox)
        assert old_outbox and any(left is not None for *_, left in old_members)
        back = [r for r in old_members if r[:2] == ("root", hashes[0])]
        assert len(back) == 2  # left at 2, back at 3: two stays

        done = cli(current, config, "once")  # migrates; the site has not changed since
        assert done.returncode in (0, 1), done.stderr
        assert _answers(current, config, hashes) == old
        assert rows(database, MEMBERSHIPS) == old_members
        assert rows(database, outbox) == old_outbox
        if backend == "postgresql":
            (groups,) = rows(database, "SELECT count(*) FROM membership_groups")
            assert groups[0] < len(old_members) / 5
        else:
            assert rows(database, "PRAGMA integrity_check") == [("ok",)]

        # Churn on the migrated database: its stays close and open as SQLite's would
        # (specs of a group leave, all of another, some of one that came back).
        hashes = _site(docroot, 4)
        done = cli(current, config, "once")
        assert done.returncode in (0, 1), done.stderr
        versions = dict(rows(database, "SELECT name, version FROM stacks"))
        root = [hashes[i] for i in STATES[4]]
        wanted = {"root": set(root), "e4s": set(root[::3])}
        held = {(r[0], r[1]) for r in old_members if r[3] is None}
        expected = [
            (*r[:3], versions[r[0]]) if r[3] is None and r[1] not in wanted[r[0]] else r
            for r in old_members
        ] + [
            (st, h, versions[st], None)
            for st, hs in wanted.items()
            for h in hs
            if (st, h) not in held
        ]
        members = rows(database, MEMBERSHIPS)
        assert members == sorted(expected)
        events = json_lines(cli(current, config, "events", "--json").stdout)
        old_events = json_lines(old[0])
        assert events[: len(old_events)] == old_events
        new = events[len(old_events) :]
        gone = {(r[0], r[1]) for r in members if r[3] is not None and r not in old_members}
        came = {(r[0], r[1]) for r in members if r not in old_members and r[3] is None}
        assert {(e["stack"], e["hash"]) for e in new if e["type"] == "spec.removed"} == gone
        assert {(e["stack"], e["hash"]) for e in new if e["type"] == "spec.added"} == came
        assert len(gone) >= 10 and came

        receiver.status = 200
        done = cli(current, config, "webhooks", "retry")
        assert done.returncode == 0, done.stderr
        by_id = {e["id"]: e for e in events}
        sent = {json.dumps(e, sort_keys=True) for r in receiver.acknowledged for e in r.events}
        assert {json.dumps(by_id[i], sort_keys=True) for _, i in old_outbox} <= sent
        assert rows(database, outbox) == []
