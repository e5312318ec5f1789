"""Costs as the work grows (issue 31): 10 releases synced one after another, on SQLite
and PostgreSQL, and each row of the issue's table as a ratio measured in one run.

The site (fixture specs, cached in benchmarks/.cache/scale-*): --releases releases
drawn from one pool of synthetic spec nodes, each release's root stack a window of
--specs of them that overlaps the one before by --overlap (a release carries most
of its predecessor's builds, as Spack's do), plus four stacks holding overlapping
parts of the root (fixture ``build-site``'s pattern). The catalogue grows one
release at a time: each ``mirrorsync once`` (its own process: wall time, CPU from
wait4, peak RSS from its own VmHWM) syncs the one new release into the same
database, whose size is read after it (first sync). Then a day of churn: that
release loses 1% of its root and gains as many new specs (its stacks follow), and
one more run syncs it; it stays so. Only the release written is rewritten, and
each step's site is synced by SQLite and then PostgreSQL. Growth is linear or
better when the k-th release costs about what the first did: the per-release
table ends with release 10 / release 1 and a least-squares slope per release (as
a fraction of release 1's figure) of each cost, the database's growth per
release included.

The table (--table, also on by default): each row of issue 31 as a ratio, in one run:

  storage      bytes per stored membership of 4 stacks x --table-specs specs (40% shared by
               all), SQLite, beyond an empty database's size
  memory       peak RSS of one run from empty over every release vs one run over one stack
  postgresql   first sync of the 4 stacks: PostgreSQL wall / SQLite wall (median), the
               same for CPU (PostgreSQL's: the client's and the server's), and
               PostgreSQL's database size / SQLite's, each beyond an empty database's
  start-up     ``mirrorsync --version``, ``--help`` and ``status`` (an empty database) vs
               ``python -c pass``, interleaved (median of --repeat x 5); ``mirrorsync``
               is the installed command (``python -m`` adds ~1.5 ms of runpy)
  crawl        benchmarks/bench_crawl.py against nginx (--crawl): mirrorsync's manifest rate
               / bare aiohttp's at 8, 16 and 32 connections (--crawl-specs manifests)
  copy         benchmarks/bench_mirror.py against nginx (--copy): ``mirrorsync mirror``'s
               throughput / ``curl`` + ``sha256sum`` of the same files (and / curl alone)

The table ends the output, each row beside issue 31's target. --src reaches the
crawl too; the copy row always runs this checkout's mirrorsync. ``--no-scale --crawl
--copy`` prints every row in a few minutes on 2 shared cores.

Usage: python benchmarks/bench_scale.py [--specs 10000] [--releases 10] [--repeat 3]
           [--full: --specs 100000] [--no-postgres] [--no-scale] [--crawl] [--copy]
           [--crawl-specs 5000] [--copy-gib 1] [--no-table]

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

from benchkit import installed_command  # noqa: E402
from mirrorsync.fixture.build import build_catalog_from_specs, write_catalog  # noqa: E402
from mirrorsync.fixture.server import FixtureServer  # noqa: E402
from mirrorsync.fixture.specs import synthetic_compilers, synthetic_specs  # noqa: E402
from mirrorsync.location import Location, PostgresUrl  # noqa: E402
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
    server_cpu: float = 0.0  # PostgreSQL's own CPU seconds during the run


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


def _write_release(
    docroot: Path, pool: list[Any], specs: int, shift: int, r: int, churn: bool
) -> dict[str, str]:
    """Write release ``v{r}``'s mirrors (its root shifted by 1% if ``churn``): its roots."""
    first = r * shift + (max(1, specs // 100) if churn else 0)
    root = pool[first : first + specs]
    members = {"root": root}
    for j, label in enumerate(STACKS):
        low, high = j * specs // (len(STACKS) + 1), (j + 1) * specs // (len(STACKS) + 1)
        members[label] = [
            n for i, n in enumerate(root, first) if i % (j + 2) == 0 or low <= i - first < high
        ]
    uncached = {f"v{r}": {label: synthetic_compilers() for label in members}}
    build_catalog_from_specs(
        docroot, {f"v{r}": members}, manifests=False, signed=False, uncached=uncached
    )
    return {label: f"v{r}" if label == "root" else f"v{r}/{label}" for label in members}


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


def _server_cpu(pg: Any) -> float:
    """CPU seconds the PostgreSQL server has used so far: the postmaster's own and
    its reaped backends' (cutime), plus each live child's (the run's backends run
    in the server, not in the timed process)."""
    if pg is None:
        return 0.0
    postmaster = int((pg.directory / "data" / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _db_size(database: str, pg: Any) -> float:
    if not database.startswith("postgresql"):
        return (
            sum(p.stat().st_size for p in Path(database).parent.glob(Path(database).name + "*"))
            / 2**20
        )
    name = database.rsplit("/", 1)[-1].split("?")[0]
    out = pg.psql(f"SELECT pg_database_size('{name}')")
    return int(out.strip().splitlines()[-1].strip()) / 2**20


def _line(name: str, step: str, run: Run) -> None:
    print(
        f"{name:10} {step:15}: wall {run.wall:6.2f}s cpu {run.cpu:6.2f}s"
        f" (+ server {run.server_cpu:5.2f}s) peak {run.peak_mb:6.1f} MB db {run.db_mb:7.1f} MB",
        flush=True,
    )


def _slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against 1, 2, ..., as a fraction of the first."""
    xs = range(1, len(values) + 1)
    mx, my = statistics.mean(xs), statistics.mean(values)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True))
    den = sum((x - mx) ** 2 for x in xs)
    return num / den / values[0] if den and values[0] else 0.0


def _growth(rows: list[Run], churns: list[Run]) -> dict[str, float]:
    """Release k's cost against release 1's, and each cost's slope per release."""
    out: dict[str, float] = {}
    grown = [b.db_mb - a.db_mb for a, b in zip([Run(0, 0, 0, 0), *churns], rows, strict=False)]
    for kind, runs in (("sync", rows), ("churn", churns)):
        for what in ("wall", "cpu", "server_cpu", "peak_mb"):
            values = [getattr(r, what) for r in runs]
            if not values[0]:
                continue  # no server (SQLite)
            out[f"{kind}_{what}_last_vs_first"] = values[-1] / values[0]
            out[f"{kind}_{what}_slope"] = _slope(values)
    out["db_growth_last_vs_first"] = grown[-1] / grown[0]
    out["db_growth_slope"] = _slope(grown)
    return out


_PG_EMPTY: list[float] = []


def _pg_empty_mb(pg: Any) -> float:
    """The size of a PostgreSQL database with every migration and no history (MB)."""
    if not _PG_EMPTY:
        url = pg.url(pg.new_database())
        anyio.run(_create_empty, PostgresUrl(url))
        _PG_EMPTY.append(_db_size(url, pg))
    return _PG_EMPTY[0]


def scale(args: argparse.Namespace, work: Path, pg: Any) -> dict[str, Any]:
    """Release k is added (first sync), then churned (a day of churn), for k = 1..N.

    The site is written once per step and synced by each backend in turn; a
    release keeps its churned state, so each run syncs only what changed.
    """
    shift = max(1, round(args.specs * (1 - args.overlap)))
    pool = synthetic_specs(args.specs + shift * args.releases + args.specs // 50, seed=31)
    backends = ["sqlite"] + (["postgresql"] if pg is not None else [])
    docroot = work / "www-scale"
    shutil.rmtree(docroot, ignore_errors=True)
    docroot.mkdir(parents=True)
    server = FixtureServer(docroot).start()
    rows: dict[str, list[Run]] = {b: [] for b in backends}
    churns: dict[str, list[Run]] = {b: [] for b in backends}
    try:
        databases = {
            b: str(work / f"{b}.db") if b == "sqlite" else pg.url(pg.new_database())
            for b in backends
        }
        configs = {b: _config(work / f"{b}.yaml", databases[b], server) for b in backends}
        roots: dict[str, dict[str, str]] = {}
        for k in range(1, args.releases + 1):
            for step, churn, runs in (("sync", False, rows), ("churn", True, churns)):
                roots[f"v{k - 1}"] = _write_release(docroot, pool, args.specs, shift, k - 1, churn)
                write_catalog(docroot, roots)
                for backend in backends:
                    before = _server_cpu(pg) if backend == "postgresql" else 0.0
                    run = _mirrorsync(configs[backend], "once")
                    if backend == "postgresql":
                        run.server_cpu = _server_cpu(pg) - before
                    run.db_mb = _db_size(databases[backend], pg)
                    runs[backend].append(run)
                    what = f"release {k:2} {'first sync' if step == 'sync' else 'churn'}"
                    _line(backend, what, run)
    finally:
        server.stop()
    results: dict[str, Any] = {}
    for backend in backends:
        results[backend] = {
            "releases": [r.__dict__ for r in rows[backend]],
            "churn": [r.__dict__ for r in churns[backend]],
            **_growth(rows[backend], churns[backend]),
        }
        _table(backend, rows[backend], churns[backend], results[backend])
    if "postgresql" in results:
        last_pg = results["postgresql"]["churn"][-1]["db_mb"]
        last_sqlite = results["sqlite"]["churn"][-1]["db_mb"]
        sqlite_empty = work / "scale-empty.db"
        anyio.run(_create_empty, sqlite_empty)
        ratio = last_pg / last_sqlite
        beyond = (last_pg - _pg_empty_mb(pg)) / (last_sqlite - sqlite_empty.stat().st_size / 2**20)
        results["pg_vs_sqlite_size"] = ratio
        results["pg_vs_sqlite_size_beyond_empty"] = beyond
        print(
            f"after release {args.releases}: PostgreSQL / SQLite database size {ratio:.2f}x,"
            f" {beyond:.2f}x beyond an empty database ({_pg_empty_mb(pg):.1f} MB on PostgreSQL)",
            flush=True,
        )
    return results


def _table(backend: str, rows: list[Run], churns: list[Run], growth: dict[str, Any]) -> None:
    """The per-release table, as the README carries it."""
    print(
        f"\n{backend}: release | first sync wall, CPU (+ server's), peak, db growth"
        " | churn wall, CPU (+ server's), peak | db after"
    )
    last = 0.0
    for k, (a, c) in enumerate(zip(rows, churns, strict=True), 1):
        server_a = f" + {a.server_cpu:.1f}" if backend == "postgresql" else ""
        server_c = f" + {c.server_cpu:.1f}" if backend == "postgresql" else ""
        print(
            f"| {k} | {a.wall:.1f} s | {a.cpu:.1f}{server_a} s | {a.peak_mb:.0f} MB"
            f" | {a.db_mb - last:.1f} MB | {c.wall:.1f} s | {c.cpu:.1f}{server_c} s"
            f" | {c.peak_mb:.0f} MB | {c.db_mb:.1f} MB |"
        )
        last = c.db_mb
    for name, value in growth.items():
        if isinstance(value, float):
            print(f"  {name:32} {value:7.3f}")


async def _create_empty(path: Location) -> None:
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
            pg_grown = 0.0
            cpus_sqlite, cpus_pg = [], []
            for _ in range(args.repeat):
                for p in work.glob("four.db*"):
                    p.unlink()
                run = _mirrorsync(_config(work / "four.yaml", str(db), servers["four"]), "once")
                walls_sqlite.append(run.wall)
                cpus_sqlite.append(run.cpu)
                url = pg.url(pg.new_database())
                served = _server_cpu(pg)
                run = _mirrorsync(_config(work / "pg.yaml", url, servers["four"]), "once")
                walls_pg.append(run.wall)
                cpus_pg.append(run.cpu + _server_cpu(pg) - served)
                pg_grown = _db_size(url, pg) - _pg_empty_mb(pg)
            rows["postgresql / sqlite first sync wall"] = statistics.median(
                walls_pg
            ) / statistics.median(walls_sqlite)
            # The server's CPU too (its backends', reaped by the postmaster): on a
            # loaded machine the wall ratio also measures how long the server waited
            # for a core, which SQLite, running in the client, never does.
            rows["postgresql / sqlite first sync CPU"] = statistics.median(
                cpus_pg
            ) / statistics.median(cpus_sqlite)
            # Beyond an empty database, as the storage row: PostgreSQL's empty one is
            # ~8 MB of system catalogue, which no amount of history changes.
            rows["postgresql / sqlite database size"] = pg_grown / (
                (db.stat().st_size - base) / 2**20
            )
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
    cli = installed_command()  # as the systemd unit runs it; PYTHONPATH picks --src's code
    cases = {
        "": [sys.executable, "-c", "pass"],
        "--version": [*cli, "--version"],
        "--help": [*cli, "--help"],
        "status": [*cli, "status"],
    }
    # Without .pyc files each run would compile config/ again: an installed
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
                "--src",
                str(RUN_SRC),
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
    parser.add_argument("--no-table", action="store_true", help="the releases only")
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
            results["table"] = {} if args.no_table else table(args, work, pg)
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
