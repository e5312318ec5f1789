"""Start-up of the command line, as a ratio to a bare ``python -c pass`` (issue 31).

Every ``once`` of a timer, every ``status`` of a monitoring check and every shell
completion pays the interpreter's start plus mirrorsync's imports. This runs, in
one process each, ``python -c pass`` and ``python -m mirrorsync`` with
``--version``, ``--help``, ``status`` on an empty database (one with no stack yet:
it answers exit 66), ``status`` with no database at all and ``status`` of a
database with stacks synced (``mirrorsync demo``'s: 7 stacks, 58 specs, two
versions each), interleaved round by round, and prints each one's median wall
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        top = Path(tmp)
        empty, none, synced = top / "empty", top / "none", top / "synced"
        empty.mkdir()
        none.mkdir()
        synced.mkdir()
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
        py = [sys.executable]
        cases = {
            "python -c pass": ([*py, "-c", "pass"], top),
            "--version": ([*py, "-m", "mirrorsync", "--version"], top),
            "--help": ([*py, "-m", "mirrorsync", "--help"], top),
            "status (empty database)": ([*py, "-m", "mirrorsync", "status"], empty),
            "status (no database)": ([*py, "-m", "mirrorsync", "status"], none),
            "status (7 stacks synced)": (
                [*py, "-m", "mirrorsync", "-c", str(demo), "status"],
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
    print(f"{'':26} {'wall':>10}  {'ratio':>5}  {'cpu':>10}  {'ratio':>5}")
    for name in cases:
        wall, used = statistics.median(times[name]), statistics.median(cpu[name])
        print(
            f"{name:26} {wall * 1000:7.1f} ms  {wall / base:5.2f}x"
            f"  {used * 1000:7.1f} ms  {used / base_cpu:5.2f}x"
        )


if __name__ == "__main__":
    main()
