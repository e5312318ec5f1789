"""The two real cache.spack.io snapshots, turned into indexes, give exactly their differences."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from conftest import catalog_config, sync
from dbstate import SEED_NET_CHANGE, net_by_stack
from mirrorsync.fixture.build import build_from_seed
from mirrorsync.fixture.server import FixtureServer
from test_sync import all_events


def test_seed_snapshots_differ_exactly_as_the_pages_do(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_from_seed(docroot, "000")
    config = catalog_config(tmp_path, server)
    first = sync(config)
    assert first.exit_code == 0, first.failures
    assert {o.stack: o.spec_count for o in first.stacks} == {
        "root": 93,
        "ml-linux-aarch64-cpu": 20,
        "ml-linux-aarch64-cuda": 20,
        "ml-linux-x86_64-cpu": 34,
        "ml-linux-x86_64-cuda": 20,
        "ml-linux-x86_64-rocm": 18,
    }
    seen = len(all_events(config.database_path))

    build_from_seed(docroot, "001")
    second = sync(config)
    assert second.exit_code == 0, second.failures
    changes = all_events(config.database_path)[seen:]
    net = net_by_stack(changes)
    assert net == SEED_NET_CHANGE
    assert sum(v for k, v in net.items() if k.startswith("ml-")) == -45
    # Every change is one-directional per stack: nothing both added and removed.
    kinds = Counter((e["stack"], e["type"]) for e in changes if str(e["type"]).startswith("spec."))
    assert all(not (kinds[(s, "spec.added")] and kinds[(s, "spec.removed")]) for s, _ in kinds)
    assert next(e["type"] for e in changes if e["stack"] == "e4s") == "stack.added"
    assert all(e["name"] == "py-pyproject-hooks" for e in changes if e["hash"])
