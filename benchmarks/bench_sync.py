"""Benchmark mirrorsync against the naive approach at the size of the real develop cache.

Generates (once, cached in benchmarks/.cache/) a v3 build cache whose root index
holds N realistic spec nodes (~1.4 kB each: targets with feature lists, ~6
dependencies, variants), serves it from the fixture server in its own process
on 127.0.0.1, and measures each step as a separate process (wall time and peak
RSS from wait4):

  baseline    download, json.loads, insert every cached hash in one transaction
  first       mirrorsync's first sync (manifests: none)
  churn       a resync after 1% churn (N/100 hashes gone, N/100 new)
  unchanged   a resync with nothing changed
  growth      database size after 30 syncs with 1% churn each vs after the first
  scale       (--scale) first sync of 2N specs: memory beyond the raw index bytes
  crawl       10,000 spec manifests at --crawl-concurrency (per host too), against
              plain httpx GETs of the same URLs at the same concurrency, through one client and
              through clients of two connections each (the HTTP stack's ceiling)

With --postgresql, a throw-away PostgreSQL server is started as tests/postgres.py
starts one (Debian's binaries, a cluster in a temporary directory), with its
durability settings off (fsync, synchronous_commit, full_page_writes: commits
cost less than on a production server), and the first sync, 1% churn and
"nothing changed" steps run again with `database:` pointed at it, from the same index files in the same run; the report
adds them as ratios to the SQLite steps. `db migrate-to` of the SQLite history as
it is then (N + churn specs) into an empty database of that server is timed too.

The baseline, the 1% churn (alternating between two states, each resync a 1%
change) and the "nothing changed" step are run --repeat times and their median
is used. mirrorsync's sources are byte-compiled first, as pip does on install,
so that no step pays for compiling them (PYTHONDONTWRITEBYTECODE would otherwise
make every process compile every module). Every figure is a ratio to the baseline of the same run: these
machines are shared and noisy, absolute times do not compare across runs.

Usage: python benchmarks/bench_sync.py [--specs 100000] [--churn-syncs 30] [--scale] [--postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

import httpx  # noqa: E402

from mirrorsync.fixture.build import build_catalog_from_specs  # noqa: E402
from mirrorsync.fixture.specs import synthetic_compilers, synthetic_specs  # noqa: E402
from mirrorsync.formats.catalog import locate_index  # noqa: E402

CACHE = HERE / ".cache"
CATALOG = "cache_spack_io_index.json"
INDEX_MANIFEST = "develop/v3/manifests/index/index.manifest.json"


@dataclass
class Sample:
    name: str
    wall: float
    rss_mb: float
    note: str = ""


def median_of(runs: int, name: str, cmd: list[str], *, env: dict[str, str]) -> Sample:
    """For steps that leave nothing changed: the run with the median wall time."""
    return median([measure(name, cmd, env=env) for _ in range(runs)])


def median(samples: list[Sample]) -> Sample:
    ordered = sorted(samples, key=lambda s: s.wall)
    middle = ordered[len(ordered) // 2]
    middle.note = f"median of {len(ordered)}: " + ", ".join(f"{s.wall:.2f}" for s in ordered) + " s"
    return middle


def measure(name: str, cmd: list[str], *, env: dict[str, str] | None = None) -> Sample:
    """Run ``cmd`` as a child process; wall time and its own peak RSS."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{name} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
    return Sample(name, wall, usage.ru_maxrss / 1024)


class Dataset:
    """A docroot whose develop/root index can be switched between states by window."""

    def __init__(self, n: int, windows: int) -> None:
        self.n = n
        self.step = n // 100
        self.dir = CACHE / f"specs-{n}"
        self.docroot = self.dir / "www"
        self.windows = windows
        self._pool: list[dict[str, object]] | None = None

    def pool(self) -> list[dict[str, object]]:
        if self._pool is None:
            print(f"generating {self.n + self.windows * self.step} spec nodes ...", file=sys.stderr)
            self._pool = synthetic_specs(self.n + self.windows * self.step, seed=1)
        return self._pool

    def state_dir(self, k: int) -> Path:
        return self.dir / "states" / str(k)

    def ensure_cached(self, k: int) -> None:
        """States 0 and 1 are kept on disk between runs."""
        if (self.state_dir(k) / "ready").exists() and self.blob_of(k).exists():
            return
        self.write_state(k)
        keep = self.state_dir(k)
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.docroot / CATALOG, keep / "catalog.json")
        shutil.copy(self.docroot / INDEX_MANIFEST, keep / "manifest.json")
        (keep / "ready").write_text("")

    def write_state(self, k: int) -> Path:
        window = self.pool()[k * self.step : k * self.step + self.n]
        info = build_catalog_from_specs(
            self.docroot,
            {"develop": {"root": window}},
            manifests=False,
            uncached={"develop": {"root": synthetic_compilers()}},
        )
        return self.docroot / info["develop"]["root"].index_blob_relpath

    def blob_of(self, k: int) -> Path:
        manifest = self.state_dir(k) / "manifest.json"
        if not manifest.exists():
            return self.dir / "missing"
        checksum = str(json.loads(manifest.read_text())["data"][0]["checksum"])
        return self.docroot / "develop" / "blobs" / "sha256" / checksum[:2] / checksum

    def use_cached(self, k: int) -> None:
        shutil.copy(self.state_dir(k) / "catalog.json", self.docroot / CATALOG)
        shutil.copy(self.state_dir(k) / "manifest.json", self.docroot / INDEX_MANIFEST)


