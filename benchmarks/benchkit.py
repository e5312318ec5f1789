"""Pieces the benchmarks share (bench_mirror, bench_s3, bench_oci; bench_startup and
bench_scale's start-up): a synthetic cache's tarballs, a timed child run, the
catalogue source they sync, the ``mirrorsync`` command as installed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mirrorsync.fixture.specs import Node


def spec_tarball(size: int) -> Callable[[Node], bytes]:
    """A tarball of ``size`` bytes per spec: its hash's digest repeated."""

    def make(node: Node) -> bytes:
        block = hashlib.sha256(node["hash"].encode()).digest() * 2048  # 64 KiB, per spec
        return (block * (size // len(block) + 1))[:size]

    return make


def installed_command() -> list[str]:
    """``mirrorsync`` as a user, a timer or a monitoring check runs it: the console
    script installed beside this interpreter (the systemd unit's ``ExecStart``), which
    imports ``mirrorsync.cli`` and calls ``main``. ``python -m mirrorsync`` costs
    ~1.5 ms more (runpy, importlib.util), which no installed run pays; it is the
    fallback when no script is installed."""
    script = Path(sys.executable).with_name("mirrorsync")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mirrorsync"]


def timed(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of ``cmd``; the benchmark stops with its stderr if it fails."""
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{cmd[:4]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return wall


def catalog_config(work: Path, url: str, concurrency: int) -> str:
    """Config text: the fixture server's catalogue at ``url`` as the source ``bench``."""
    return f"""database: {work / "state.db"}
sources:
  - name: bench
    kind: catalog
    url: {url}/cache_spack_io_index.json
    bucket_urls: {{spack-binaries: {url}/}}
    manifests: new
http: {{concurrency: {concurrency}, per_host_concurrency: {concurrency}, per_host_rate: 100000,
        timeout: 120}}
"""
