"""Lookups by spec on PostgreSQL (grouped memberships, migration 0015): a package's
page rows, a package's stays, one spec's stays and ``export pages`` of a release.

Builds, through the store alone, a release of 40 stacks: ``root`` holds
``--specs`` specs (1,000 packages), each other stack a random eighth of them,
then ``--churn`` versions each drop 1% of every stack and add as many (new specs
to root, root's specs to the others). Prints the database's shape, then the
median of ``--repeat`` timings of each lookup, warm, and the load average.

    .venv/bin/python benchmarks/bench_byspec.py
    .venv/bin/python benchmarks/bench_byspec.py --src OLD_CHECKOUT/src   # "before"

``--src``: the store's readers (not the writer) come from that checkout; the
schema is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mirrorsync.formats.index import SpecInfo

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

PACKAGES = 1000


def _spec(i: int) -> SpecInfo:
    from mirrorsync.fixture.specs import fake_hash
    from mirrorsync.formats.index import SpecInfo

    return SpecInfo(
        fake_hash(f"byspec{i}"),
        f"pkg{i % PACKAGES}",
        f"{i}.0",
        "linux",
        "ubuntu22.04",
        "x86_64_v3",
        "gcc@12.3.0",
        ("+shared",),
    )


def build(url: str, specs: int, churn: int) -> None:
    """The release: root of ``specs``, 39 stacks of an eighth each, ``churn`` versions."""
    import anyio

    from mirrorsync.store import Store, writes

    rng = random.Random(31)

    async def run() -> None:
        async with await Store.open(_location(url)) as store:
            source = await writes.ensure_source(store, "test", "catalog", "http://x.invalid/")
            held: dict[int, set[int]] = {}
            root = (await writes.ensure_stack(store, source, "develop", "root")).id
            held[root] = set(range(specs))
            for k in range(39):
                row = await writes.ensure_stack(store, source, "develop", f"stack{k:02d}")
                held[row.id] = set(rng.sample(range(specs), specs // 8))
            at = "2026-11-01T08:00:00.000000Z"
            for stack, ids in held.items():
                added = [_spec(i) for i in sorted(ids)]
                snap = writes.Snapshot(stack, None, None, added, (), announce=True)
                await writes.commit_snapshot(store, snap, at)
            fresh = specs
            for v in range(churn):
                at = f"2026-11-{v + 2:02d}T08:00:00.000000Z"
                for stack, ids in held.items():
                    n = max(1, len(ids) // 100)
                    gone = set(rng.sample(sorted(ids), n))
                    if stack == root:
                        new = set(range(fresh, fresh + n))
                        fresh += n
                    else:
                        new = set(rng.sample(sorted(held[root] - ids), n))
                    ids -= gone
                    ids |= new
                    snap = writes.Snapshot(
                        stack,
                        None,
                        None,
                        [_spec(i) for i in sorted(new)],
                        [_spec(i).hash for i in sorted(gone)],
                    )
                    await writes.commit_snapshot(store, snap, at)

    anyio.run(run)


def measure(url: str, repeat: int, package: str, spec_hash: str) -> dict[str, float]:
    """Median seconds of each lookup, warm (the first call is not counted)."""
    import statistics
    import time

    import anyio

    from mirrorsync.export import export_pages
    from mirrorsync.store import Store, queries, web
    from mirrorsync.store.manifests import package_rows, release_view

    async def run() -> dict[str, float]:
        results: dict[str, float] = {}
        async with await Store.open(_location(url), create=False) as store:
            view = await release_view(store, "develop", None)
            with tempfile.TemporaryDirectory() as out:
                cases: dict[str, Callable[[], Awaitable[object]]] = {
                    "package page rows": lambda: package_rows(store, view, package),
                    "package stays": lambda: web.package_specs(store, package, limit=1000),
                    "one spec's stays": lambda: queries.intervals(store, spec_hash),
                    "export pages (release)": lambda: export_pages(
                        store, release="develop", out=Path(out)
                    ),
                }
                for name, call in cases.items():
                    times = []
                    for _ in range(repeat + 1):
                        start = time.perf_counter()
                        await call()
                        times.append(time.perf_counter() - start)
                    results[name] = statistics.median(times[1:])
        return results

    return anyio.run(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=30_000)
    parser.add_argument("--churn", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--src", type=Path, default=None, help="readers from this src")
    parser.add_argument("--sqlite", action="store_true", help="the same on SQLite")
    parser.add_argument("--hold", type=float, default=0, help="keep the server up this long")
    parser.add_argument("--url", help=argparse.SUPPRESS)  # measure only (subprocess)
    args = parser.parse_args()
    if args.url:
        sys.path.insert(0, str(args.src or SRC))
        print(json.dumps(measure(args.url, args.repeat, "pkg7", _hash(7))))
        return 0
    sys.path.insert(0, str(SRC))
    sys.path.insert(0, str(HERE.parent / "tests"))
    if args.sqlite:
        with tempfile.TemporaryDirectory() as work:
            path = str(Path(work) / "byspec.db")
            build(path, args.specs, args.churn)
            _report(args, path)
        return 0
    import postgres  # tests/postgres.py: a throw-away server

    bindir = postgres.binaries()
    if bindir is None:
        print("no PostgreSQL server binaries", file=sys.stderr)
        return 1
    server = postgres.start(bindir)
    try:
        url = server.url(server.new_database())
        build(url, args.specs, args.churn)
        shape = subprocess.run(
            [str(bindir / "psql"), url, "-XAtc", _SHAPE], check=True, capture_output=True, text=True
        ).stdout
        print(f"membership_groups rows, memberships, current: {shape.strip()}")
        _report(args, url)
        if args.hold:
            print(f"holding {url}", flush=True)
            time.sleep(args.hold)
    finally:
        server.stop()
    return 0


def _report(args: argparse.Namespace, url: str) -> None:
    """Measure in a subprocess (its readers from ``--src``); print the medians."""
    env = {**os.environ, "PYTHONPATH": ""}
    argv = [sys.executable, __file__, "--url", url, "--repeat", str(args.repeat)]
    if args.src:
        argv += ["--src", str(args.src)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    for name, seconds in json.loads(out).items():
        print(f"{name:24} {seconds * 1000:9.1f} ms")
    print(f"load average: {os.getloadavg()[0]:.1f}")


_SHAPE = (
    "SELECT count(*), sum(cardinality(spec_ids)),"
    ' (SELECT count(*) FROM memberships WHERE "left" IS NULL) FROM membership_groups'
)


def _location(url: str) -> Any:
    from mirrorsync.location import PostgresUrl

    return PostgresUrl(url) if url.startswith("postgresql:") else Path(url)


def _hash(i: int) -> str:
    from mirrorsync.fixture.specs import fake_hash

    return fake_hash(f"byspec{i}")


if __name__ == "__main__":
    sys.exit(main())
