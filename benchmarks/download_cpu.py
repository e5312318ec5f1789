"""One large download through mirrorsync's fetch client, for its CPU per byte.

Usage: python benchmarks/download_cpu.py URL DEST LENGTH SHA256 [--skip]
``HttpClient.download``: streamed to DEST, length and sha256 checked, as an
index blob or a mirrored binary is. ``--skip`` does everything but the download
(interpreter, imports, client), the start-up cost to subtract.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from mirrorsync.config import HttpConfig
from mirrorsync.fetch import HttpClient
from mirrorsync.redact import Url


async def main(url: str, dest: Path, length: int, sha256: str, skip: bool) -> None:
    async with HttpClient(HttpConfig(per_host_rate=1000.0, timeout=120.0)) as client:
        if skip:
            return
        done = await client.download(Url(url), dest, expected_length=length, expected_sha256=sha256)
        assert done.length == length


if __name__ == "__main__":
    anyio.run(
        main,
        sys.argv[1],
        Path(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
        "--skip" in sys.argv[5:],
    )
