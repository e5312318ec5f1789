"""Benchmark ``bundle export`` and ``bundle import`` against ``tar`` and ``sha256sum``.

Generates a v3 build cache of about ``--gib`` GB (blobs of ``--blob-mib`` MiB of
repeated bytes: cheap to make, real sha256), serves it from the fixture server in
its own process on 127.0.0.1 and makes copy A of it (``mirrorsync once``). Then,
in the same run and ``--repeat`` times each, on the same files:

  export   ``mirrorsync bundle export A OUT --full``: every file read, its sha256
           checked, written into one tar (flushed)
  tar -c   ``tar -cf OUT -C A blobs v3``: the same files into one tar
  import   ``mirrorsync bundle import OUT B`` into an empty directory (a configuration
           with only ``database:``): the tar read as a stream, every member's sha256
           checked, written beside its place, flushed (fsync) and renamed, index last
  tar -x   ``tar -xf OUT -C B2``: the same tar unpacked (no checks, no fsync)
  sha256   ``sha256sum`` of every file of A

The tars are also timed followed by ``sync`` of what they wrote (the bundle and the
copy are flushed to disk: a bundle is carried on media, a copy is served). It prints
each one's median wall time and the ratios export / tar -c, export / (tar -c, sync),
import / (tar -x, sync), export / (tar -c + sha256), import / (tar -x + sha256). Peak memory (max RSS of
the process) of export and import is measured at two sizes (``--gib`` and a
quarter of it): flat in bundle size means the ratio of the two is about 1.
The machines this runs on are shared: compare the ratios, not the absolute figures.

Usage: python benchmarks/bench_bundle.py [--gib 1] [--blob-mib 64] [--repeat 3] [--dir D]
"""

from __future__ import annotations

import argparse
import hashlib
import os
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

from mirrorsync.fixture.build import write_v3_mirror  # noqa: E402
from mirrorsync.fixture.specs import Node, synthetic_specs  # noqa: E402


