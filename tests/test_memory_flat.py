"""A run's memory stays flat as it syncs more stacks and releases (issue 31).

Peak memory is the high-water mark of the real CLI process (``VmHWM`` of its own
``/proc/self/status``, read as it exits: ``ru_maxrss`` would also count the test
process's memory, which a child holds between fork and exec). Sizes, not timings:
one stack of 16,000 specs against 3 releases of 4 such stacks each (6,000 specs
shared by all, 10,000 of each its own). What grows is about constant (~14 MB
at 10,000 specs a stack and at 30,000), so larger stacks only widen the margin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import synthetic_compilers, synthetic_specs

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")

PER_STACK = 16_000
SHARED = 6_000

#: Runs mirrorsync's CLI in this process and reports its peak RSS (kB) last on stderr.
_PEAK = """
import atexit, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("peak-kB", line.split()[1], file=sys.stderr)
atexit.register(peak)
from mirrorsync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _site(docroot: Path, releases: int, stacks: int) -> None:
    own = PER_STACK - SHARED
    pool = synthetic_specs(SHARED + releases * stacks * own, seed=31)
    tree: dict[str, dict[str, Any]] = {}
    uncached: dict[str, dict[str, Any]] = {}
    k = 0
    for r in range(releases):
        for s in range(stacks):
            label = "root" if s == 0 else f"stack{s}"
            start = SHARED + k * own
            tree.setdefault(f"r{r}", {})[label] = pool[:SHARED] + pool[start : start + own]
            uncached.setdefault(f"r{r}", {})[label] = synthetic_compilers()
            k += 1
    build_catalog_from_specs(docroot, tree, manifests=False, signed=False, uncached=uncached)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FixtureServer]]:
    servers: dict[str, FixtureServer] = {}
    try:
        for name, releases, stacks in (("one", 1, 1), ("many", 3, 4)):
            docroot = tmp_path_factory.mktemp(f"site-{name}")
            _site(docroot, releases, stacks)
            servers[name] = FixtureServer(docroot).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _peak_of_first_sync(tmp_path: Path, server: FixtureServer) -> int:
    config = tmp_path / "mirrorsync.yaml"
    config.write_text(
        f"database: {tmp_path / 'state.db'}\n"
        "sources:\n  - name: t\n    kind: catalog\n"
        f"    url: {server.url}/cache_spack_io_index.json\n"
        f"    bucket_urls: {{spack-binaries: {server.url}/}}\n"
        "    manifests: none\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, "-c", str(config), "once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("peak-kB ")]
    assert lines, done.stderr[-2000:]
    return int(lines[-1].split()[1])


def test_peak_memory_of_12_stacks_in_3_releases_is_within_1_25x_of_one_stack(
    tmp_path: Path, sites: dict[str, FixtureServer]
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    one = _peak_of_first_sync(tmp_path / "one", sites["one"])
    many = _peak_of_first_sync(tmp_path / "many", sites["many"])
    print(f"peak: one stack {one} kB, 12 stacks {many} kB ({many / one:.2f}x)")
    assert many <= 1.25 * one, f"12 stacks peaked at {many} kB, one stack at {one} kB"
