"""Benchmark mirrorsync at the scale of a whole release, served by nginx.

One command from a fresh clone (after ``make .venv/bin/mirrorsync``):

    .venv/bin/python benchmarks/bench_release.py [--repeat 3] [--profile]

Generates once (cached in benchmarks/.cache/release-*) one release of --stacks
stacks (Spack CI stack names) plus ``root``, drawn from a shared pool of --specs
synthetic spec nodes (fixture/specs.py): each spec joins each stack with that
stack's probability (stacks of ~2,000 to ~44,000 specs) times its own popularity,
so a spec is in ~4 stacks on average; ``root`` is the union. Every index lists
the external compilers with ``in_buildcache: false``, as Spack 1.x does, in
Spack's v3 layout as the fixture writes it (manifests: none). State 2 is the
same release after churn: 1% of the pool retired from every stack holding it,
1% new specs added to the stacks they draw, so every stack changes by ~1%.
``--stacks 0`` makes a release of one stack (root) holding the whole pool: the
floor of bench_sync.py's single-stack sync, measured the same way.

nginx (installed with apt-get if missing) serves it from a temporary prefix on a
free loopback port. Each figure is a separate process (wall time, peak RSS and
CPU from wait4), run --repeat times interleaved (the order rotates each round),
reported as the median with the spread:

  release   first sync of state 1 and resync to state 2 by mirrorsync
            (``once``, manifests: none), the naive baseline (naive_release.py:
            download, json.loads, insert per stack) and the floor
            (floor_sync.py: curl, sha256, typed decode, minimal inserts into
            mirrorsync's schema, each step timed)
  crawl     --crawl-specs spec manifests at each of --concurrency: mirrorsync's
            manifests phase (``manifests: new`` minus ``none``, both with
            concurrency and per-host concurrency N) against bare GETs of the same
            URLs by plain httpx (raw_fetch.py), aiohttp (aiohttp_fetch.py) and
            ``curl --parallel --parallel-max N``
  download  CPU seconds per byte of a --large-mib blob: mirrorsync's fetch client
            (download_cpu.py, start-up subtracted) against curl, and curl + sha256sum

--profile then runs mirrorsync's first sync, resync, crawl and download once more
under py-spy (all threads, on-CPU samples) and writes the top of each profile to
benchmarks/.cache/profiles/. Results also go to benchmarks/.cache/results-*.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

CACHE = HERE / ".cache"
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(SRC)}
TIMEOUT = 900.0  # seconds any one measured process may take

# Stack names of Spack's CI (share/spack/gitlab/cloud_pipelines/stacks).
STACK_NAMES = (
    "e4s", "e4s-neoverse_v2", "e4s-neoverse_v1", "e4s-oneapi", "e4s-rocm-external",
    "e4s-cray-rhel", "e4s-cray-sles", "e4s-power", "e4s-arm", "e4s-cuda",
    "ml-linux-x86_64-cpu", "ml-linux-x86_64-cuda", "ml-linux-x86_64-rocm", "ml-linux-aarch64-cpu",
    "ml-linux-aarch64-cuda", "ml-darwin-aarch64-mps", "data-vis-sdk", "radiuss", "radiuss-aws",
    "radiuss-aws-aarch64", "aws-pcluster-x86_64_v4", "aws-pcluster-neoverse_v1", "build_systems",
    "developer-tools-x86_64_v3-linux-gnu", "developer-tools-aarch64-linux-gnu", "tutorial",
    "hep", "bootstrap-x86_64-linux-gnu", "bootstrap-aarch64-darwin", "windows-vis",
)  # fmt: skip


# -- measuring -----------------------------------------------------------------


@dataclass
class Run:
    wall: float
    rss_mb: float
    cpu: float
    stdout: str = ""


class StepFailed(Exception):
    pass


def run(cmd: list[str], *, cwd: Path | None = None, timeout: float = TIMEOUT) -> Run:
    """``cmd`` as a child process: wall time, its own peak RSS and CPU (wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=ENV, cwd=cwd)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise StepFailed(f"{Path(cmd[1]).name if len(cmd) > 1 else cmd[0]}: timed out")
            time.sleep(0.004)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        out.seek(0)
        if proc.returncode != 0:
            tail = err.read().decode(errors="replace").strip()[-1500:]
            raise StepFailed(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {tail}")
        return Run(
            wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, out.read().decode()
        )


@dataclass
class Series:
    """Repeated runs of one step: median and spread."""

    runs: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    def add(self, value: float, rss: float = 0.0) -> None:
        self.runs.append(value)
        self.rss.append(rss)

    def note(self, key: str, value: float) -> None:
        self.extra.setdefault(key, []).append(value)

    @property
    def ok(self) -> bool:
        return bool(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def rss_median(self) -> float:
        return statistics.median(self.rss)

    def spread(self, fmt: str = "{:.2f}") -> str:
        return "-".join(fmt.format(v) for v in (min(self.runs), max(self.runs)))

    def as_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "rss_mb": self.rss, "errors": self.errors, **self.extra}


def attempt(series: Series, what: str, fn: Any, *args: Any) -> Any:
    """Run one measurement; a failure is recorded and reported, never fatal."""
    try:
        return fn(*args)
    except (StepFailed, OSError, ValueError, KeyError, sqlite3.Error) as exc:
        message = f"{what}: {exc}"
        series.errors.append(message)
        print(f"  FAILED {message}", file=sys.stderr)
        return None


def rotate(items: list[str], k: int) -> list[str]:
    return items[k % len(items) :] + items[: k % len(items)]


# -- nginx -----------------------------------------------------------------------


def ensure_nginx() -> str:
    """The nginx binary; installed with apt-get (Debian's package) if missing."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    if shutil.which("apt-get") is None:
        sys.exit("bench_release: nginx is needed and there is no apt-get: install nginx")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    print("installing nginx (apt-get) ...", file=sys.stderr)
    quiet = {"env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, "check": False}
    subprocess.run([*sudo, "apt-get", "update", "-q"], **quiet)  # type: ignore[call-overload]
    subprocess.run(  # type: ignore[call-overload]
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx-light"],
        **quiet,
    )
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if not found:
        sys.exit("bench_release: could not install nginx with apt-get; install it and rerun")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """Our own nginx (one worker) serving ``root`` on a free loopback port, not the system's."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary, self.root = binary, root
        self.prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> Nginx:
        for _ in range(5):  # a port taken between the probe and nginx's bind: try another
            port = free_port()
            conf = self.prefix / "nginx.conf"
            user = "user root;\n" if os.geteuid() == 0 else ""
            conf.write_text(
                f"{user}worker_processes 1;\ndaemon off;\npid {self.prefix}/nginx.pid;\n"
                f"error_log {self.prefix}/error.log warn;\n"
                "events { worker_connections 4096; }\n"
                "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
                "  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n"
                "  default_type application/octet-stream;\n"
                "  types { application/json json; }\n"
                + "".join(
                    f"  {kind}_temp_path {self.prefix}/{kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                )
                + f"  server {{\n    listen 127.0.0.1:{port};\n    root {self.root};\n  }}\n}}\n"
            )
            self.proc = subprocess.Popen(
                [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e",
                 str(self.prefix / "error.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                    self.url = f"http://127.0.0.1:{port}"
                    return self
                time.sleep(0.05)
            self.stop()
        log = (self.prefix / "error.log").read_text(errors="replace")[-1000:]
        raise SystemExit(f"bench_release: nginx did not start: {log}")

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # our own master process, by its pid: it stops its worker
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


# -- data ------------------------------------------------------------------------


def release_dir(specs: int, stacks: int) -> Path:
    return CACHE / f"release-{specs}-{stacks}"


def generate_release(specs: int, stacks: int, seed: int = 17) -> None:
    """Write states 1 and 2 (in this process: run it as a child, ``--generate``)."""
    from mirrorsync.fixture.build import build_catalog_from_specs
    from mirrorsync.fixture.specs import synthetic_compilers, synthetic_specs

    out = release_dir(specs, stacks)
    reserve = specs // 100
    print(f"generating a release: {specs} + {reserve} spec nodes, {stacks} stacks ...",
          file=sys.stderr)  # fmt: skip
    pool = synthetic_specs(specs + reserve, seed=seed)
    rng = random.Random(seed)
    labels = list(STACK_NAMES[:stacks]) + [f"stack-{j}" for j in range(len(STACK_NAMES), stacks)]
    # Stack sizes fall geometrically (0.9 per stack) from ~44% of the pool to ~2%;
    # the sum of the probabilities is ~4.2 stacks per spec, as in the public develop.
    weights = [0.9**j for j in range(stacks)]
    probabilities = [4.2 * w / sum(weights) for w in weights]
    members: list[list[int]] = []
    for _ in range(len(pool)):
        popularity = 0.4 + 1.2 * rng.random()  # mean 1: some specs are in many stacks
        members.append([j for j, p in enumerate(probabilities) if rng.random() < p * popularity])
    retired = set(rng.sample(range(specs), reserve))
    compilers = synthetic_compilers()
    for state, chosen in (
        (1, range(specs)),
        (2, [i for i in range(specs + reserve) if i not in retired]),
    ):
        docroot = out / f"state{state}" / "www"
        shutil.rmtree(docroot, ignore_errors=True)
        by_stack: dict[str, list[dict[str, Any]]] = {"root": []}
        by_stack.update((label, []) for label in labels)
        for i in chosen:
            if members[i] or not stacks:  # --stacks 0: one stack of every spec (root)
                by_stack["root"].append(pool[i])
                for j in members[i]:
                    by_stack[labels[j]].append(pool[i])
        infos = build_catalog_from_specs(
            docroot,
            {"develop": by_stack},
            manifests=False,
            uncached={"develop": dict.fromkeys(by_stack, compilers)},
        )
        meta: dict[str, Any] = {
            "stacks": len(by_stack),
            "distinct": len(by_stack["root"]),
            "pairs": sum(len(v) for v in by_stack.values()),
            "index_bytes": sum(i.index_size for i in infos["develop"].values()),
            "sizes": {k: len(v) for k, v in by_stack.items()},
        }
        (out / f"state{state}" / "meta.json").write_text(json.dumps(meta, indent=1))
        print(f"  state {state}: {meta['pairs']} pairs, {meta['distinct']} distinct, "
              f"{meta['index_bytes'] / 1e6:.0f} MB of indexes", file=sys.stderr)  # fmt: skip
    # nginx's ETag is the mtime (in seconds) and the size: a file of state 2 written in
    # the same second as its state 1 twin, with the same size, would answer a 304.
    # Date each state apart (state 1 two days ago, state 2 one day ago).
    now = time.time()
    for state, age in ((1, 2 * 86400), (2, 86400)):
        for path in (out / f"state{state}" / "www").rglob("*"):
            if path.is_file():
                os.utime(path, (now - age, now - age))
    (out / "ready").write_text("")


def generate_crawl(n: int) -> None:
    """The crawl's mirror: bench_sync.py's (same path, same content)."""
    from mirrorsync.fixture.build import build_catalog_from_specs
    from mirrorsync.fixture.specs import synthetic_specs

    docroot = CACHE / f"crawl-{n}" / "www"
    print(f"writing a mirror with {n} spec manifests ...", file=sys.stderr)
    build_catalog_from_specs(docroot, {"develop": {"root": synthetic_specs(n, seed=7)}})
    (docroot.parent / "ready").write_text("")


def large_blob(mib: int) -> tuple[Path, str, int]:
    """(docroot, sha256, size) of one blob of ``mib`` MiB of random bytes."""
    import hashlib

    root = CACHE / f"large-{mib}"
    meta = root / "meta.json"
    if meta.exists():
        found = json.loads(meta.read_text())
        return root / "www", str(found["sha256"]), int(found["size"])
    print(f"writing a {mib} MiB blob ...", file=sys.stderr)
    tmp = root / "blob.tmp"
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tmp.open("wb") as f:
        for _ in range(mib):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    checksum = digest.hexdigest()
    blob = root / "www" / "blobs" / "sha256" / checksum[:2] / checksum
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, blob)
    meta.write_text(json.dumps({"sha256": checksum, "size": mib << 20}))
    return root / "www", checksum, mib << 20


def generated(flag: str, *extra: str) -> None:
    """Run a generator in a child process, so this process (and the RSS of every child
    forked from it) stays small."""
    subprocess.run([PY, __file__, flag, *extra], check=True, env=ENV)


# -- mirrorsync ------------------------------------------------------------------


def config(path: Path, url: str, database: Path, *, manifests: str, concurrency: int = 16,
           per_host: int | None = None) -> Path:  # fmt: skip
    from bench_sync import config_text

    host = f", per_host_concurrency: {per_host}" if per_host else ""
    http = f"concurrency: {concurrency}{host}, per_host_rate: 100000, timeout: 120"
    path.write_text(config_text(url, database, manifests=manifests, http=http))
    return path


def mirrorsync(cfg: Path) -> list[str]:
    return [PY, "-m", "mirrorsync", "-q", "-c", str(cfg), "once"]


def counts(database: Path) -> dict[str, int]:
    """What a sync left: the same for mirrorsync and the floor, or one of them is wrong."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        q = {
            "specs": "SELECT count(*) FROM specs",
            "current memberships": "SELECT count(*) FROM memberships WHERE left IS NULL",
            "memberships": "SELECT count(*) FROM memberships",
            "events": "SELECT count(*) FROM events",
            "listed uncached": "SELECT count(*) FROM listed_uncached",
            "versions": "SELECT count(*) FROM stack_versions",
        }
        return {k: int(conn.execute(sql).fetchone()[0]) for k, sql in q.items()}


# -- the phases ------------------------------------------------------------------


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Series:
        return self.series.setdefault(key, Series())


def phase_release(args: argparse.Namespace, nginx: str, res: Results, work: Path) -> None:
    data = release_dir(args.specs, args.stacks)
    if not (data / "ready").exists():
        generated("--generate", str(args.specs), str(args.stacks))
    for state in (1, 2):
        res.meta[f"state{state}"] = json.loads((data / f"state{state}" / "meta.json").read_text())
    link = work / "www"

    def use(state: int) -> None:  # nginx opens files per request: a symlink swap is atomic
        tmp = work / "www.next"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(data / f"state{state}" / "www")
        os.replace(tmp, link)
        # Into the page cache, so that whichever tool runs first after the switch does
        # not pay for nginx reading 767 MB from disk and the next ones not.
        for path in (data / f"state{state}" / "www").rglob("*"):
            if path.is_file():
                with path.open("rb") as f:
                    while f.read(1 << 24):
                        pass

    use(1)
    with Nginx(nginx, link) as server:
        url = server.url
        for r in range(args.repeat):
            print(f"release, round {r + 1}/{args.repeat}", file=sys.stderr)
            dbs = {t: work / f"{t}-{r}" / "state.db" for t in ("naive", "floor", "mirrorsync")}
            for db in dbs.values():
                db.parent.mkdir(parents=True, exist_ok=True)
            cfg = config(work / f"mirrorsync-{r}.yaml", url, dbs["mirrorsync"], manifests="none")
            cmds = {
                "naive": [PY, str(HERE / "naive_release.py"), url, str(dbs["naive"])],
                "floor": [PY, str(HERE / "floor_sync.py"), url, str(dbs["floor"]),
                          str(work / f"floor-{r}" / "scratch")],
                "mirrorsync": mirrorsync(cfg),
            }  # fmt: skip
            for step, state in (("first", 1), ("resync", 2)):
                use(state)
                tools = [t for t in ("naive", "floor", "mirrorsync") if t not in args.skip]
                for tool in rotate(tools, r):
                    series = res[f"{step} {tool}"]
                    done = attempt(series, f"{step} {tool}", run, cmds[tool])
                    if done is None:
                        continue
                    series.add(done.wall, done.rss_mb)
                    series.note("cpu", done.cpu)  # all threads, and waited-for children
                    print(f"  {step} {tool}: {done.wall:.2f}s {done.rss_mb:.0f} MB",
                          file=sys.stderr)  # fmt: skip
                    if tool == "floor":
                        for key, seconds in json.loads(done.stdout)["steps"].items():
                            series.note(key, seconds)
                if r == 0 and all(db.exists() for db in (dbs["mirrorsync"], dbs["floor"])):
                    mine, floor = counts(dbs["mirrorsync"]), counts(dbs["floor"])
                    res.meta[f"{step} counts"] = {"mirrorsync": mine, "floor": floor}
                    if mine != floor:
                        res.notes.append(f"{step}: mirrorsync wrote {mine}, the floor {floor}")
            for db in dbs.values():
                shutil.rmtree(db.parent, ignore_errors=True)
            shutil.rmtree(work / f"floor-{r}", ignore_errors=True)
        if args.profile:
            db = work / "profile" / "state.db"
            db.parent.mkdir(parents=True, exist_ok=True)
            cfg = config(work / "profile.yaml", url, db, manifests="none")
            for step, state in (("first sync", 1), ("resync", 2)):
                use(state)
                profile(res, f"release {step}", mirrorsync(cfg), work)
            shutil.rmtree(db.parent, ignore_errors=True)


def phase_crawl(args: argparse.Namespace, nginx: str, res: Results, work: Path) -> None:
    n = args.crawl_specs
    docroot = CACHE / f"crawl-{n}" / "www"
    if not (docroot.parent / "ready").exists():
        generated("--generate-crawl", str(n))
    paths = sorted("/" + str(p.relative_to(docroot)) for p in docroot.rglob("*.spec.manifest.json"))
    res.meta["crawl manifests"] = len(paths)
    with Nginx(nginx, docroot) as server:
        url = server.url
        curl_list = work / "curl-urls.txt"
        curl_list.write_text("".join(f'url = "{url}{p}"\noutput = "/dev/null"\n' for p in paths))

        def measure(tool: str, c: int, k: int) -> tuple[float, float | None]:
            """Seconds for the n manifests and the CPU seconds they took (user + system,
            all threads), start-up excluded where it can be."""
            if tool == "mirrorsync":
                done = {}
                for policy in ("none", "new"):
                    db = work / f"crawl-{policy}-{k}.db"
                    cfg = config(work / f"crawl-{policy}.yaml", url, db, manifests=policy,
                                 concurrency=c, per_host=c)  # fmt: skip
                    done[policy] = run(mirrorsync(cfg))
                    for p in work.glob(f"crawl-{policy}-{k}.db*"):
                        p.unlink()
                return done["new"].wall - done["none"].wall, done["new"].cpu - done["none"].cpu
            if tool in ("httpx", "aiohttp"):
                script = "raw_fetch.py" if tool == "httpx" else "aiohttp_fetch.py"
                extra = [str(c)] if tool == "httpx" else []  # one client of c connections
                out = run([PY, str(HERE / script), url, str(docroot), str(c), *extra]).stdout
                cpu = out.partition("cpu ")[2].partition("s")[0]  # the fetching part's own
                return float(out.split(" in ")[1].split("s")[0]), float(cpu) if cpu else None
            done_curl = run(["curl", "--silent", "--parallel", "--parallel-max", str(c),
                             "--write-out", "%{http_code}\\n", "--config", str(curl_list)])  # fmt: skip
            ok = done_curl.stdout.split().count("200")
            if ok != len(paths):
                raise StepFailed(f"curl got {ok} of {len(paths)} manifests with status 200")
            return done_curl.wall, done_curl.cpu

        tools = [t for t in ("mirrorsync", "httpx", "aiohttp", "curl") if t not in args.skip]
        for k in range(args.repeat):
            for c in args.concurrency:
                for tool in rotate(tools, k):
                    series = res[f"crawl {tool} {c}"]
                    got = attempt(series, f"crawl {tool} {c}", measure, tool, c, k)
                    if got is not None:
                        seconds, cpu = got
                        series.add(len(paths) / seconds)
                        if cpu is not None:
                            series.note("cpu ms per manifest", 1000 * cpu / len(paths))
                        print(f"  crawl {tool} at {c}: {len(paths) / seconds:.0f}/s",
                              file=sys.stderr)  # fmt: skip
        if args.profile:
            c = 16
            db = work / "crawl-profile.db"
            for policy in ("none", "new"):
                cfg = config(work / f"profile-{policy}.yaml", url, db, manifests=policy,
                             concurrency=c, per_host=c)  # fmt: skip
                if policy == "none":
                    run(mirrorsync(cfg))
                else:
                    profile(res, f"crawl at {c}", mirrorsync(cfg), work)


def phase_download(args: argparse.Namespace, nginx: str, res: Results, work: Path) -> None:
    docroot, checksum, size = large_blob(args.large_mib)
    res.meta["large blob bytes"] = size
    rel = f"/blobs/sha256/{checksum[:2]}/{checksum}"
    dest = work / "large.blob"
    with Nginx(nginx, docroot) as server:
        url = server.url + rel
        script = [PY, str(HERE / "download_cpu.py"), url, str(dest), str(size), checksum]
        cmds = {
            "mirrorsync": [script],
            "mirrorsync start-up": [[*script, "--skip"]],
            "curl": [["curl", "--silent", "--fail", "-o", str(dest), url]],
            "curl + sha256sum": [["curl", "--silent", "--fail", "-o", str(dest), url],
                                 ["sha256sum", str(dest)]],
        }  # fmt: skip
        for k in range(args.repeat):
            for tool in rotate(list(cmds), k):
                series = res[f"download {tool}"]

                def go(tool: str = tool) -> tuple[float, float]:
                    runs = [run(cmd) for cmd in cmds[tool]]
                    dest.unlink(missing_ok=True)
                    return sum(r.cpu for r in runs), sum(r.wall for r in runs)

                done = attempt(series, f"download {tool}", go)
                if done is not None:
                    series.add(done[0])
                    series.note("wall", done[1])
        if args.profile:
            profile(res, "download", script, work)
            dest.unlink(missing_ok=True)


# -- profiles --------------------------------------------------------------------


def profile(res: Results, name: str, cmd: list[str], work: Path) -> None:
    """Run ``cmd`` once under py-spy (every thread, on-CPU samples); keep the top."""
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    raw = work / "profile.txt"
    slug = name.replace(" ", "-")
    out_dir = CACHE / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"profiling {name} ...", file=sys.stderr)
    try:
        if not os.access(spy, os.X_OK):
            raise StepFailed("py-spy is not installed (it is in the dev extra)")
        run([spy, "record", "--rate", "250", "--nonblocking", "--format", "raw", "--output",
             str(raw), "--", *cmd])  # fmt: skip
        text = summarize(raw.read_text())
        shutil.copy(raw, out_dir / f"{slug}.raw")  # --summarize FILE reads it again
    except StepFailed as exc:
        text = f"py-spy failed ({exc}); profiling with cProfile (main thread only)\n"
        prof = work / "profile.pstats"
        run([PY, "-m", "cProfile", "-o", str(prof), *cmd[1:]])
        import pstats

        with contextlib.redirect_stdout(buffer := _Buffer()):
            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(25)
        text += buffer.text
    (out_dir / f"{slug}.txt").write_text(text)
    res.profiles[name] = text


class _Buffer:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def _area(frame: str) -> str:
    """Which part of the stack a frame's file belongs to."""
    path = frame.rpartition("(")[2]
    for key, area in (
        ("mirrorsync/fetch", "mirrorsync fetch/"),
        ("mirrorsync/sync", "mirrorsync sync/"),
        ("mirrorsync/store", "mirrorsync store/"),
        ("mirrorsync/formats", "mirrorsync formats/"),
        ("mirrorsync/", "mirrorsync other"),
        ("httpx/", "httpx"),
        ("httpcore/", "httpcore"),
        ("h11/", "h11"),
        ("anyio/", "anyio"),
        ("aiosqlite/", "aiosqlite (SQLite thread)"),
        ("sqlite3/", "sqlite3"),
        ("asyncio/", "asyncio"),
        ("tenacity/", "tenacity"),
        ("ssl.py", "ssl"),
        ("selectors.py", "selectors"),
        ("threading.py", "threading"),
        ("importlib", "imports"),
        ("<frozen", "imports"),
    ):
        if key in path:
            return area
    return "other: " + path.split(":")[0].rsplit("/", 2)[-1][:40]


def summarize(raw: str, top: int = 18) -> str:
    """A py-spy raw profile (``frame;frame;... count`` per line) as three tables:
    by area of the innermost frame, the hottest lines, the heaviest functions."""
    areas: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaves[frames[-1]] += count
        inside_imports = any("importlib._bootstrap" in f for f in frames)
        areas["imports" if inside_imports else _area(frames[-1])] += count
        if any("aiosqlite/core.py" in f for f in frames):
            threads["SQLite (aiosqlite's thread)"] += count
        elif any("WorkerThread.run (anyio" in f for f in frames):
            threads["worker threads (anyio.to_thread: index parsing)"] += count
        else:
            threads["main thread (event loop)"] += count
        for f in {f.rpartition(":")[0] for f in frames if "mirrorsync/" in f}:
            inclusive[f] += count
    if not total:
        return "no samples\n"
    out = [
        f"{total} samples at 250 Hz (~{total / 250:.1f} s on CPU, all threads)",
        "",
        "by thread:",
    ]
    out += [f"  {100 * c / total:5.1f}%  {a}" for a, c in threads.most_common()]
    out += ["", "by area (of the innermost frame; C code counts to the line calling it):"]
    out += [f"  {100 * c / total:5.1f}%  {a}" for a, c in areas.most_common(top)]
    out += ["", "hottest lines (self):"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in leaves.most_common(top)]
    out += ["", "mirrorsync's functions (inclusive):"]
    out += [f"  {100 * c / total:5.1f}%  {f})" for f, c in inclusive.most_common(top + 12)]
    return "\n".join(out) + "\n"


# -- the report ------------------------------------------------------------------


def report(res: Results, args: argparse.Namespace) -> str:
    lines = []
    s1, s2 = res.meta.get("state1"), res.meta.get("state2")
    lines.append(
        f"mirrorsync whole-release benchmark, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}Z, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}; "
        f"medians of {args.repeat} (spread min-max)"
    )
    if s1:
        lines.append(
            f"release: {s1['stacks']} stacks, {s1['index_bytes'] / 1e6:.0f} MB of indexes, "
            f"{s1['distinct']} distinct specs, {s1['pairs']} (stack, spec) pairs; resync to "
            f"state 2: {s2['pairs'] if s2 else '?'} pairs"
        )
    lines.append("")

    def cell(key: str, fmt: str = "{:.2f}") -> str:
        s = res.series.get(key)
        if s is None or not s.ok:
            return "failed" if s and s.errors else "-"
        return f"{fmt.format(s.median)} ({s.spread(fmt)})"

    def ratio(a: str, b: str, rss: bool = False) -> str:
        x, y = res.series.get(a), res.series.get(b)
        if not (x and y and x.ok and y.ok):
            return "-"
        if rss:
            return f"{x.rss_median / y.rss_median:.2f}x"
        return f"{x.median / y.median:.2f}x"

    if any(k.startswith("first") for k in res.series):
        lines.append("| step | mirrorsync s | naive s | floor s | vs naive (wall / RSS) | vs floor "
                     "(wall / RSS) | mirrorsync RSS MB |")  # fmt: skip
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for step, title in (("first", "first sync"), ("resync", "1% resync")):
            m = res.series.get(f"{step} mirrorsync")
            lines.append(
                f"| {title} | {cell(f'{step} mirrorsync')} | {cell(f'{step} naive')} | "
                f"{cell(f'{step} floor')} | {ratio(f'{step} mirrorsync', f'{step} naive')} / "
                f"{ratio(f'{step} mirrorsync', f'{step} naive', True)} | "
                f"{ratio(f'{step} mirrorsync', f'{step} floor')} / "
                f"{ratio(f'{step} mirrorsync', f'{step} floor', True)} | "
                f"{f'{m.rss_median:.0f}' if m and m.ok else '-'} |"
            )
        for step, title in (("first", "first sync"), ("resync", "1% resync")):
            cpu = {
                t: statistics.median(c.extra["cpu"])
                for t in ("mirrorsync", "naive", "floor")
                if (c := res.series.get(f"{step} {t}")) and "cpu" in c.extra
            }
            if "mirrorsync" in cpu and len(cpu) > 1:
                cm = cpu["mirrorsync"]
                lines.append(
                    f"CPU seconds (user + system, all threads and children), {title}: "
                    + ", ".join(f"{t} {v:.1f}" for t, v in cpu.items())
                    + "".join(f"; {cm / v:.2f}x {t}" for t, v in cpu.items() if t != "mirrorsync")
                )
        for step in ("first", "resync"):
            f = res.series.get(f"{step} floor")
            if f and f.ok and f.extra:
                parts = ", ".join(
                    f"{k} {statistics.median(v):.2f}" for k, v in f.extra.items() if k != "cpu"
                )
                lines.append(f"floor's steps, {step} (medians, s): {parts}")
        lines.append("")
    if any(k.startswith("crawl") for k in res.series):
        lines.append(f"crawl of {res.meta.get('crawl manifests')} spec manifests, per second "
                     "(median, spread); mirrorsync as a share of each")  # fmt: skip
        lines.append("| concurrency | mirrorsync | plain httpx | aiohttp | curl --parallel | "
                     "/ httpx | / aiohttp | / curl |")  # fmt: skip
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in args.concurrency:
            mc = f"crawl mirrorsync {c}"
            lines.append(
                f"| {c} | {cell(mc, '{:.0f}')} | {cell(f'crawl httpx {c}', '{:.0f}')} | "
                f"{cell(f'crawl aiohttp {c}', '{:.0f}')} | {cell(f'crawl curl {c}', '{:.0f}')} | "
                f"{ratio(mc, f'crawl httpx {c}')} | {ratio(mc, f'crawl aiohttp {c}')} | "
                f"{ratio(mc, f'crawl curl {c}')} |"
            )

        def cpu_ms(key: str) -> float | None:
            got = res.series.get(key)
            values = got.extra.get("cpu ms per manifest") if got else None
            return statistics.median(values) if values else None

        if any(cpu_ms(f"crawl mirrorsync {c}") for c in args.concurrency):
            lines.append("")
            lines.append("CPU ms per manifest (user + system, all threads; the fetching part), and "
                         "the reference's CPU over mirrorsync's (its share of the rate if CPU-bound)")  # fmt: skip
            lines.append("| concurrency | mirrorsync | plain httpx | aiohttp | curl | "
                         "aiohttp / mirrorsync | curl / mirrorsync |")  # fmt: skip
            lines.append("|---:|---:|---:|---:|---:|---:|---:|")
            for c in args.concurrency:
                got = {
                    t: cpu_ms(f"crawl {t} {c}") for t in ("mirrorsync", "httpx", "aiohttp", "curl")
                }
                mine = got["mirrorsync"]

                def share(
                    t: str, mine: float | None = mine, got: dict[str, float | None] = got
                ) -> str:
                    other = got[t]
                    return f"{other / mine:.2f}x" if other and mine else "-"

                cells = " | ".join(f"{v:.3f}" if v else "-" for v in got.values())
                lines.append(f"| {c} | {cells} | {share('aiohttp')} | {share('curl')} |")
        lines.append("")
    size = int(res.meta.get("large blob bytes", 0))
    if size:
        d = res.series
        lines.append(f"download of one {size / 2**20:.0f} MiB blob: CPU (user + system) per byte")

        def ns(key: str, minus: str | None = None) -> float | None:
            s = d.get(key)
            if not (s and s.ok):
                return None
            base = d.get(minus) if minus else None
            cost = s.median - (base.median if base and base.ok else 0.0)
            return 1e9 * cost / size

        mine = ns("download mirrorsync", "download mirrorsync start-up")
        curl, curl_sha = ns("download curl"), ns("download curl + sha256sum")
        for label, value in (
            ("mirrorsync fetch client (start-up subtracted)", mine),
            ("curl", curl),
            ("curl + sha256sum", curl_sha),
        ):
            if value is not None:
                lines.append(f"  {label}: {value:.2f} ns/byte")
        if mine and curl:
            lines.append(f"  mirrorsync / curl: {mine / curl:.2f}x"
                         + (f"; / (curl + sha256sum): {mine / curl_sha:.2f}x" if curl_sha else ""))  # fmt: skip
        wall = d.get("download mirrorsync")
        if wall and wall.ok and "wall" in wall.extra:
            lines.append(
                f"  wall: mirrorsync {statistics.median(wall.extra['wall']):.2f} s, curl "
                f"{statistics.median(d['download curl'].extra.get('wall', [0.0])):.2f} s"
            )
        lines.append("")
    errors = [e for s in res.series.values() for e in s.errors]
    if res.notes or errors:
        lines.append("notes:")
        lines += [f"  {n}" for n in (*res.notes, *errors)]
    for name, text in res.profiles.items():
        lines += ["", f"profile: {name}", text]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=100_000, help="the shared pool")
    parser.add_argument(
        "--stacks", type=int, default=30, help="stacks besides root (0: root alone, the whole pool)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--crawl-specs", type=int, default=10_000)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16, 32]
    )
    parser.add_argument("--large-mib", type=int, default=700)
    parser.add_argument(
        "--only", default="release,crawl,download", help="phases to run (comma-separated)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile with py-spy")
    parser.add_argument(
        "--skip",
        type=lambda s: set(s.split(",")),
        default=set(),
        help="references to leave out, to save time: naive, httpx, aiohttp, curl",
    )
    parser.add_argument("--generate", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate-crawl", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--summarize", type=Path, help="print the top of a py-spy raw profile")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize.read_text()))
        return 0
    if args.generate:
        generate_release(*args.generate)
        return 0
    if args.generate_crawl:
        generate_crawl(args.generate_crawl)
        return 0

    nginx = ensure_nginx()
    if shutil.which("curl") is None:
        sys.exit("bench_release: curl is needed (apt-get install curl)")
    # Byte-compiled, as pip does on install (uv does not): with PYTHONDONTWRITEBYTECODE
    # set, every process would otherwise compile httpx & co. from source (~1 s each).
    purelib = sysconfig.get_paths()["purelib"]
    subprocess.run([PY, "-m", "compileall", "-q", str(SRC), purelib], check=False)
    res = Results()
    work = Path(tempfile.mkdtemp(prefix="bench-release-"))
    phases = {"release": phase_release, "crawl": phase_crawl, "download": phase_download}
    try:
        for name in args.only.split(","):
            try:
                phases[name](args, nginx, res, work)
            except (StepFailed, OSError, subprocess.CalledProcessError, sqlite3.Error) as exc:
                res.notes.append(f"phase {name} stopped: {exc}")
                traceback.print_exc()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(res, args)
    print(text)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    (CACHE / f"results-{stamp}.json").write_text(
        json.dumps(
            {
                "meta": res.meta,
                "series": {k: v.as_json() for k, v in res.series.items()},
                "notes": res.notes,
                "report": text,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