def _tarball(size: int) -> Callable[[Node], bytes]:
    def make(node: Node) -> bytes:
        block = hashlib.sha256(node["hash"].encode()).digest() * 2048  # 64 KiB, per spec
        return (block * (size // len(block) + 1))[:size]

    return make


def _run(command: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process, which must succeed."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}")
    return seconds, usage.ru_maxrss


def _site(work: Path, gib: float, blob_mib: int) -> None:
    """Copy A of a generated cache, A's configuration (a.yaml) and the receiver's (b.yaml)."""
    docroot = work / "www"
    count = max(1, int(gib * 1024 / blob_mib))
    write_v3_mirror(
        docroot / "cache", synthetic_specs(count, seed=28), signed=False,
        tarball=_tarball(blob_mib << 20),
    )  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync.fixture", "serve", str(docroot)],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        sender = work / "a.yaml"
        sender.write_text(
            f"database: {work / 'a.db'}\n"
            f"sources: [{{name: up, kind: mirror, url: '{url}/cache', manifests: new}}]\n"
            f"mirrors: [{{name: A, path: '{work / 'A'}', source: up}}]\n"
            "http: {concurrency: 8, per_host_concurrency: 8, per_host_rate: 100000, timeout: 120}\n"
        )
        _run([sys.executable, "-m", "mirrorsync", "-q", "-c", str(sender), "once"], work)
    finally:
        server.terminate()
        server.wait()
    shutil.rmtree(docroot)
    (work / "b.yaml").write_text(f"database: {work / 'b.db'}\n")


def _measure(work: Path, gib: float, blob_mib: int, repeat: int) -> dict[str, list[float]]:
    # Made in a process of its own: a child's peak RSS counts its parent's at fork
    # (Linux keeps the larger across exec), and making 64 MiB blobs takes memory.
    subprocess.run(
        [sys.executable, __file__, "--make", str(work), "--gib", str(gib),
         "--blob-mib", str(blob_mib)],
        check=True,
    )  # fmt: skip
    sender, receiver = work / "a.yaml", work / "b.yaml"
    size = sum(p.stat().st_size for p in (work / "A").rglob("*") if p.is_file())
    files = [str(p) for p in sorted((work / "A").rglob("*")) if p.is_file()]
    print(f"copy A: {len(files)} files, {size / 1e9:.2f} GB", flush=True)
    ms = [sys.executable, "-m", "mirrorsync", "-q"]
    names = ("export", "tar-c", "tar-c+sync", "import", "tar-x", "tar-x+sync", "sha256")
    out: dict[str, list[float]] = {k: [] for k in names}
    out["export-rss"], out["import-rss"] = [], []
    for _ in range(repeat):
        for leftover in ("out.tar", "tar.tar", "B", "B2", "b.db", "a.tar"):
            path = work / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        seconds, rss = _run([*ms, "-c", str(sender), "bundle", "export", "A",
                             str(work / "out.tar"), "--full"], work)  # fmt: skip
        out["export"].append(seconds)
        out["export-rss"].append(rss)
        out["tar-c"].append(_run(["tar", "-cf", str(work / "tar.tar"), "-C", str(work / "A"),
                                  "blobs", "v3"], work)[0])  # fmt: skip
        (work / "tar.tar").unlink()
        out["tar-c+sync"].append(_run(["sh", "-c", f"tar -cf {work}/tar.tar -C {work}/A blobs v3"
                                       f" && sync {work}/tar.tar"], work)[0])  # fmt: skip
        seconds, rss = _run([*ms, "-c", str(receiver), "bundle", "import", str(work / "out.tar"),
                             str(work / "B")], work)  # fmt: skip
        out["import"].append(seconds)
        out["import-rss"].append(rss)
        (work / "B2").mkdir()
        out["tar-x"].append(_run(["tar", "-xf", str(work / "tar.tar"), "-C", str(work / "B2")],
                                 work)[0])  # fmt: skip
        shutil.rmtree(work / "B2")
        (work / "B2").mkdir()
        out["tar-x+sync"].append(_run(["sh", "-c", f"tar -xf {work}/tar.tar -C {work}/B2"
                                       f" && sync -f {work}/B2"], work)[0])  # fmt: skip
        out["sha256"].append(_run(["sha256sum", *files], work)[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--blob-mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp)")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # internal: make copy A
    args = parser.parse_args()
    if args.make:
        _site(args.make, args.gib, args.blob_mib)
        return
    for tool in ("tar", "sha256sum"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC)], check=True)
    results = {}
    for gib in (args.gib / 4, args.gib):
        work = Path(tempfile.mkdtemp(prefix="bench-bundle-", dir=args.dir))
        try:
            results[gib] = _measure(work, gib, args.blob_mib, args.repeat)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    big = {k: statistics.median(v) for k, v in results[args.gib].items()}
    small = {k: statistics.median(v) for k, v in results[args.gib / 4].items()}
    for name in ("export", "tar-c", "tar-c+sync", "import", "tar-x", "tar-x+sync", "sha256"):
        print(f"{name:10} {big[name]:7.2f} s  (median of {args.repeat})")
    print(f"export / tar -c:            {big['export'] / big['tar-c']:.2f}")
    print(f"export / (tar -c, sync):    {big['export'] / big['tar-c+sync']:.2f}")
    print(f"import / (tar -x, sync):    {big['import'] / big['tar-x+sync']:.2f}")
    print(f"export / (tar -c + sha256): {big['export'] / (big['tar-c'] + big['sha256']):.2f}")
    print(f"import / (tar -x + sha256): {big['import'] / (big['tar-x'] + big['sha256']):.2f}")
    for what in ("export", "import"):
        a, b = small[f"{what}-rss"], big[f"{what}-rss"]
        print(
            f"{what} peak RSS: {a / 1024:.0f} MiB at {args.gib / 4:g} GiB, {b / 1024:.0f} MiB at "
            f"{args.gib:g} GiB (ratio {b / a:.2f})"
        )


if __name__ == "__main__":
    main()
