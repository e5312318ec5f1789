"""Start-up of the command line, as a ratio to a bare ``python -c pass`` (issue 31).

Every ``once`` of a timer, every ``status`` of a monitoring check and every shell
completion pays the interpreter's start plus mirrorsync's imports. This runs, in
one process each, ``python -c pass`` and ``python -m mirrorsync`` with
``--version``, ``--help``, ``status`` on an empty database (one with no stack yet:
it answers exit 66) and ``status`` with no database at all, interleaved
round by round, and prints each one's median wall time and its ratio to the bare
interpreter measured in the same run. Target: at most 3x for --version, --help
and status.

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


def _once(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        top = Path(tmp)
        empty, none = top / "empty", top / "none"
        empty.mkdir()
        none.mkdir()
        config = (
            "sources:\n  - {name: s, kind: catalog, url: 'http://127.0.0.1:9/catalog.json',"
            " bucket_urls: {spack-binaries: 'http://127.0.0.1:9/'}}\n"
        )
        for where in (empty, none):
            (where / "mirrorsync.yaml").write_text(config + f"database: {where / 'ms.db'}\n")
        _empty_database(empty / "ms.db")
        py = [sys.executable]
        cases = {
            "python -c pass": ([*py, "-c", "pass"], top),
            "--version": ([*py, "-m", "mirrorsync", "--version"], top),
            "--help": ([*py, "-m", "mirrorsync", "--help"], top),
            "status (empty database)": ([*py, "-m", "mirrorsync", "status"], empty),
            "status (no database)": ([*py, "-m", "mirrorsync", "status"], none),
        }
        os.environ.pop("MIRRORSYNC_CONFIG", None)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for command, cwd in cases.values():  # warm the page cache and .pyc files
            _once(command, cwd)
        for _ in range(args.runs):
            for name, (command, cwd) in cases.items():
                times[name].append(_once(command, cwd))
    base = statistics.median(times["python -c pass"])
    print(f"median of {args.runs} runs each, interleaved; ratio to python -c pass")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:26} {median * 1000:7.1f} ms  {median / base:5.2f}x")


if __name__ == "__main__":
    main()
