"""The manifest crawl against nginx: mirrorsync vs bare aiohttp and plain httpx GETs.

Writes (once, cached in benchmarks/.cache/crawl-N/) a v3 build cache with N spec
manifests, serves it with Debian's nginx (its own instance, in a temporary
directory, on a free loopback port: one worker, keep-alive for the whole run,
no access log), then, per concurrency and --repeat times, interleaved, runs
each of these as its own process and reads its wall time and CPU (user +
system, all threads) from ``wait4``:

  aiohttp     bare aiohttp GETs of every manifest URL, reading each body, no checks
  httpx       plain httpx GETs through one AsyncClient with that many connections
  none        mirrorsync ``once`` with ``manifests: none`` (the index alone)
  new         mirrorsync ``once`` with ``manifests: new`` (the index and every manifest)

The crawl is ``new`` minus ``none`` (its wall time and its CPU); mirrorsync
parses, checks and stores every manifest, the references only read bodies. The
rates are medians; every figure is also given as a ratio to aiohttp's.

Issue 31's target is 0.6x aiohttp's rate (``ok`` / ``MISSED`` beside each ratio);
--json PATH writes the median ratios, per concurrency, for bench_scale.py's table.

Usage: python benchmarks/bench_crawl.py [--specs 10000] [--concurrency 8 16 32] [--repeat 3]
           [--src OLDER_CHECKOUT/src --src src]   (several versions, interleaved)
           [--httpx-repeat 0] [--json PATH]
       python benchmarks/bench_crawl.py --serve   (nginx on the cached docroot until ^C)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
CACHE = HERE / ".cache"
NGINX = "/usr/sbin/nginx"
#: Issue 31: the crawl at least 0.6x a bare aiohttp crawler's rate.
TARGET = 0.6


@dataclass
class Run:
    wall: float
    cpu: float


def docroot_for(n: int) -> Path:
    docroot = CACHE / f"crawl-{n}" / "www"
    if not (docroot.parent / "ready").exists():
        print(f"writing a mirror with {n} spec manifests ...", file=sys.stderr)
        sys.path.insert(0, str(SRC))
        from mirrorsync.fixture.build import build_catalog_from_specs
        from mirrorsync.fixture.specs import synthetic_specs

        build_catalog_from_specs(
            docroot, {"develop": {"root": synthetic_specs(n, seed=7)}}, manifests=True
        )
        (docroot.parent / "ready").write_text("")
    return docroot


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Nginx:
    """Debian's nginx on a free loopback port, serving ``docroot``; never a system service."""

    def __init__(self, docroot: Path) -> None:
        if not Path(NGINX).exists():
            sys.exit(f"{NGINX} not found: apt-get install nginx-light (or nginx)")
        self.dir = Path(tempfile.mkdtemp(prefix="mirrorsync-nginx-"))
        port = free_port()
        (self.dir / "nginx.conf").write_text(
            f"""
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    types {{ application/json json; }}
    default_type application/octet-stream;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {docroot};
    }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-g", "daemon off;"],
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit(f"nginx did not start: {(self.dir / 'error.log').read_text()[-1000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure(cmd: list[str], env: dict[str, str]) -> Run:
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.exit(f"{cmd} failed: {err.read().decode()[-2000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime)


def reference(cmd: list[str], env: dict[str, str]) -> Run:
    """A reference client's own timing of its GETs (start-up excluded)."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    wall, cpu = out.split()
    return Run(float(wall), float(cpu))


def config_text(url: str, database: Path, policy: str, concurrency: int) -> str:
    from bench_sync import config_text as catalog_config

    http = f"concurrency: {concurrency}, per_host_concurrency: {concurrency}, per_host_rate: 100000"
    return catalog_config(url, database, manifests=policy, http=http)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--httpx-repeat", type=int, default=1, help="runs of the (slow) plain httpx reference"
    )
    parser.add_argument(
        "--src",
        type=Path,
        action="append",
        help="mirrorsync sources to run (repeatable: e.g. an older checkout's src/ too, "
        "measured interleaved in the same run); default: this checkout's",
    )
    parser.add_argument("--serve", action="store_true", help="only serve the docroot with nginx")
    parser.add_argument("--json", type=Path, help="write {concurrency: ratio to aiohttp} here")
    args = parser.parse_args()
    sources: list[Path] = [p.resolve() for p in args.src or [SRC]]

    docroot = docroot_for(args.specs)
    server = Nginx(docroot)
    if args.serve:
        print(server.url, docroot, flush=True)
        try:
            server.proc.wait()
        except KeyboardInterrupt:
            server.stop()
        return 0
    for src in sources:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    work = Path(tempfile.mkdtemp(prefix="mirrorsync-crawl-"))
    n = args.specs
    fetch = [sys.executable, str(HERE / "crawl_reference.py"), server.url, str(docroot)]
    lines = []
    ratios: dict[str, dict[int, float]] = {}
    try:
        for c in args.concurrency:
            crawls = (
                [f"mirrorsync ({src.parent.name})" for src in sources]
                if len(sources) > 1
                else ["mirrorsync"]
            )
            runs: dict[str, list[Run]] = {"aiohttp": [], "httpx": [], **{m: [] for m in crawls}}
            for k in range(args.repeat):
                runs["aiohttp"].append(reference([*fetch, "aiohttp", str(c)], env))
                if k < args.httpx_repeat:
                    runs["httpx"].append(reference([*fetch, "httpx", str(c)], env))
                for i, src in enumerate(sources):
                    walls = {}
                    for policy in ("none", "new"):
                        config = work / f"{policy}-{c}-{k}-{i}.yaml"
                        database = work / f"{c}-{k}-{policy}-{i}.db"
                        config.write_text(config_text(server.url, database, policy, c))
                        cmd = [sys.executable, "-m", "mirrorsync", "-q", "-c", str(config), "once"]
                        walls[policy] = measure(cmd, {**env, "PYTHONPATH": str(src)})
                    runs[crawls[i]].append(
                        Run(
                            walls["new"].wall - walls["none"].wall,
                            walls["new"].cpu - walls["none"].cpu,
                        )
                    )
            runs = {name: rs for name, rs in runs.items() if rs}
            rate = {name: statistics.median(n / r.wall for r in rs) for name, rs in runs.items()}
            spread = {
                name: f"{min(n / r.wall for r in rs):.0f}-{max(n / r.wall for r in rs):.0f}"
                for name, rs in runs.items()
            }
            cpu_ms = {
                name: statistics.median(r.cpu for r in rs) / n * 1000 for name, rs in runs.items()
            }
            parts = []
            for name in runs:
                ratio = rate[name] / rate["aiohttp"]
                ratios.setdefault(name, {})[c] = ratio
                verdict = (" ok" if ratio >= TARGET else " MISSED") if name in crawls else ""
                parts.append(
                    f"{name} {rate[name]:.0f}/s ({spread[name]}; {cpu_ms[name]:.3f} ms CPU each; "
                    f"{ratio:.2f}x aiohttp{verdict})"
                )
            lines.append(f"concurrency {c:>2}: " + " | ".join(parts))
            print(lines[-1], file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\ncrawl of {n} spec manifests against nginx, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, medians of {args.repeat} (spread in /s)"
    )
    for line in lines:
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(ratios, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
