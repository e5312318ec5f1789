"""history, diff and point-in-time queries agree with each other and with what was served."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from conftest import database_value, run_cli, sync
from mirrorsync.config import parse_config
from mirrorsync.fixture.build import write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store import Store, names, queries

# Six states of one stack: each step adds and removes a different number of specs.
POOL = [spec_node(f"pkg{i % 7}", f"{i}.0", fake_hash(f"h{i}")) for i in range(40)]
STATES = [
    list(range(0, 10)),
    list(range(0, 12)),  # +2
    list(range(3, 12)),  # -3
    [*list(range(3, 12)), 20, 21, 22, 0],  # +4, and 0 comes back
    [*list(range(5, 12)), 20, 21, 22, 0, 30],  # -2 +1
    [0, 30, 31],  # a big drop
]


@pytest.mark.usefixtures("backend")
def test_history_diff_and_point_in_time_agree(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config_path = tmp_path / "mirrorsync.yaml"
    config_path.write_text(
        f"database: {database_value(tmp_path)}\n"
        f"sources: [{{name: site, kind: mirror, url: '{server.url}/m', release: rel, stack: main}}]\n"
    )
    config = parse_config(config_path.read_text(), str(config_path))
    truth: dict[int, set[str]] = {0: set()}
    for version, state in enumerate(STATES, start=1):
        write_v3_mirror(docroot / "m", [POOL[i] for i in state])
        report = sync(config)
        assert report.exit_code == 0, report.failures
        assert report.stacks[0].version == version
        truth[version] = {str(POOL[i]["hash"]) for i in state}

    async def check() -> list[queries.VersionRow]:
        async with await Store.open(config.database_path, create=False) as store:
            stack = await names.find_stack(store, "rel", "main")
            rows = await queries.history(store, stack)
            at = {v: {s.hash for s in await queries.members_at(store, stack, v)} for v in truth}
            assert at == truth
            for a in truth:
                for b in truth:
                    d = await queries.diff(store, stack, a, b)
                    assert {s.hash for s in d.added} == truth[b] - truth[a]
                    assert {s.hash for s in d.removed} == truth[a] - truth[b]
            for row in rows:
                d = await queries.diff(store, stack, row.version - 1, row.version)
                assert (row.added, row.removed, row.spec_count) == (
                    len(d.added),
                    len(d.removed),
                    len(truth[row.version]),
                )
                # The instant a version was made resolves to that version.
                assert await queries.resolve_version(store, stack, row.created_at) == row.version
            assert await queries.resolve_version(store, stack, "1999-01-01") == 0
            assert await queries.resolve_version(store, stack, "2999-01-01") == len(STATES)
            return rows

    rows = anyio.run(check)
    assert [r.version for r in rows] == [1, 2, 3, 4, 5, 6]

    # The CLI, as a real process, tells the same story.
    def cli(*args: str) -> object:
        done = run_cli("-c", str(config_path), *args, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    history = cli("history", "--release", "rel", "--stack", "main")
    assert [(h["version"], h["added"], h["removed"]) for h in history] == [  # type: ignore[attr-defined]
        (r.version, r.added, r.removed) for r in rows
    ]
    diff = cli("diff", "--release", "rel", "--stack", "main", "2", "5")
    assert {s["hash"] for s in diff["added"]} == truth[5] - truth[2]  # type: ignore[index]
    assert {s["hash"] for s in diff["removed"]} == truth[2] - truth[5]  # type: ignore[index]
    at4 = cli("at", "--release", "rel", "--stack", "main", rows[3].created_at)
    assert {s["hash"] for s in at4["specs"]} == truth[4]  # type: ignore[index]
    back = str(POOL[0]["hash"])
    shown = cli("show", back)
    stays = [(i["entered_version"], i["left_version"]) for i in shown["intervals"]]  # type: ignore[index]
    assert stays == [(1, 3), (4, None)]
