"""The HTTP ceiling for the manifest crawl: plain httpx GETs, no throttle, retry or database.

Usage: python benchmarks/raw_fetch.py BASE_URL DOCROOT CONCURRENCY
Fetches every spec manifest under DOCROOT from BASE_URL with CONCURRENCY tasks
and prints the count and rate, for the crawl step of bench_sync.py to compare with.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import httpx


async def main(base: str, paths: list[str], concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits) as client:
        send, receive = anyio.create_memory_object_stream[str](concurrency)

        async def worker() -> None:
            async with receive.clone() as inbox:
                async for path in inbox:
                    (await client.get(base + path)).raise_for_status()

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
            async with send:
                for path in paths:
                    await send.send(path)
            receive.close()
    seconds = time.perf_counter() - started
    print(f"{len(paths)} manifests in {seconds:.2f}s: {len(paths) / seconds:.0f}/s")


if __name__ == "__main__":
    root = Path(sys.argv[2])
    found = sorted("/" + str(p.relative_to(root)) for p in root.rglob("*.spec.manifest.json"))
    anyio.run(main, sys.argv[1], found, int(sys.argv[3]))
