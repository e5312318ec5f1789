"""The whole-release benchmark's floor (benchmarks/floor_sync.py) must do the work
mirrorsync does, or its ratio means nothing: same rows, first sync and resync."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, catalog_config_text, run_cli, write_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import synthetic_compilers, synthetic_specs

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None, reason="the floor downloads with curl"
)


def _write_release(docroot: Path, pool: list[dict[str, object]], state: int) -> None:
    """Root (the union) and two overlapping stacks; state 2 drops 4 specs and adds 5."""
    chosen = pool[:200] if state == 1 else pool[4:205]
    by_hash = {str(n["hash"]): n for n in chosen}

    def closed(picked: list[dict[str, object]]) -> list[dict[str, object]]:
        """With the dependencies of every spec picked, as a Spack index holds them:
        a compiler is derived from its dependency's node, so a stack without that
        node would store the spec without one, depending on which stack came first."""
        keep, todo = {}, list(picked)
        while todo:
            node = todo.pop()
            if str(node["hash"]) in keep:
                continue
            keep[str(node["hash"])] = node
            deps = node.get("dependencies")
            for dep in deps if isinstance(deps, list) else ():
                if dep["hash"] in by_hash:
                    todo.append(by_hash[dep["hash"]])
        return [n for n in chosen if str(n["hash"]) in keep]

    stacks = {
        "root": chosen,
        "e4s": closed([n for i, n in enumerate(chosen) if i % 2 == 0]),
        "tutorial": closed([n for i, n in enumerate(chosen) if i % 3 == 0 or i > 150]),
    }
    build_catalog_from_specs(
        docroot,
        {"develop": stacks},
        manifests=False,
        uncached={"develop": dict.fromkeys(stacks, synthetic_compilers())},
    )


def _state(database: Path) -> dict[str, Any]:
    with sqlite3.connect(database) as conn:
        return {
            "specs": set(
                conn.execute(
                    "SELECT hash, name, version, platform, os, target, compiler, variants"
                    " FROM specs"
                )
            ),
            "members": set(
                conn.execute(
                    "SELECT st.name, s.hash, m.entered, m.left FROM memberships m"
                    " JOIN stacks st ON st.id = m.stack_id JOIN specs s ON s.id = m.spec_id"
                )
            ),
            "events": sorted(
                conn.execute(
                    "SELECT e.type, e.release, st.name, s.hash, e.stack_version FROM events e"
                    " LEFT JOIN stacks st ON st.id = e.stack_id"
                    " LEFT JOIN specs s ON s.id = e.spec_id"
                ),
                key=repr,
            ),
            "versions": set(
                conn.execute(
                    "SELECT st.name, v.version, v.spec_count, v.added, v.removed,"
                    " v.index_checksum FROM stack_versions v JOIN stacks st ON st.id = v.stack_id"
                )
            ),
            "uncached": set(
                conn.execute(
                    "SELECT st.name, u.hash FROM listed_uncached u"
                    " JOIN stacks st ON st.id = u.stack_id"
                )
            ),
        }


def test_floor_writes_what_mirrorsync_writes(tmp_path: Path, docroot: Path) -> None:
    pool = synthetic_specs(210, seed=5)
    _write_release(docroot, pool, 1)
    floor_db, mine_db = tmp_path / "floor.db", tmp_path / "mine.db"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with FixtureServer(docroot) as server:
        config = write_config(
            tmp_path / "c.yaml",
            catalog_config_text(tmp_path, server, extra="    manifests: none", database="mine.db"),
        )
        for state in (1, 2):
            if state == 2:
                _write_release(docroot, pool, 2)
            subprocess.run(
                [sys.executable, str(REPO / "benchmarks/floor_sync.py"), server.url,
                 str(floor_db), str(tmp_path / "scratch")],
                env=env, check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            done = run_cli("-q", "-c", str(config), "once", cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            floor, mine = _state(floor_db), _state(mine_db)
            for table in mine:
                assert floor[table] == mine[table], f"state {state}: {table} differ"
    assert len(mine["members"]) > 400 and any(m[3] is not None for m in mine["members"])