class Generator:
    """Writes states from a child process, so the benchmark's own RSS stays small.

    A forked child's peak RSS counts the parent's pages until it execs; a large
    spec pool in this process would inflate every measurement.
    """

    def __init__(self, n: int, windows: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--specs",
                str(n),
                "--churn-syncs",
                str(windows),
                "--generator",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def write(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "done":
            sys.exit(f"generator failed on {command!r}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def generator_loop(data: Dataset) -> int:
    for line in sys.stdin:
        verb, k = line.split()
        if verb == "cache":
            data.ensure_cached(int(k))
        else:
            data.write_state(int(k))
        print("done", flush=True)
    return 0


class Server:
    def __init__(self, docroot: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mirrorsync.fixture", "serve", str(docroot)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def config_text(
    url: str,
    database: Path | str,
    *,
    manifests: str = "none",
    http: str = "concurrency: 32, per_host_rate: 10000",
) -> str:
    """The benchmarks' configuration (bench_crawl.py and bench_release.py too)."""
    return (
        f"database: {database}\n"
        "sources:\n"
        "  - name: bench\n"
        "    kind: catalog\n"
        f"    url: {url}/{CATALOG}\n"
        f"    bucket_urls: {{spack-binaries: {url}/}}\n"
        f"    manifests: {manifests}\n"
        f"http: {{{http}}}\n"
    )


def mirrorsync(config: Path, *command: str) -> list[str]:
    return [sys.executable, "-m", "mirrorsync", "-q", "-c", str(config), *(command or ("once",))]


def db_bytes(database: Path) -> int:
    return sum(p.stat().st_size for p in database.parent.glob(database.name + "*") if p.is_file())


def checkpoint(database: Path) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=100_000)
    parser.add_argument("--churn-syncs", type=int, default=30)
    parser.add_argument("--scale", action="store_true", help="also sync 2N specs once")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the baseline and of 'unchanged' (median)"
    )
    parser.add_argument("--crawl-specs", type=int, default=10_000)
    parser.add_argument("--crawl-concurrency", type=int, default=32)
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="also run the first sync, churn and unchanged steps on a throw-away PostgreSQL server",
    )
    parser.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    data = Dataset(args.specs, args.churn_syncs)
    if args.generator:
        return generator_loop(data)
    # The venv's packages too: uv installs them without bytecode, and with
    # PYTHONDONTWRITEBYTECODE set every process would compile httpx & co. again.
    purelib = sysconfig.get_paths()["purelib"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC), purelib], check=False)
    crawl_line = crawl_sample(args.crawl_specs, args.crawl_concurrency)
    generator = Generator(args.specs, args.churn_syncs)
    generator.write("cache 0")
    generator.write("cache 1")
    data.use_cached(0)
    keep = {data.blob_of(0), data.blob_of(1)}
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    work = Path(tempfile.mkdtemp(prefix="mirrorsync-bench-"))
    server = Server(data.docroot)
    results: list[Sample] = []
    pg_results: list[Sample] = []
    try:
        data.use_cached(0)
        catalog = json.loads((data.docroot / CATALOG).read_text())
        blob_url = locate_index(
            catalog["develop"][0]["url"], {"spack-binaries": server.url + "/"}
        ).index_url
        index_size = int(
            json.loads((data.docroot / INDEX_MANIFEST).read_text())["data"][0]["contentLength"]
        )

        naive = [sys.executable, str(HERE / "naive_sync.py"), blob_url, str(work / "naive.db")]
        results.append(median_of(args.repeat, "baseline", naive, env=env))
        config = work / "bench.yaml"
        database = work / "bench.db"
        config.write_text(config_text(server.url, database))
        first = measure("first", mirrorsync(config), env=env)
        checkpoint(database)
        first_db = db_bytes(database)
        results.append(first)
        churns = []
        for k in range(args.repeat):  # states 1, 0, 1, ...: each resync a 1% churn
            data.use_cached(1 - k % 2)
            before = db_bytes(database)
            churns.append(measure("churn", mirrorsync(config), env=env))
            if k == 0:
                grew = db_bytes(database) - before
        data.use_cached(1)
        if args.repeat % 2 == 0:  # end on state 1, where the growth series starts
            subprocess.run(mirrorsync(config), env=env, check=True)
        churn = median(churns)
        churn.note += (
            f"; db grew {grew / 1e6:.1f} MB at the first (first sync wrote {first_db / 1e6:.1f} MB)"
        )
        results.append(churn)
        server_log_before = _server_requests(server.url)
        unchanged = median_of(args.repeat, "unchanged", mirrorsync(config), env=env)
        blobs = [
            r for r in _server_requests(server.url)[len(server_log_before) :] if "/blobs/" in r
        ]
        unchanged.note += f"; index blob requests: {len(blobs)}"
        results.append(unchanged)
        if args.postgresql:  # the same steps from the same index files, on PostgreSQL
            pg_results = postgresql_steps(data, server.url, database, work, args.repeat, env)
            data.use_cached(1)  # where the growth series below starts

        # Database growth over repeated 1% churn (states 2..K are written on the fly).
        for k in range(2, args.churn_syncs + 1):
            old = {p for p in (data.docroot / "develop" / "blobs").rglob("*") if p.is_file()}
            generator.write(f"write {k}")
            subprocess.run(mirrorsync(config), env=env, check=True)
            for p in old:  # keep the docroot from growing by an index per step
                if p.stat().st_size > 1e6 and p not in keep:
                    p.unlink()
        checkpoint(database)
        growth = db_bytes(database) / first_db
        data.use_cached(0)  # leave the cache as the next run expects it
    finally:
        server.stop()
        generator.close()

    if args.scale:
        big, big_index = scale_sample(args.specs * 2, env)
        first = next(r for r in results if r.name == "first")
        beyond = (big.rss_mb - big_index / 2**20) / (first.rss_mb - index_size / 2**20)
        big.note = (
            f"RSS beyond raw index bytes: {beyond:.2f}x that of {args.specs} specs (target < 2x)"
        )
        results.append(big)

    base = results[0]
    targets = {"first": (0.5, 0.3), "churn": (0.25, None), "unchanged": (0.05, None)}
    print(
        f"\nmirrorsync benchmark: {args.specs} specs, index {index_size / 1e6:.0f} MB, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    print(
        f"{'step':<11} {'wall s':>8} {'RSS MB':>8} {'wall x':>8} {'RSS x':>7}  target          note"
    )
    for s in results:
        wall_x, rss_x = s.wall / base.wall, s.rss_mb / base.rss_mb
        target = targets.get(s.name)
        verdict = ""
        if target:
            ok = wall_x <= target[0] and (target[1] is None or rss_x <= target[1])
            verdict = (
                f"<= {target[0]}x"
                + (f", {target[1]}x" if target[1] else "")
                + (" ok" if ok else " MISSED")
            )
        print(
            f"{s.name:<11} {s.wall:8.2f} {s.rss_mb:8.0f} {wall_x:8.3f} {rss_x:7.3f}  {verdict:<15} {s.note}"
        )
    print(
        f"{'growth':<11} database after {args.churn_syncs} syncs with 1% churn: {growth:.2f}x its size after the first (target <= 1.5x){' ok' if growth <= 1.5 else ' MISSED'}"
    )
    print(f"{'crawl':<11} {crawl_line}")
    if args.postgresql:
        print_postgresql(results, pg_results)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def postgresql_steps(
    data: Dataset, url: str, sqlite_db: Path, work: Path, repeat: int, env: dict[str, str]
) -> list[Sample]:
    """first, churn and unchanged with `database:` on a throw-away PostgreSQL server,
    then `db migrate-to` of the SQLite history (``sqlite_db``) into an empty database."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import postgres  # tests/postgres.py: how the tests start a server

    bindir = postgres.binaries()
    if bindir is None:
        sys.exit("--postgresql: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    pg = postgres.start(bindir)
    try:
        # The tests' server: fsync, synchronous_commit and full_page_writes off (given on
        # pg_ctl's command line, which ALTER SYSTEM cannot override): commits cost less
        # than on a production server.
        config = work / "bench-pg.yaml"
        config.write_text(config_text(url, pg.url(pg.new_database())))
        samples: list[Sample] = []
        data.use_cached(0)
        samples.append(measure("first", mirrorsync(config), env=env))
        churns = []
        for k in range(repeat):  # states 1, 0, 1, ...: each resync a 1% churn
            data.use_cached(1 - k % 2)
            churns.append(measure("churn", mirrorsync(config), env=env))
        samples.append(median(churns))
        samples.append(median_of(repeat, "unchanged", mirrorsync(config), env=env))
        sqlite_config = work / "bench.yaml"
        target = pg.url(pg.new_database())
        migrate = measure(
            "migrate-to", mirrorsync(sqlite_config, "db", "migrate-to", target), env=env
        )
        with sqlite3.connect(sqlite_db) as conn:
            specs, events = (
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("specs", "events")
            )
        migrate.note = f"{specs} specs, {events} events copied"
        samples.append(migrate)
        return samples
    finally:
        pg.stop()


def print_postgresql(results: list[Sample], pg_results: list[Sample]) -> None:
    base = results[0]
    sqlite = {s.name: s for s in results}
    print("\nPostgreSQL (same run, same index files; server on this machine, fsync off)")
    print(
        f"{'step':<11} {'wall s':>8} {'RSS MB':>8} {'x SQLite':>9} {'wall x':>8} {'RSS x':>7}  note"
    )
    for s in pg_results:
        other = sqlite.get(s.name)
        ratio = f"{s.wall / other.wall:9.2f}" if other else f"{'':>9}"
        print(
            f"{s.name:<11} {s.wall:8.2f} {s.rss_mb:8.0f} {ratio} {s.wall / base.wall:8.3f}"
            f" {s.rss_mb / base.rss_mb:7.3f}  {s.note}"
        )


def crawl_sample(n: int, concurrency: int) -> str:
    """Manifests per second: mirrorsync's crawl, and plain httpx on the same URLs."""
    docroot = CACHE / f"crawl-{n}" / "www"
    if not (docroot.parent / "ready").exists():
        print(f"writing a mirror with {n} spec manifests ...", file=sys.stderr)
        specs = synthetic_specs(n, seed=7)
        build_catalog_from_specs(docroot, {"develop": {"root": specs}}, manifests=True)
        (docroot.parent / "ready").write_text("")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    work = Path(tempfile.mkdtemp(prefix="mirrorsync-crawl-"))
    server = Server(docroot)
    try:
        ceilings = {}  # one plain client; plain clients of two connections each
        for per_client in (concurrency, 2):
            raw = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "raw_fetch.py"),
                    server.url,
                    str(docroot),
                    str(concurrency),
                    str(per_client),
                ],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            ).stdout
            ceilings[per_client] = n / float(raw.split(" in ")[1].split("s")[0])
        walls = {}
        for policy in ("none", "new"):  # the index alone, then the index and every manifest
            config = work / f"{policy}.yaml"
            config.write_text(
                config_text(server.url, work / f"{policy}.db")
                .replace("manifests: none", f"manifests: {policy}")
                # The same concurrency as the plain clients: per host too (its default,
                # half of http.concurrency, ran 16 requests against 32 plain tasks).
                .replace(
                    "concurrency: 32",
                    f"concurrency: {concurrency}, per_host_concurrency: {concurrency}",
                )
            )
            walls[policy] = measure(policy, mirrorsync(config), env=env).wall
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    crawl = walls["new"] - walls["none"]
    rate, one, pools = n / crawl, ceilings[concurrency], ceilings[2]
    return (
        f"{n} spec manifests at concurrency {concurrency}: {crawl:.2f}s, {rate:.0f}/s "
        f"(target >= 500/s{' ok' if rate >= 500 else ' MISSED'}); plain httpx GETs of the "
        f"same URLs: one client {one:.0f}/s, clients of 2 connections {pools:.0f}/s "
        f"(mirrorsync {rate / pools:.2f}x of that)"
    )


def _server_requests(url: str) -> list[str]:
    return [r["path"] for r in httpx.get(f"{url}/_fixture/requests").json()]


def scale_sample(n: int, env: dict[str, str]) -> tuple[Sample, int]:
    data = Dataset(n, 0)
    generator = Generator(n, 0)
    generator.write("cache 0")
    generator.close()
    data.use_cached(0)
    work = Path(tempfile.mkdtemp(prefix="mirrorsync-bench-"))
    server = Server(data.docroot)
    try:
        config = work / "scale.yaml"
        config.write_text(config_text(server.url, work / "scale.db"))
        sample = measure(f"first {n // 1000}k", mirrorsync(config), env=env)
        size = int(
            json.loads((data.docroot / INDEX_MANIFEST).read_text())["data"][0]["contentLength"]
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return sample, size


if __name__ == "__main__":
    raise SystemExit(main())
