"""Costs as the work grows (issue 31): 10 releases synced one after another, on SQLite
and PostgreSQL, and each row of the issue's table as a ratio measured in one run.

The site (fixture specs, cached in benchmarks/.cache/scale-*): --releases releases
drawn from one pool of synthetic spec nodes, each release's root stack a window of
--specs of them that overlaps the one before by --overlap (a release carries most
of its predecessor's builds, as Spack's do), plus four stacks holding overlapping
parts of the root (fixture ``build-site``'s pattern). The catalogue grows one
release at a time: each ``mirrorsync once`` (its own process: wall time, CPU from
wait4, peak RSS from its own VmHWM) syncs the one new release into the same
database, whose size is read after it. Then a day of churn: the newest release
loses 1% of its root and gains as many new specs, and one more run syncs it.
Growth is linear or better when the k-th release costs about what the first did.

The table (--table, also on by default): each row of issue 31 as a ratio, in one run:

  storage      bytes per stored membership of 4 stacks x --table-specs specs (40% shared by
               all), SQLite, beyond an empty database's size
  memory       peak RSS of one run from empty over every release vs one run over one stack
  postgresql   first sync of the first release: PostgreSQL wall / SQLite wall (median)
  start-up     ``mirrorsync --version``, ``--help`` and ``status`` (an empty database) vs
               ``python -c pass``, interleaved (median of --repeat x 5)
  crawl        benchmarks/bench_crawl.py against nginx (--crawl): mirrorsync's manifest rate
               / bare aiohttp's at 8, 16 and 32 connections (--crawl-specs manifests)
  copy         benchmarks/bench_mirror.py against nginx (--copy): ``mirrorsync mirror``'s
               throughput / ``curl`` + ``sha256sum`` of the same files (and / curl alone)

The table ends the output, each row beside issue 31's target. --src reaches the
crawl too; the copy row always runs this checkout's mirrorsync. ``--no-scale --crawl
--copy`` prints every row in a few minutes on 2 shared cores.

Usage: python benchmarks/bench_scale.py [--specs 10000] [--releases 10] [--repeat 3]
           [--full: --specs 100000] [--no-postgres] [--no-scale] [--crawl] [--copy]
           [--crawl-specs 5000] [--copy-gib 1]

The machines this runs on are shared: compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE.parent / "tests"))

import anyio  # noqa: E402

from mirrorsync.fixture.build import build_catalog_from_specs  # noqa: E402
from mirrorsync.fixture.server import FixtureServer  # noqa: E402
from mirrorsync.fixture.specs import synthetic_compilers, synthetic_specs  # noqa: E402
from mirrorsync.store import Store  # noqa: E402

#: The mirrorsync the measured processes run (--src: another checkout's, to compare).
RUN_SRC = SRC

STACKS = ("e4s", "ml-linux-x86_64-cpu", "data-vis-sdk", "tutorial")

#: Runs mirrorsync's CLI and prints its own peak RSS (kB) last on stderr.
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


@dataclass
class Run:
    wall: float
    cpu: float
    peak_mb: float
    db_mb: float = 0.0


def _mirrorsync(config: Path, *args: str) -> Run:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", _PEAK, "-c", str(config), *args],
        env={**os.environ, "PYTHONPATH": str(RUN_SRC)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    assert proc.stderr is not None
    err = proc.stderr.read()
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"mirrorsync {' '.join(args)} failed:\n{err[-2000:]}")
    peaks = [int(line.split()[1]) for line in err.splitlines() if line.startswith("peak-kB ")]
    return Run(wall, usage.ru_utime + usage.ru_stime, peaks[-1] / 1024 if peaks else 0.0)


def _write_site(
    docroot: Path, pool: list[Any], specs: int, shift: int, upto: int, churn: bool
) -> None:
    """Releases 0..upto-1 (the last one churned if ``churn``) and the catalogue."""
    tree: dict[str, dict[str, Any]] = {}
    uncached: dict[str, dict[str, Any]] = {}
    for r in range(upto):
        first = r * shift + (max(1, specs // 100) if churn and r == upto - 1 else 0)
        root = pool[first : first + specs]
        members = {"root": root}
        for j, label in enumerate(STACKS):
            low, high = j * specs // (len(STACKS) + 1), (j + 1) * specs // (len(STACKS) + 1)
            members[label] = [
                n for i, n in enumerate(root, first) if i % (j + 2) == 0 or low <= i - first < high
            ]
        tree[f"v{r}"] = members
        uncached[f"v{r}"] = {label: synthetic_compilers() for label in members}
    build_catalog_from_specs(docroot, tree, manifests=False, signed=False, uncached=uncached)


def _config(path: Path, database: str, server: FixtureServer) -> Path:
    path.write_text(
        f"database: '{database}'\n"
        "sources:\n  - name: bench\n    kind: catalog\n"
        f"    url: {server.url}/cache_spack_io_index.json\n"
        f"    bucket_urls: {{spack-binaries: {server.url}/}}\n"
        "    manifests: none\n"
        "http: {per_host_rate: 1000, concurrency: 16}\n"
    )
    return path


@contextmanager
def _postgres(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    import postgres  # tests/postgres.py: a throw-away server

    bindir = postgres.binaries()
    if bindir is None:
        print("no PostgreSQL binaries: PostgreSQL rows skipped", file=sys.stderr)
        yield None
        return
    server = postgres.start(bindir)
    try:
        yield server
    finally:
        server.stop()


def _db_size(database: str, pg: Any) -> float:
    if not database.startswith("postgresql"):
        return (
            sum(p.stat().st_size for p in Path(database).parent.glob(Path(database).name + "*"))
            / 2**20
        )
    name = database.rsplit("/", 1)[-1].split("?")[0]
    out = pg.psql(f"SELECT pg_database_size('{name}')")
    return int(out.strip().splitlines()[-1].strip()) / 2**20


def scale(args: argparse.Namespace, work: Path, pg: Any) -> dict[str, Any]:
    shift = max(1, round(args.specs * (1 - args.overlap)))
    pool = synthetic_specs(args.specs + shift * args.releases + args.specs // 50, seed=31)
    results: dict[str, Any] = {}
    backends = ["sqlite"] + (["postgresql"] if pg is not None else [])
    for backend in backends:
        docroot = work / f"www-{backend}"
        shutil.rmtree(docroot, ignore_errors=True)
        docroot.mkdir(parents=True)
        server = FixtureServer(docroot).start()
        try:
            database = (
                str(work / f"{backend}.db") if backend == "sqlite" else pg.url(pg.new_database())
            )
            config = _config(work / f"{backend}.yaml", database, server)
            rows = []
            for k in range(1, args.releases + 1):
                _write_site(docroot, pool, args.specs, shift, k, churn=False)
                run = _mirrorsync(config, "once")
                run.db_mb = _db_size(database, pg)
                rows.append(run)
                print(
                    f"{backend:10} release {k:2}: wall {run.wall:6.2f}s cpu {run.cpu:6.2f}s"
                    f" peak {run.peak_mb:6.1f} MB db {run.db_mb:7.1f} MB",
                    flush=True,
                )
            _write_site(docroot, pool, args.specs, shift, args.releases, churn=True)
            churn = _mirrorsync(config, "once")
            churn.db_mb = _db_size(database, pg)
            print(
                f"{backend:10} day of churn: wall {churn.wall:6.2f}s cpu {churn.cpu:6.2f}s"
                f" peak {churn.peak_mb:6.1f} MB db {churn.db_mb:7.1f} MB",
                flush=True,
            )
        finally:
            server.stop()
        first, last = rows[0], rows[-1]
        growth = [b.db_mb - a.db_mb for a, b in zip([Run(0, 0, 0, 0), *rows], rows, strict=False)]
        results[backend] = {
            "releases": [r.__dict__ for r in rows],
            "churn": churn.__dict__,
            "last_vs_first_wall": last.wall / first.wall,
            "last_vs_first_cpu": last.cpu / first.cpu,
            "last_vs_first_peak": last.peak_mb / first.peak_mb,
            "last_vs_first_db_growth": growth[-1] / growth[0],
        }
    return results


async def _create_empty(path: Path) -> None:
    store = await Store.open(path)  # every migration, no history
    await store.close()


def table(args: argparse.Namespace, work: Path, pg: Any) -> dict[str, float]:
    """Each row of issue 31's table as a ratio, measured now."""
    rows: dict[str, float] = {}
    n = args.table_specs
    shared, own = n * 2 // 5, n - n * 2 // 5
    pool = synthetic_specs(shared + 4 * own, seed=7)
    labels = ("root", *STACKS[:3])
    stacks = {
        label: pool[:shared] + pool[shared + k * own : shared + (k + 1) * own]
        for k, label in enumerate(labels)
    }
    sites = {"four": stacks, "one": {"root": stacks["root"]}}
    servers = {}
    for name, tree in sites.items():
        docroot = work / f"www-{name}"
        shutil.rmtree(docroot, ignore_errors=True)
        docroot.mkdir(parents=True)
        uncached = {"t": {label: synthetic_compilers() for label in tree}}
        build_catalog_from_specs(
            docroot, {"t": tree}, manifests=False, signed=False, uncached=uncached
        )
        servers[name] = FixtureServer(docroot).start()
    try:
        # storage: bytes per membership beyond an empty database
        empty = work / "empty.db"
        empty.unlink(missing_ok=True)
        anyio.run(_create_empty, empty)
        db = work / "four.db"
        for p in work.glob("four.db*"):
            p.unlink()
        four = _mirrorsync(_config(work / "four.yaml", str(db), servers["four"]), "once")
        with sqlite3.connect(db) as conn:
            (members,) = conn.execute("SELECT count(*) FROM memberships").fetchone()
        base = empty.stat().st_size
        rows["storage bytes per membership"] = (db.stat().st_size - base) / members
        # memory: one run over 4 stacks vs one run over one of them
        peaks_one, peaks_four = [], [four.peak_mb]
        walls_sqlite, walls_pg = [], []
        for _ in range(args.repeat):
            for p in work.glob("one.db*"):
                p.unlink()
            run = _mirrorsync(
                _config(work / "one.yaml", str(work / "one.db"), servers["one"]), "once"
            )
            peaks_one.append(run.peak_mb)
        rows["memory 4 stacks / 1 stack peak"] = statistics.median(peaks_four) / statistics.median(
            peaks_one
        )
        # PostgreSQL vs SQLite, first sync of the four stacks, interleaved
        if pg is not None:
            for _ in range(args.repeat):
                for p in work.glob("four.db*"):
                    p.unlink()
                walls_sqlite.append(
                    _mirrorsync(_config(work / "four.yaml", str(db), servers["four"]), "once").wall
                )
                url = pg.url(pg.new_database())
                walls_pg.append(
                    _mirrorsync(_config(work / "pg.yaml", url, servers["four"]), "once").wall
                )
            rows["postgresql / sqlite first sync wall"] = statistics.median(
                walls_pg
            ) / statistics.median(walls_sqlite)
    finally:
        for server in servers.values():
            server.stop()
    rows.update(startup(work, args.repeat * 5))
    for name, value in rows.items():
        print(f"{name:40} {value:8.2f}", flush=True)
    return rows


