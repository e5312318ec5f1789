"""The obvious approach to a whole release, as the baseline: naive_sync.py per stack.

Usage: python benchmarks/naive_release.py BASE_URL DATABASE

Reads ``BASE_URL/cache_spack_io_index.json``; for every stack it lists: download
the index blob the catalogue names, ``json.loads`` it, and in one transaction
insert (or replace) every cached hash with its name and version and replace the
stack's list of hashes.
"""

from __future__ import annotations

import json
import sqlite3
import sys

import httpx

BUCKET = "s3://spack-binaries/"


def main(base: str, database: str) -> int:
    catalog = httpx.get(f"{base}/cache_spack_io_index.json", timeout=120).json()
    conn = sqlite3.connect(database)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS specs (hash TEXT PRIMARY KEY, name TEXT, version TEXT)"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS members (stack TEXT, hash TEXT)")
    conn.execute("CREATE INDEX IF NOT EXISTS members_by_stack ON members (stack)")
    with httpx.Client(timeout=120) as client:
        for release, entries in catalog.items():
            for entry in entries:
                url = base + "/" + entry["url"].removeprefix(BUCKET)
                document = json.loads(client.get(url).content)
                cached = [
                    (h, e["spec"]["name"], e["spec"]["version"])
                    for h, e in document["database"]["installs"].items()
                    if e.get("in_buildcache")
                ]
                stack = f"{release}/{entry['label']}"
                with conn:
                    conn.executemany("INSERT OR REPLACE INTO specs VALUES (?, ?, ?)", cached)
                    conn.execute("DELETE FROM members WHERE stack = ?", (stack,))
                    conn.executemany(
                        "INSERT INTO members VALUES (?, ?)", ((stack, c[0]) for c in cached)
                    )
                del document, cached
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
