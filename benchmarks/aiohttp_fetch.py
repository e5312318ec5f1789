"""The crawl's reference client: bare aiohttp GETs that read each body and keep nothing.

Usage: python benchmarks/aiohttp_fetch.py BASE_URL DOCROOT CONCURRENCY
Fetches every spec manifest under DOCROOT from BASE_URL with CONCURRENCY tasks
sharing one session of CONCURRENCY connections, and prints the count and rate
in raw_fetch.py's words.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp


async def main(base: str, paths: list[str], concurrency: int) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                path = queue.get_nowait()
                async with session.get(base + path) as response:
                    response.raise_for_status()
                    await response.read()

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"{len(paths)} manifests in {seconds:.2f}s: {len(paths) / seconds:.0f}/s, cpu {cpu:.2f}s")


if __name__ == "__main__":
    root = Path(sys.argv[2])
    found = sorted("/" + str(p.relative_to(root)) for p in root.rglob("*.spec.manifest.json"))
    asyncio.run(main(sys.argv[1], found, int(sys.argv[3])))
