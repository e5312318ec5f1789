"""References for the manifest crawl: bare GETs of every spec manifest, bodies read, no checks.

Usage: python benchmarks/crawl_reference.py BASE_URL DOCROOT aiohttp|httpx CONCURRENCY
CONCURRENCY tasks share one client (aiohttp.ClientSession or httpx.AsyncClient)
with as many connections; bench_crawl.py compares mirrorsync's crawl with these.
Prints the wall and CPU seconds of the GETs alone (start-up and the listing excluded).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import httpx


async def with_aiohttp(urls: list[str], concurrency: int) -> None:
    queue = iter(urls)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for url in queue:
                async with session.get(url) as response:
                    response.raise_for_status()
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def with_httpx(urls: list[str], concurrency: int) -> None:
    queue = iter(urls)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def worker() -> None:
            for url in queue:
                (await client.get(url)).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    base, root, which, concurrency = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    urls = sorted(base + "/" + str(p.relative_to(root)) for p in root.rglob("*.spec.manifest.json"))
    run = with_aiohttp if which == "aiohttp" else with_httpx
    started, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run(urls, concurrency))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"{seconds:.4f} {cpu:.4f}")  # wall and CPU seconds of the GETs alone


if __name__ == "__main__":
    main()
