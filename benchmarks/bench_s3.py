"""Benchmark a copy into S3 (moto's server) against a directory copy and ``aws s3 cp``.

Generates a v3 build cache (repeated bytes, real sha256 checksums), serves it from
the fixture server in its own process on 127.0.0.1, syncs it once, starts moto's
S3 server (``moto_server``) on another loopback port, then, ``--repeat`` times each:

  dir       ``mirrorsync mirror`` into an empty directory (the existing path:
            download, check, fsync, rename)
  s3        ``mirrorsync mirror`` into an empty ``s3://bench/sN`` prefix: download
            to a staging file, checked, then PUT (multipart over 16 MiB) with the
            sha256 as x-amz-content-sha256, signed by botocore, sent by the one
            fetch client; manifests, index last
  aws       ``aws s3 cp --recursive`` (awscli through ``uv tool run``; boto3's
            ``upload_file`` on 8 threads when uv is not there) of the directory
            copy's files, already on disk, into ``s3://bench/awsN``: upload only

It prints each one's median throughput (bytes of the copy / wall time), the CPU
seconds per GB of the mirrorsync process itself (user+sys of the child; moto's
own CPU is not counted), and the ratios s3/dir and s3/aws. moto is a Python
server and is the ceiling of every S3 figure here: compare the ratios.

Usage: python benchmarks/bench_s3.py [--gib 0.5] [--blob-mib 32] [--concurrency 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

from benchkit import catalog_config, spec_tarball  # noqa: E402
from mirrorsync.fixture.build import write_catalog, write_v3_mirror  # noqa: E402
from mirrorsync.fixture.specs import synthetic_specs  # noqa: E402

AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(work: Path, url: str, endpoint: str, concurrency: int, path: str) -> Path:
    text = catalog_config(work, url, concurrency)
    if path:
        text += (
            f"mirrors:\n  - {{name: bench, path: '{path}', source: bench, release: develop"
            + (f", s3: {{endpoint_url: '{endpoint}'}}" if path.startswith("s3://") else "")
            + "}\n"
        )
    config = work / f"config-{abs(hash(path))}.yaml"
    config.write_text(text)
    return config


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child: user + sys)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{cmd[:6]} failed ({result.returncode}): {result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _boto3_upload(directory: Path, endpoint: str, prefix: str, threads: int) -> None:
    import concurrent.futures

    import boto3  # type: ignore[import-untyped]

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    paths = [p for p in directory.rglob("*") if p.is_file()]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for done in [
            pool.submit(s3.upload_file, str(p), "bench", f"{prefix}/{p.relative_to(directory)}")
            for p in paths
        ]:
            done.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=0.5, help="total size of the binaries")
    parser.add_argument("--blob-mib", type=int, default=32, help="size of each binary")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp)")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC)], check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-s3-", dir=args.dir))
    docroot = work / "www"
    count = max(1, int(args.gib * 1024 / args.blob_mib))
    specs = synthetic_specs(count, seed=27)
    write_v3_mirror(
        docroot / "develop", specs, signed=False, tarball=spec_tarball(args.blob_mib << 20)
    )
    write_catalog(docroot, {"develop": {"root": "develop"}})
    env = {**os.environ, "PYTHONPATH": str(SRC), **AWS}
    os.environ.update(AWS)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync.fixture", "serve", str(docroot)],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    uv = shutil.which("uv") or str(HERE.parent / ".tools/bin/uv")
    baseline = "aws s3 cp --recursive" if Path(uv).exists() else "boto3 upload_file x8"
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        time.sleep(1.0)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench"
        )
        mirrorsync = [sys.executable, "-m", "mirrorsync", "-q", "-c"]
        _timed(
            [*mirrorsync, str(_config(work, url, endpoint, args.concurrency, "")), "once"],
            work,
            env,
        )
        results: dict[str, list[tuple[float, float]]] = {"dir": [], "s3": [], "aws": []}
        total = 0
        for i in range(args.repeat):
            copy = work / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            dir_config = _config(work, url, endpoint, args.concurrency, str(copy))
            results["dir"].append(_timed([*mirrorsync, str(dir_config), "mirror"], work, env))
            total = sum(p.stat().st_size for p in copy.rglob("*") if p.is_file())
            s3_config = _config(work, url, endpoint, args.concurrency, f"s3://bench/s{i}")
            results["s3"].append(_timed([*mirrorsync, str(s3_config), "mirror"], work, env))
            if baseline.startswith("aws"):
                cmd = [
                    uv,
                    "tool",
                    "run",
                    "--from",
                    "awscli",
                    "aws",
                    "s3",
                    "cp",
                    "--recursive",
                    "--quiet",
                    "--endpoint-url",
                    endpoint,
                    str(copy),
                    f"s3://bench/aws{i}",
                ]
                # uv resolves the tool first: once, outside the timing.
                if i == 0:
                    subprocess.run(
                        [uv, "tool", "run", "--from", "awscli", "aws", "--version"],
                        check=True,
                        capture_output=True,
                    )
                results["aws"].append(_timed(cmd, work, env))
            else:
                started = time.perf_counter()
                _boto3_upload(copy, endpoint, f"aws{i}", 8)
                results["aws"].append((time.perf_counter() - started, 0.0))
    finally:
        server.terminate()
        moto.terminate()
        server.wait()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    gb = total / 1e9
    print(
        f"copy: {count} binaries, {gb:.2f} GB, blob {args.blob_mib} MiB, "
        f"concurrency {args.concurrency}, {args.repeat} runs each"
    )
    names = {"dir": "mirrorsync -> directory", "s3": "mirrorsync -> s3 (moto)", "aws": baseline}
    for key, name in names.items():
        print(
            f"{name:26} {gb / med[key] * 1e3:8.1f} MB/s  CPU {cpu[key] / gb:6.2f} s/GB  "
            f"(walls {', '.join(f'{w:.2f}' for w, _ in results[key])} s)"
        )
    print(
        f"ratio s3/dir (throughput): {med['dir'] / med['s3']:.2f}; "
        f"s3/{baseline.split()[0]}: {med['aws'] / med['s3']:.2f}; "
        f"CPU per byte s3/dir: {cpu['s3'] / max(cpu['dir'], 1e-9):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