def startup(work: Path, runs: int) -> dict[str, float]:
    """--version, --help and status on an empty database vs ``python -c pass``, interleaved."""
    where = work / "startup"
    where.mkdir(exist_ok=True)
    (where / "mirrorsync.yaml").write_text(
        "sources:\n  - {name: s, kind: catalog, url: 'http://127.0.0.1:9/catalog.json',"
        " bucket_urls: {spack-binaries: 'http://127.0.0.1:9/'}}\n"
        f"database: {where / 'ms.db'}\n"
    )
    anyio.run(_create_empty, where / "ms.db")
    py = [sys.executable]
    cases = {
        "": [*py, "-c", "pass"],
        "--version": [*py, "-m", "mirrorsync", "--version"],
        "--help": [*py, "-m", "mirrorsync", "--help"],
        "status": [*py, "-m", "mirrorsync", "status"],
    }
    # Without .pyc files each run would compile config.py again: an installed
    # mirrorsync has them, so the children write them (warm round) and read them.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MIRRORSYNC_CONFIG", "PYTHONDONTWRITEBYTECODE")
    }
    env["PYTHONPATH"] = str(RUN_SRC)
    walls: dict[str, list[float]] = {name: [] for name in cases}
    for k in range(runs + 1):  # the first round warms the page cache and .pyc files
        for name, argv in cases.items():
            started = time.monotonic()
            subprocess.run(argv, cwd=where, env=env, capture_output=True, check=False)
            if k:
                walls[name].append(time.monotonic() - started)
    bare = statistics.median(walls[""])
    return {
        f"start-up {name} / python -c pass": statistics.median(walls[name]) / bare
        for name in cases
        if name
    }


