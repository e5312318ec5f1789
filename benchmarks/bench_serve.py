"""Benchmark ``mirrorsync serve``'s stack page at the real scale.

One command from a fresh clone (after ``make .venv/bin/mirrorsync``):

    .venv/bin/python benchmarks/bench_serve.py [--specs 100000] [--versions 200]

Builds once (cached in benchmarks/.cache/serve-*) a SQLite history of one stack
written through the store's own functions, as syncs commit it: version 1 holds
most of the specs, each later version adds 250 and removes 50, so the last one
holds ``--specs``; every spec has a manifest with a size (so each version's bytes
are real sums). Then starts ``mirrorsync serve`` as a process on a free loopback
port and reports:

  stack page   the first request (nothing cached), then the median and the
               spread of 20 requests: the server's own time (its Server-Timing
               header) and the client's wall time over loopback
  baseline     the same figures computed the plain way in this process, in the
               same run: one query per version summing the sizes of the specs
               it held (what a page without the grouped pass would do): the
               ratio says what the one-pass aggregate saves
  memory       the server's RSS after 20 warm-up requests and after 1,000 more
               (stack pages, diffs, events, feeds, the overview, in turn)
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio

from mirrorsync.fixture.specs import fake_hash
from mirrorsync.formats.index import SpecInfo
from mirrorsync.store import Store, manifests, writes
from mirrorsync.store import web as web_store

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"
ADDED, REMOVED = 250, 50


def spec(i: int) -> SpecInfo:
    return SpecInfo(
        fake_hash(f"serve{i}"),
        f"pkg-{i % 4000}",
        f"{i}.0",
        "linux",
        "ubuntu24.04",
        "x86_64_v3",
        "gcc@13.2.0",
        ("+shared", "build_system=cmake"),
    )


def build(path: Path, specs: int, versions: int) -> None:
    """One stack of ``versions`` versions ending with ``specs`` specs, each sized."""
    first = specs - (versions - 1) * (ADDED - REMOVED)
    rng = random.Random(7)

    async def run() -> None:
        async with await Store.open(path) as store:
            source = await writes.ensure_source(store, "spack", "catalog", "http://x.invalid/")
            row = await writes.ensure_stack(store, source, "develop", "e4s")
            held: list[str] = []
            made = last_id = 0
            for v in range(versions):
                count = first if v == 0 else ADDED
                added = [spec(made + i) for i in range(count)]
                made += count
                removed = [] if v == 0 else rng.sample(held, REMOVED)
                gone = set(removed)
                held = [h for h in held if h not in gone] + [s.hash for s in added]
                at = f"2026-{1 + v // 28:02d}-{1 + v % 28:02d}T08:00:00.000000Z"
                snapshot = writes.Snapshot(row.id, None, None, added, removed, announce=v == 0)
                await writes.commit_snapshot(store, snapshot, at)
                async with store.conn.execute(
                    "SELECT id FROM specs WHERE id > ? ORDER BY id", (last_id,)
                ) as cursor:
                    ids = [int(r[0]) for r in await cursor.fetchall()]
                last_id = max(ids, default=last_id)
                results = [
                    manifests.ManifestResult(i, "ok", tarball_size=rng.randint(10**4, 10**8))
                    for i in ids
                ]
                for i in range(0, len(results), 5000):
                    await manifests.record_results(store, row.id, results[i : i + 5000], at)

    anyio.run(run)


def baseline(path: Path, versions: int, sample: int = 20) -> float:
    """Seconds to compute every version's bytes with one query per version (timed on
    ``sample`` versions spread over the history, scaled to all of them)."""
    step = max(1, versions // sample)
    chosen = range(1, versions + 1, step)

    async def run() -> float:
        async with await Store.open_read_only(path) as store:
            started = time.perf_counter()
            for v in chosen:
                async with store.conn.execute(
                    "SELECT coalesce(sum(sm.tarball_size), 0) FROM memberships m"
                    " JOIN spec_manifests sm ON sm.stack_id = m.stack_id AND sm.spec_id = m.spec_id"
                    " WHERE m.stack_id = 1 AND m.entered <= ? AND (m.left IS NULL OR m.left > ?)",
                    (v, v),
                ) as cursor:
                    await cursor.fetchone()
            return (time.perf_counter() - started) * versions / len(chosen)

    return anyio.run(run)


def grouped(path: Path, versions: int) -> float:
    """Seconds of the page's own way: every version's bytes in one grouped pass."""

    async def run() -> float:
        async with await Store.open_read_only(path) as store:
            started = time.perf_counter()
            await web_store.bytes_history(store, 1, versions)
            return time.perf_counter() - started

    return anyio.run(run)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def timed(conn: http.client.HTTPConnection, path: str) -> tuple[float, float, int]:
    """(server ms from Server-Timing, client wall ms, body bytes) of one GET."""
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    wall = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
    found = re.search(r"dur=([0-9.]+)", response.getheader("Server-Timing") or "")
    return float(found[1]) if found else float("nan"), wall, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000, help="for the memory figure")
    args = parser.parse_args()
    where = CACHE / f"serve-{args.specs}-{args.versions}"
    database = where / "state.db"
    if not database.exists():
        where.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build(database.with_suffix(".tmp"), args.specs, args.versions)
        database.with_suffix(".tmp").rename(database)
        print(f"built {database} in {time.perf_counter() - started:.1f}s")
    plain = baseline(database, args.versions) * 1000
    one_pass = grouped(database, args.versions) * 1000
    config = where / "c.yaml"
    config.write_text(
        f"database: {database}\n"
        "sources: [{name: spack, kind: catalog, url: 'http://127.0.0.1:9/x', manifests: none}]\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync", "-c", str(config), "serve", "--listen", "127.0.0.1:0"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if found is None:
        process.kill()
        raise SystemExit(f"serve did not start: {line}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(found[1]), timeout=60)
        # The server computes the health model and the overview's figures as it
        # starts (and again after each sync): the figures below are pages served
        # after that, as a running service serves them.
        warm = time.perf_counter()
        timed(conn, "/healthz")
        print(f"health model ready {time.perf_counter() - warm:.2f}s after the first request")
        page = "/stacks/spack/develop/e4s"
        cold_server, cold_wall, size = timed(conn, page)
        runs = [timed(conn, page) for _ in range(20)]
        server = sorted(r[0] for r in runs)
        wall = sorted(r[1] for r in runs)
        print(f"stack of {args.specs:,} specs, {args.versions} versions ({size:,} bytes of HTML)")
        print(f"  first request      server {cold_server:7.1f} ms   wall {cold_wall:7.1f} ms")
        print(
            f"  median of 20       server {statistics.median(server):7.1f} ms"
            f" (min {server[0]:.1f}, max {server[-1]:.1f})"
            f"   wall {statistics.median(wall):7.1f} ms (max {wall[-1]:.1f})"
        )
        print(
            f"  bytes per version  one grouped pass {one_pass:.0f} ms; baseline, one query per"
            f" version (20 timed, scaled): {plain:.0f} ms; baseline / grouped ="
            f" {plain / one_pass:.0f}"
        )
        paths = [
            page,
            f"{page}/diff?from=1&to={args.versions}",
            f"{page}/diff?from=100&to=101",
            "/events?limit=100",
            "/feeds/all.atom",
            "/feeds/stacks/spack/develop/e4s.json",
            "/",
            "/packages/pkg-7",
            "/api/stacks/spack/develop/e4s",
            "/search?q=pkg-1",
        ]
        for p in paths * 2:
            timed(conn, p)
        before = rss_kib(process.pid)
        per_path: dict[str, list[float]] = {p: [] for p in paths}
        for i in range(args.requests):
            path = paths[i % len(paths)]
            per_path[path].append(timed(conn, path)[0])
        after = rss_kib(process.pid)
        slowest, slowest_path = max((max(v), k) for k, v in per_path.items())
        print(
            f"  memory             RSS {before / 1024:.1f} MiB after warm-up,"
            f" {after / 1024:.1f} MiB after {args.requests:,} more requests"
            f" ({(after - before) / 1024:+.1f} MiB); slowest of them {slowest:.0f} ms"
            f" ({slowest_path})"
        )
        for path, times in per_path.items():
            print(f"    {path:45} median {statistics.median(times):7.1f} ms  max {max(times):7.1f}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
