"""Benchmark a local copy (``mirrorsync mirror``) against ``curl --parallel`` on loopback.

Generates a v3 build cache of a few GB of binaries (repeated bytes, so it is
cheap to make, with real sha256 checksums), serves it on 127.0.0.1 with Debian's
nginx (bench_crawl.py's instance; ``--server fixture``: the fixture server in its
own process, the default when nginx is missing), syncs it once (``manifests: new``: a copy holds only crawled manifests), then, in
alternation and ``--repeat`` times each:

  mirrorsync  ``mirrorsync mirror`` into an empty directory: every blob streamed
              to a temporary name, length and sha256 checked, flushed (fsync)
              and renamed; the manifests; the index published last
  curl        ``curl --parallel --parallel-max C`` fetching the same blobs into a
              directory (no checks, no fsync): the HTTP ceiling of this machine
  curl+sha256 the same curl, then the sha256 of every file it wrote, in one timed
              shell command: issue 31's baseline (target: mirrorsync at least 0.9x
              its throughput), hashed twice: with ``openssl dgst -sha256`` (OpenSSL's
              SHA-NI code, what hashlib runs: the baseline the target is read
              against) and with coreutils' ``sha256sum`` (about 3.5x slower per byte
              on a SHA-NI CPU, so a lower bar)
  httpx       plain httpx, C streams at once, reading every body and keeping
              nothing: the ceiling of Python's HTTP stack alone

at the same concurrency. It reports each one's median throughput (bytes of
blobs / wall time of the process) and their ratio, and the CPU seconds of the
copy and of curl + openssl (a ratio that other work on the machine hardly moves). The machines this runs on
are shared: compare the ratio, not the absolute figures.

Usage: python benchmarks/bench_mirror.py [--gib 3] [--blob-mib 128] [--concurrency 8] [--repeat 3]
           [--server nginx|fixture] [--json PATH]   (PATH: the median ratios, for bench_scale.py)
           [--py-spy PROFILE.txt]   (one more, untimed copy, profiled)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

from bench_crawl import Nginx  # noqa: E402
from benchkit import catalog_config, spec_tarball, timed  # noqa: E402
from mirrorsync.fixture.build import write_catalog, write_v3_mirror  # noqa: E402
from mirrorsync.fixture.specs import synthetic_specs  # noqa: E402

#: Issue 31: a copy at least 0.9x the throughput of curl + sha256 (openssl) of the same files.
TARGET = 0.9


def _cpu_timed(cmd: list[str], cwd: Path, cpu: list[float]) -> float:
    """``timed``, and the CPU seconds (user + system) of ``cmd`` and its children
    appended to ``cpu``: unlike wall time, hardly changed by other work on the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed(cmd, cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def _blobs(docroot: Path) -> list[tuple[str, int]]:
    """(path under the docroot, size) of every blob a spec manifest names."""
    out = []
    for manifest in sorted((docroot / "develop/v3/manifests/spec").rglob("*.spec.manifest.json")):
        for record in json.loads(manifest.read_bytes())["data"]:
            checksum = record["checksum"]
            out.append((f"develop/blobs/sha256/{checksum[:2]}/{checksum}", record["contentLength"]))
    return out


def _config(work: Path, url: str, concurrency: int, mirrors: bool) -> Path:
    text = catalog_config(work, url, concurrency)
    if mirrors:
        text += f"mirrors:\n  - {{name: bench, path: {work / 'copy'}, source: bench, release: develop}}\n"
    path = work / ("mirror.yaml" if mirrors else "sync.yaml")
    path.write_text(text)
    return path


_HTTPX = """
import asyncio, sys, httpx
async def main(urls, concurrency):
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def one(url):
            async with slots, client.stream("GET", url) as response:
                response.raise_for_status()
                async for _ in response.aiter_raw():
                    pass
        await asyncio.gather(*(one(u) for u in urls))
asyncio.run(main(open(sys.argv[1]).read().split(), int(sys.argv[2])))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=3.0, help="total size of the binaries")
    parser.add_argument("--blob-mib", type=int, default=128, help="size of each binary")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp)")
    parser.add_argument(
        "--server",
        choices=("nginx", "fixture"),
        default="nginx" if os.path.exists("/usr/sbin/nginx") else "fixture",
    )
    parser.add_argument("--json", type=Path, help="write the median ratios here")
    parser.add_argument(
        "--src", type=Path, help="run this checkout's src as mirrorsync (the old figures)"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="after the timed runs, one more copy under ``py-spy record -f raw`` into this file",
    )
    args = parser.parse_args()
    for tool in ("curl", "openssl", "sha256sum"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    run_src = SRC if args.src is None else args.src.resolve()
    if args.src is not None:
        os.environ["PYTHONPATH"] = str(run_src)  # the mirrorsync processes timed below
    # Byte-compile mirrorsync first, as pip does on install: no process pays for it.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(run_src)], check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-mirror-", dir=args.dir))
    docroot = work / "www"
    count = max(1, int(args.gib * 1024 / args.blob_mib))
    started = time.perf_counter()
    specs = synthetic_specs(count, seed=15)
    write_v3_mirror(
        docroot / "develop", specs, signed=False, tarball=spec_tarball(args.blob_mib << 20)
    )
    write_catalog(docroot, {"develop": {"root": "develop"}})
    blobs = _blobs(docroot)
    total = sum(size for _, size in blobs)
    print(
        f"upstream: {count} binaries, {len(blobs)} blobs, {total / 1e9:.2f} GB "
        f"(made in {time.perf_counter() - started:.1f}s)",
        flush=True,
    )
    nginx: Nginx | None = None
    server: subprocess.Popen[str] | None = None
    if args.server == "nginx":
        work.chmod(0o755)  # nginx's worker drops to an unprivileged user when run as root
        nginx = Nginx(docroot)
        url = nginx.url
    else:
        server = subprocess.Popen(
            [sys.executable, "-m", "mirrorsync.fixture", "serve", str(docroot)],
            stdout=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        )
        assert server.stdout is not None
        url = server.stdout.readline().strip()
    try:
        mirrorsync = [sys.executable, "-m", "mirrorsync", "-q", "-c"]
        timed([*mirrorsync, str(_config(work, url, args.concurrency, False)), "once"], work)
        mirror_config = str(_config(work, url, args.concurrency, True))
        curl_config = work / "curl.txt"
        curl_config.write_text(
            "".join(
                f'url = "{url}/{p}"\noutput = "{work}/curl/{i}"\n' for i, (p, _) in enumerate(blobs)
            )
        )
        url_list = work / "urls.txt"
        url_list.write_text("".join(f"{url}/{p}\n" for p, _ in blobs))
        ours: list[float] = []
        theirs: list[float] = []
        plain: list[float] = []
        hashed: list[float] = []
        coreutils: list[float] = []
        ours_cpu: list[float] = []
        hashed_cpu: list[float] = []
        coreutils_cpu: list[float] = []
        for _ in range(args.repeat):
            shutil.rmtree(work / "copy", ignore_errors=True)
            ours.append(_cpu_timed([*mirrorsync, mirror_config, "mirror"], work, ours_cpu))
            copied = sum(1 for _ in (work / "copy/blobs").rglob("*") if _.is_file())
            assert copied >= len(set(blobs)), (copied, len(blobs))
            shutil.rmtree(work / "copy", ignore_errors=True)
            shutil.rmtree(work / "curl", ignore_errors=True)
            (work / "curl").mkdir()
            curl = ["curl", "--parallel", "--parallel-max", str(args.concurrency), "-s", "-f"]
            theirs.append(timed([*curl, "-K", str(curl_config)], work))
            shutil.rmtree(work / "curl", ignore_errors=True)
            for hasher, into in (("openssl dgst -sha256", hashed), ("sha256sum", coreutils)):
                (work / "curl").mkdir()
                fetch_and_hash = (
                    f"{shlex.join([*curl, '-K', str(curl_config)])}"
                    f" && find {shlex.quote(str(work / 'curl'))} -type f -print0"
                    f" | xargs -0 {hasher} > /dev/null"
                )
                cpu = hashed_cpu if into is hashed else coreutils_cpu
                into.append(_cpu_timed(["sh", "-c", fetch_and_hash], work, cpu))
                shutil.rmtree(work / "curl", ignore_errors=True)
            httpx_cmd = [sys.executable, "-c", _HTTPX, str(url_list), str(args.concurrency)]
            plain.append(timed(httpx_cmd, work))
        if args.py_spy is not None:
            shutil.rmtree(work / "copy", ignore_errors=True)
            spy = [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "-f",
                "raw",
                "--threads",
            ]
            timed(
                [
                    *spy,
                    "-o",
                    str(args.py_spy.resolve()),
                    "--",
                    *mirrorsync,
                    mirror_config,
                    "mirror",
                ],
                work,
            )
    finally:
        if nginx is not None:
            nginx.stop()
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    a, b, c = statistics.median(ours), statistics.median(theirs), statistics.median(plain)
    d, e = statistics.median(hashed), statistics.median(coreutils)
    print(
        f"mirrorsync mirror: {total / a / 1e6:7.1f} MB/s  (median of {', '.join(f'{x:.2f}' for x in ours)} s)"
    )
    print(
        f"curl --parallel:   {total / b / 1e6:7.1f} MB/s  (median of {', '.join(f'{x:.2f}' for x in theirs)} s)"
    )
    print(
        f"plain httpx:       {total / c / 1e6:7.1f} MB/s  "
        f"(median of {', '.join(f'{x:.2f}' for x in plain)} s)"
    )
    print(
        f"curl + openssl:    {total / d / 1e6:7.1f} MB/s  "
        f"(median of {', '.join(f'{x:.2f}' for x in hashed)} s)"
    )
    print(
        f"curl + sha256sum:  {total / e / 1e6:7.1f} MB/s  "
        f"(median of {', '.join(f'{x:.2f}' for x in coreutils)} s)"
    )
    f, g = statistics.median(ours_cpu), statistics.median(hashed_cpu)
    print(
        f"CPU (user + system, nginx not counted): mirrorsync {f:.2f} s, curl + openssl {g:.2f} s,"
        f" ratio {g / f:.2f}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    verdict = "ok" if d / a >= TARGET else "MISSED"
    print(
        f"ratio mirrorsync/curl: {b / a:.2f}, mirrorsync/(curl + openssl sha256): {d / a:.2f}"
        f" {verdict}, mirrorsync/(curl + sha256sum): {e / a:.2f},"
        f" mirrorsync/httpx: {c / a:.2f} (concurrency {args.concurrency}, {args.server})"
    )
    if args.json is not None:
        ratios = {
            "curl": b / a,
            "curl+openssl": d / a,
            "curl+sha256sum": e / a,
            "httpx": c / a,
            "cpu curl+openssl": g / f,
        }
        args.json.write_text(json.dumps(ratios, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
