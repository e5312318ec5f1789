"""Benchmark a local copy (``mirrorsync mirror``) against ``curl --parallel`` on loopback.

Generates a v3 build cache of a few GB of binaries (repeated bytes, so it is
cheap to make, with real sha256 checksums), serves it from the fixture server
in its own process on 127.0.0.1, syncs it once (``manifests: new``: a copy holds only crawled manifests), then, in
alternation and ``--repeat`` times each:

  mirrorsync  ``mirrorsync mirror`` into an empty directory: every blob streamed
              to a temporary name, length and sha256 checked, flushed (fsync)
              and renamed; the manifests; the index published last
  curl        ``curl --parallel --parallel-max C`` fetching the same blobs into a
              directory (no checks, no fsync): the HTTP ceiling of this machine
  httpx       plain httpx, C streams at once, reading every body and keeping
              nothing: the ceiling of Python's HTTP stack alone

at the same concurrency. It reports each one's median throughput (bytes of
blobs / wall time of the process) and their ratio. The machines this runs on
are shared: compare the ratio, not the absolute figures.

Usage: python benchmarks/bench_mirror.py [--gib 3] [--blob-mib 128] [--concurrency 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

from mirrorsync.fixture.build import write_catalog, write_v3_mirror  # noqa: E402
from mirrorsync.fixture.specs import Node, synthetic_specs  # noqa: E402


def _tarball(size: int) -> Callable[[Node], bytes]:
    def make(node: Node) -> bytes:
        block = hashlib.sha256(node["hash"].encode()).digest() * 2048  # 64 KiB, per spec
        return (block * (size // len(block) + 1))[:size]

    return make


def _blobs(docroot: Path) -> list[tuple[str, int]]:
    """(path under the docroot, size) of every blob a spec manifest names."""
    out = []
    for manifest in sorted((docroot / "develop/v3/manifests/spec").rglob("*.spec.manifest.json")):
        for record in json.loads(manifest.read_bytes())["data"]:
            checksum = record["checksum"]
            out.append((f"develop/blobs/sha256/{checksum[:2]}/{checksum}", record["contentLength"]))
    return out


def _config(work: Path, url: str, concurrency: int, mirrors: bool) -> Path:
    text = f"""database: {work / "state.db"}
sources:
  - name: bench
    kind: catalog
    url: {url}/cache_spack_io_index.json
    bucket_urls: {{spack-binaries: {url}/}}
    manifests: new
http: {{concurrency: {concurrency}, per_host_concurrency: {concurrency}, per_host_rate: 100000,
        timeout: 120}}
"""
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


def _timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{cmd[:4]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=3.0, help="total size of the binaries")
    parser.add_argument("--blob-mib", type=int, default=128, help="size of each binary")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("curl is not installed")
    # Byte-compile mirrorsync first, as pip does on install: no process pays for it.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC)], check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-mirror-", dir=args.dir))
    docroot = work / "www"
    count = max(1, int(args.gib * 1024 / args.blob_mib))
    started = time.perf_counter()
    specs = synthetic_specs(count, seed=15)
    write_v3_mirror(docroot / "develop", specs, signed=False, tarball=_tarball(args.blob_mib << 20))
    write_catalog(docroot, {"develop": {"root": "develop"}})
    blobs = _blobs(docroot)
    total = sum(size for _, size in blobs)
    print(
        f"upstream: {count} binaries, {len(blobs)} blobs, {total / 1e9:.2f} GB "
        f"(made in {time.perf_counter() - started:.1f}s)",
        flush=True,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync.fixture", "serve", str(docroot)],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        mirrorsync = [sys.executable, "-m", "mirrorsync", "-q", "-c"]
        _timed([*mirrorsync, str(_config(work, url, args.concurrency, False)), "once"], work)
        mirror_config = str(_config(work, url, args.concurrency, True))
        curl_config = work / "curl.txt"
        curl_config.write_text(
            "".join(
                f'url = "{url}/{p}"\noutput = "{work}/curl/{i}"\n' for i, (p, _) in enumerate(blobs)
            )
        )
        url_list = work / "urls.txt"
        url_list.write_text("".join(f"{url}/{p}\n" for p, _ in blobs))
        ours, theirs, plain = [], [], []
        for _ in range(args.repeat):
            shutil.rmtree(work / "copy", ignore_errors=True)
            ours.append(_timed([*mirrorsync, mirror_config, "mirror"], work))
            copied = sum(1 for _ in (work / "copy/blobs").rglob("*") if _.is_file())
            assert copied >= len(set(blobs)), (copied, len(blobs))
            shutil.rmtree(work / "copy", ignore_errors=True)
            shutil.rmtree(work / "curl", ignore_errors=True)
            (work / "curl").mkdir()
            curl = ["curl", "--parallel", "--parallel-max", str(args.concurrency), "-s", "-f"]
            theirs.append(_timed([*curl, "-K", str(curl_config)], work))
            shutil.rmtree(work / "curl", ignore_errors=True)
            httpx_cmd = [sys.executable, "-c", _HTTPX, str(url_list), str(args.concurrency)]
            plain.append(_timed(httpx_cmd, work))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    a, b, c = statistics.median(ours), statistics.median(theirs), statistics.median(plain)
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
        f"ratio mirrorsync/curl: {b / a:.2f}, mirrorsync/httpx: {c / a:.2f} (concurrency {args.concurrency})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
