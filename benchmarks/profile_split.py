"""Split a py-spy profile of the crawl into where its CPU goes.

Usage: python benchmarks/profile_split.py NEW.txt [NONE.txt] [--manifests N] [--rate HZ]

NEW.txt and NONE.txt are ``py-spy record --gil -f raw`` profiles of ``mirrorsync
once`` with ``manifests: new`` and with ``manifests: none`` (the same index,
no crawl); the second is subtracted, group by group, so what is left is the
crawl's. Each sample is charged to the innermost frame's group: the HTTP stack
(httpx, httpcore, h11, aiohttp and its helpers, anyio, asyncio, sockets),
mirrorsync's fetch layer (``mirrorsync/fetch``), parsing (``mirrorsync/formats``,
msgspec, json), SQLite (``mirrorsync/store``, aiosqlite, sqlite3) and the rest
of mirrorsync (the crawler, URLs). With --manifests and --rate (samples per
second), also milliseconds of CPU per manifest.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

GROUPS = [
    ("SQLite", re.compile(r"mirrorsync/store/|aiosqlite|sqlite3")),
    ("parsing", re.compile(r"mirrorsync/formats/|msgspec|\(json/")),
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
    for frame in reversed(stack.split(";")):
        for name, pattern in GROUPS:
            if pattern.search(frame):
                return name
    return "Python (imports, start-up)"


def split(path: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    with open(path) as lines:
        for line in lines:
            stack, _, samples = line.rstrip().rpartition(" ")
            if stack:
                counts[group_of(stack)] += int(samples)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new")
    parser.add_argument("none", nargs="?")
    parser.add_argument("--manifests", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="py-spy's samples per second")
    args = parser.parse_args()
    counts = split(args.new)
    if args.none:
        counts.subtract(split(args.none))
    total = sum(max(0, n) for n in counts.values())
    for name, n in counts.most_common():
        per = ""
        if args.manifests and args.rate:
            per = f"  {n / args.rate / args.manifests * 1000:.3f} ms/manifest"
        print(f"{name:<27} {n / total:6.1%}{per}")
    if args.manifests and args.rate:
        print(
            f"{'total':<27} {1:6.1%}  {total / args.rate / args.manifests * 1000:.3f} ms/manifest"
        )


if __name__ == "__main__":
    main()