#: Issue 31's targets: (row name prefix, target, True when a ratio must be at most it);
#: the first prefix that matches; no target for rows given beside the old figures.
TARGETS: tuple[tuple[str, float | None, bool], ...] = (
    ("copy / curl alone", None, False),
    ("copy / curl + coreutils", None, False),
    ("storage", 200.0, True),
    ("memory", 1.25, True),
    ("postgresql", 1.3, True),
    ("start-up", 3.0, True),
    ("crawl", 0.6, False),
    ("copy", 0.9, False),
)


def summary(rows: dict[str, float]) -> None:
    print("\nissue 31's table, measured in this run (target; ok or MISSED):")
    for name, value in rows.items():
        target, at_most = next((t, m) for prefix, t, m in TARGETS if name.startswith(prefix))
        if target is None:
            print(f"  {name:50} {value:8.2f}  (no target)", flush=True)
            continue
        met = value <= target if at_most else value >= target
        bound = "at most" if at_most else "at least"
        print(
            f"  {name:50} {value:8.2f}  ({bound} {target:g}; {'ok' if met else 'MISSED'})",
            flush=True,
        )


def external(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """The crawl and copy rows, from bench_crawl.py and bench_mirror.py run now."""
    rows: dict[str, float] = {}
    if args.crawl:
        out = work / "crawl.json"
        subprocess.run(
            [
                sys.executable,
                str(HERE / "bench_crawl.py"),
                "--specs",
                str(args.crawl_specs),
                "--repeat",
                str(args.repeat),
                "--httpx-repeat",
                "0",
                "--json",
                str(out),
                "--src",
                str(RUN_SRC),
            ],
            check=True,
        )
        for c, ratio in json.loads(out.read_text())["mirrorsync"].items():
            rows[f"crawl / bare aiohttp, {c} connections"] = ratio
    if args.copy:
        out = work / "copy.json"
        subprocess.run(
            [
                sys.executable,
                str(HERE / "bench_mirror.py"),
                "--gib",
                str(args.copy_gib),
                "--blob-mib",
                "64",
                "--repeat",
                str(args.repeat),
                "--json",
                str(out),
            ],
            check=True,
        )
        ratios = json.loads(out.read_text())
        rows["copy / curl + openssl sha256 throughput"] = ratios["curl+openssl"]
        rows["copy / curl + coreutils sha256sum"] = ratios["curl+sha256sum"]
        rows["copy / curl alone (the old figures' baseline)"] = ratios["curl"]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", type=int, default=10_000, help="specs per release's root")
    parser.add_argument("--full", action="store_true", help="--specs 100000")
    parser.add_argument("--releases", type=int, default=10)
    parser.add_argument(
        "--overlap", type=float, default=0.8, help="root shared with the release before"
    )
    parser.add_argument(
        "--table-specs", type=int, default=20_000, help="specs per stack (storage row)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-scale", action="store_true", help="the table only")
    parser.add_argument("--crawl", action="store_true", help="also run bench_crawl.py")
    parser.add_argument("--copy", action="store_true", help="also run bench_mirror.py")
    parser.add_argument("--crawl-specs", type=int, default=5_000, help="manifests crawled")
    parser.add_argument("--copy-gib", type=float, default=1.0, help="bytes of binaries copied")
    parser.add_argument("--src", type=Path, help="run this checkout's src (the old figures)")
    args = parser.parse_args()
    if args.src is not None:
        global RUN_SRC
        RUN_SRC = args.src.resolve()
    if args.full:
        args.specs = 100_000
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        with _postgres(not args.no_postgres) as pg:
            results: dict[str, Any] = {}
            if not args.no_scale:
                results["scale"] = scale(args, work, pg)
            results["table"] = table(args, work, pg)
        results["table"].update(external(args, work))
        out = HERE / ".cache" / f"results-scale-{int(time.time())}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        summary(results["table"])
        print(f"results in {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
