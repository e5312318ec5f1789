"""Split a py-spy profile (``py-spy record -f raw``) into where the crawl's CPU goes.

Usage: python benchmarks/profile_split.py PROFILE.txt [MANIFESTS] [RATE]
Each sample is charged to the innermost frame's group: the HTTP stack (httpx,
httpcore, h11, aiohttp and its helpers, anyio, asyncio, ssl, sockets),
mirrorsync's fetch layer, parsing (mirrorsync.formats, msgspec, json), SQLite
(mirrorsync.store, aiosqlite, sqlite3, the SQLite thread), and the rest of
mirrorsync or Python. With MANIFESTS and RATE (samples per second), also
milliseconds of CPU per manifest.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

GROUPS = [
    ("SQLite", re.compile(r"mirrorsync/store/|aiosqlite|sqlite3")),
    ("parsing", re.compile(r"mirrorsync/formats/|msgspec|/json/")),
    ("mirrorsync fetch", re.compile(r"mirrorsync/fetch/")),
    (
        "HTTP stack",
        re.compile(
            r"\((httpx|httpcore|h11|aiohttp|yarl|multidict|anyio|asyncio|uvloop|sniffio|idna|"
            r"tenacity|http|email|urllib|propcache|aiohappyeyeballs)/|ssl\.py|socket|selectors"
        ),
    ),
    ("mirrorsync other", re.compile(r"mirrorsync/")),
]


def group_of(stack: str) -> str:
    frames = stack.split(";")
    if "aiosqlite" in frames[0] or any("aiosqlite/core.py" in f and "run" in f for f in frames[:3]):
        return "SQLite"
    for frame in reversed(frames):
        for name, pattern in GROUPS:
            if pattern.search(frame):
                return name
    return "other Python"


def main() -> None:
    counts: Counter[str] = Counter()
    for line in open(sys.argv[1]):
        stack, _, samples = line.rstrip().rpartition(" ")
        if stack:
            counts[group_of(stack)] += int(samples)
    total = sum(counts.values())
    manifests = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    for name, n in counts.most_common():
        per = f"  {n / rate / manifests * 1000:.3f} ms/manifest" if manifests and rate else ""
        print(f"{name:<18} {n / total:6.1%}{per}")
    if manifests and rate:
        print(f"{'total':<18} {1:6.1%}  {total / rate / manifests * 1000:.3f} ms/manifest")


if __name__ == "__main__":
    main()
