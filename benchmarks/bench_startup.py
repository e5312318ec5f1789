"""Start-up of the command line, as a ratio to a bare ``python -c pass`` (issue 31).

Every ``once`` of a timer, every ``status`` of a monitoring check and every shell
completion pays the interpreter's start plus mirrorsync's imports. This runs, in
one process each, ``python -c pass`` and ``mirrorsync`` as installed (the console
script beside this interpreter, as the systemd unit runs it: benchkit.installed_command)
with ``--version``, ``--help``, ``status`` on an empty database (one with no stack yet:
it answers exit 66), ``status`` with no database at all and ``status`` of a
database with stacks synced (``mirrorsync demo``'s: 7 stacks, 58 specs, two
versions each), ``status`` of a database with a directory copy published (which it
also checks on disk), and ``python -m mirrorsync status`` of the demo's for comparison
(runpy's share), interleaved round by round, and prints each one's median wall
time, its ratio to the bare interpreter measured in the same run, and the median
CPU time (user + system) of each and its ratio (steadier than wall time on a busy
machine). Target: at most 3x for --version, --help and status.

Every child runs with its ``.pyc`` files written and read (``PYTHONDONTWRITEBYTECODE``
is dropped from its environment): an installed mirrorsync has them, and without
them each run would compile config/ again, which is no part of start-up.

Usage: python benchmarks/bench_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from benchkit import installed_command
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store import Store


def _empty_database(path: Path) -> None:
    async def make() -> None:
        store = await Store.open(path)
        await store.close()

    anyio.run(make)


def _once(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``command``."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(child.pid, 0)
    child.returncode = 0  # reaped here
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def _synced_database(where: Path) -> Path:
    """``mirrorsync demo`` in ``where`` (offline: a bundled mirror synced twice); its
    configuration."""
    subprocess.run(
        [sys.executable, "-m", "mirrorsync", "demo"],
        cwd=where,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return where / "mirrorsync-demo" / "mirrorsync.yaml"


def _with_a_copy(where: Path) -> Path:
    """A database with two stacks synced and a directory copy of one published
    (``once``, then ``mirror``, from a fixture server that is gone afterwards): what
    ``status`` also checks on disk, the copy's index manifest (mirrors/ondisk.py).
    Its configuration."""
    docroot = where / "docroot"
    specs = {
        "root": [spec_node(f"lib{i}", "1.0", fake_hash(f"startup:{i}")) for i in range(20)],
        "e4s": [spec_node(f"e4s{i}", "2.0", fake_hash(f"startup:e{i}")) for i in range(10)],
    }
    build_catalog_from_specs(docroot, {"develop": specs})
    config = where / "mirrorsync.yaml"
    with FixtureServer(docroot) as server:
        config.write_text(
            f"database: {where / 'ms.db'}\n"
            f"sources:\n  - {{name: s, kind: catalog, url: '{server.url}/cache_spack_io_index.json',"
            f" bucket_urls: {{spack-binaries: '{server.url}/'}}}}\n"
            f"mirrors:\n  - {{name: local, path: {where / 'copy'}, source: s, release: develop,"
            " stacks: [root]}\n"
            "http: {per_host_rate: 1000}\n"
        )
        for command in ("once", "mirror"):
            subprocess.run(
                [sys.executable, "-m", "mirrorsync", "-c", str(config), command],
                cwd=where,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        top = Path(tmp)
        empty, none, synced, copy = top / "empty", top / "none", top / "synced", top / "copy"
        for where in (empty, none, synced, copy):
            where.mkdir()
        config = (
            "sources:\n  - {name: s, kind: catalog, url: 'http://127.0.0.1:9/catalog.json',"
            " bucket_urls: {spack-binaries: 'http://127.0.0.1:9/'}}\n"
        )
        for where in (empty, none):
            (where / "mirrorsync.yaml").write_text(config + f"database: {where / 'ms.db'}\n")
        _empty_database(empty / "ms.db")
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the children write and read .pyc
        os.environ.pop("MIRRORSYNC_CONFIG", None)
        demo = _synced_database(synced)
        copied = _with_a_copy(copy)
        cli = installed_command()
        cases = {
            "python -c pass": ([sys.executable, "-c", "pass"], top),
            "--version": ([*cli, "--version"], top),
            "--help": ([*cli, "--help"], top),
            "status (empty database)": ([*cli, "status"], empty),
            "status (no database)": ([*cli, "status"], none),
            "status (7 stacks synced)": ([*cli, "-c", str(demo), "status"], synced),
            "status (a copy published)": ([*cli, "-c", str(copied), "status"], copy),
            "python -m, 7 stacks": (
                [sys.executable, "-m", "mirrorsync", "-c", str(demo), "status"],
                synced,
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for command, cwd in cases.values():  # warm the page cache and .pyc files
            _once(command, cwd)
        for _ in range(args.runs):
            for name, (command, cwd) in cases.items():
                wall, used = _once(command, cwd)
                times[name].append(wall)
                cpu[name].append(used)
    base = statistics.median(times["python -c pass"])
    base_cpu = statistics.median(cpu["python -c pass"])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"median of {args.runs} runs each, interleaved; ratio to python -c pass; load {load}")
    print(f"mirrorsync: {' '.join(cli)}")
    print(f"{'':26} {'wall':>10}  {'ratio':>5}  {'cpu':>10}  {'ratio':>5}")
    for name in cases:
        wall, used = statistics.median(times[name]), statistics.median(cpu[name])
        print(
            f"{name:26} {wall * 1000:7.1f} ms  {wall / base:5.2f}x"
            f"  {used * 1000:7.1f} ms  {used / base_cpu:5.2f}x"
        )


if __name__ == "__main__":
    main()
