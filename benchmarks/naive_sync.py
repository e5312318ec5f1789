"""The obvious approach, as the baseline: download, json.loads, insert in one transaction.

Usage: python benchmarks/naive_sync.py INDEX_URL DATABASE
"""

from __future__ import annotations

import json
import sqlite3
import sys

import httpx


def main(url: str, database: str) -> int:
    body = httpx.get(url, timeout=120).content
    document = json.loads(body)
    conn = sqlite3.connect(database)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS specs (hash TEXT PRIMARY KEY, name TEXT, version TEXT)"
    )
    with conn:
        conn.executemany(
            "INSERT OR REPLACE INTO specs VALUES (?, ?, ?)",
            (
                (h, entry["spec"]["name"], entry["spec"]["version"])
                for h, entry in document["database"]["installs"].items()
                if entry.get("in_buildcache")
            ),
        )
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
