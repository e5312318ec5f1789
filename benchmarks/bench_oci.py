"""Benchmark a copy into an OCI registry against a directory copy and curl uploads.

Generates a v3 build cache of binaries (gzip-stored repeated bytes: cheap to make,
real gzip so each layer's uncompressed digest is computed as for a real cache),
serves it from the fixture server in its own process, starts Debian's
``docker-registry`` on loopback (filesystem storage in the work directory), syncs
once, then, in alternation and ``--repeat`` times each:

  oci         ``mirrorsync mirror`` into a new repository of the registry: each
              tarball downloaded (length and sha256 checked), its uncompressed
              digest computed, uploaded (POST + PUT), then the spec images and
              the index image
  directory   ``mirrorsync mirror`` into an empty directory (the same selection)
  curl        the same tarball bytes uploaded by ``curl --parallel``: one pass of
              POSTs opening the upload sessions, one pass of PUTs sending the
              bytes (what a registry needs at least; no download, no checks)

at the same concurrency. It prints each one's median throughput (bytes of
tarballs / wall time) and the ratios. The machines this runs on are shared:
compare the ratios, not the absolute figures.

Usage: python benchmarks/bench_oci.py [--mib 512] [--blob-mib 32] [--concurrency 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
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
sys.path.insert(0, str(HERE.parent / "tests"))

from benchkit import spec_tarball, timed  # noqa: E402
from mirrorsync.fixture.build import write_v3_mirror  # noqa: E402
from mirrorsync.fixture.specs import Node, synthetic_specs  # noqa: E402
from registry import Registry  # noqa: E402


def _tarball(size: int) -> Callable[[Node], bytes]:
    plain = spec_tarball(size)

    def make(node: Node) -> bytes:
        return gzip.compress(plain(node), compresslevel=0)

    return make


def _tarballs(root: Path) -> list[tuple[Path, str, int]]:
    """(file, sha256, size) of every tarball the spec manifests name."""
    out = []
    for manifest in sorted((root / "v3/manifests/spec").rglob("*.spec.manifest.json")):
        record = json.loads(manifest.read_bytes())["data"][0]
        checksum = record["checksum"]
        out.append(
            (root / f"blobs/sha256/{checksum[:2]}/{checksum}", checksum, record["contentLength"])
        )
    return out


def _config(work: Path, url: str, concurrency: int, name: str, path: str | None) -> Path:
    text = f"""database: {work / "state.db"}
sources:
  - name: bench
    kind: mirror
    url: {url}/develop
    manifests: new
http: {{concurrency: {concurrency}, per_host_concurrency: {concurrency}, per_host_rate: 100000,
        timeout: 120}}
"""
    if path is not None:
        text += f"mirrors:\n  - {{name: {name}, path: '{path}', source: bench, delete_after: 0}}\n"
    config = work / f"{name}.yaml"
    config.write_text(text)
    return config


def _curl_upload(
    host: str, repo: str, blobs: list[tuple[Path, str, int]], work: Path, c: int
) -> float:
    """POST each upload session, then PUT each blob's bytes: two parallel curl passes."""
    heads = work / "heads"
    shutil.rmtree(heads, ignore_errors=True)
    heads.mkdir()
    posts = work / "posts.txt"
    posts.write_text(
        "next\n".join(
            f'url = "http://{host}/v2/{repo}/blobs/uploads/"\nrequest = "POST"\nsilent\nfail\n'
            f'dump-header = "{heads}/{i}"\noutput = "/dev/null"\nheader = "Content-Length: 0"\n'
            for i in range(len(blobs))
        )
    )
    curl = ["curl", "--parallel", "--parallel-max", str(c), "--no-progress-meter"]
    started = time.perf_counter()
    subprocess.run([*curl, "-K", str(posts)], check=True)
    puts = work / "puts.txt"
    lines = []
    for i, (path, sha, _) in enumerate(blobs):
        location = re.search(r"(?im)^location:\s*(\S+)", (heads / str(i)).read_text())
        assert location is not None
        target = location.group(1)
        if target.startswith("/"):
            target = f"http://{host}{target}"
        sep = "&" if "?" in target else "?"
        lines.append(
            f'url = "{target}{sep}digest=sha256:{sha}"\nupload-file = "{path}"\nsilent\nfail\n'
            'header = "Content-Type: application/octet-stream"\noutput = "/dev/null"\n'
        )
    puts.write_text("next\n".join(lines))
    subprocess.run([*curl, "-K", str(puts)], check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="total size of the binaries")
    parser.add_argument("--blob-mib", type=int, default=32, help="size of each binary")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("curl is not installed")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC)], check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-oci-", dir=args.dir))
    docroot = work / "www"
    count = max(1, args.mib // args.blob_mib)
    specs = synthetic_specs(count, seed=27)
    write_v3_mirror(docroot / "develop", specs, signed=False, tarball=_tarball(args.blob_mib << 20))
    blobs = _tarballs(docroot / "develop")
    total = sum(size for _, _, size in blobs)
    print(f"upstream: {count} binaries, {total / 1e6:.0f} MB of tarballs", flush=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync.fixture", "serve", str(docroot)],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    try:
        with Registry(work / "registry") as registry:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            mirrorsync = [sys.executable, "-m", "mirrorsync", "-q", "-c"]
            timed(
                [*mirrorsync, str(_config(work, url, args.concurrency, "sync", None)), "once"], work
            )
            oci, directory, curl = [], [], []
            for i in range(args.repeat):
                repo = registry.url(f"bench/oci{i}")
                config = _config(work, url, args.concurrency, f"oci{i}", repo)
                oci.append(timed([*mirrorsync, str(config), "mirror"], work))
                assert len(registry.tags(f"bench/oci{i}")) == count + 1
                shutil.rmtree(work / "copy", ignore_errors=True)
                config = _config(work, url, args.concurrency, f"dir{i}", str(work / "copy"))
                directory.append(timed([*mirrorsync, str(config), "mirror"], work))
                shutil.rmtree(work / "copy", ignore_errors=True)
                curl.append(
                    _curl_upload(registry.host, f"bench/curl{i}", blobs, work, args.concurrency)
                )
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    a, b, c = statistics.median(oci), statistics.median(directory), statistics.median(curl)

    def line(name: str, median: float, runs: list[float]) -> str:
        figures = ", ".join(f"{x:.2f}" for x in runs)
        return f"{name:22s}{total / median / 1e6:8.1f} MB/s  (median of {figures} s)"

    print(line("mirrorsync into OCI:", a, oci))
    print(line("mirrorsync into a dir:", b, directory))
    print(line("curl POST+PUT:", c, curl))
    print(
        f"ratio oci/dir: {b / a:.2f}, oci/curl: {c / a:.2f} "
        f"(throughput of OCI copy as a share of each; concurrency {args.concurrency})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
