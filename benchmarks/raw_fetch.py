"""The HTTP ceiling for the manifest crawl: plain httpx GETs, no throttle, retry or database.

Usage: python benchmarks/raw_fetch.py BASE_URL DOCROOT CONCURRENCY [PER_CLIENT]
Fetches every spec manifest under DOCROOT from BASE_URL with CONCURRENCY tasks
and prints the count and rate, for the crawl step of bench_sync.py to compare with.
With PER_CLIENT, the tasks share CONCURRENCY / PER_CLIENT clients of PER_CLIENT
connections each (what mirrorsync's fetch/pools.py does) instead of one client.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import httpx


async def main(base: str, paths: list[str], concurrency: int, per_client: int) -> None:
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    clients = [httpx.AsyncClient(limits=limits) for _ in range(max(1, concurrency // per_client))]
    started, cpu = time.perf_counter(), time.process_time()
    send, receive = anyio.create_memory_object_stream[str](concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        async with receive.clone() as inbox:
            async for path in inbox:
                (await client.get(base + path)).raise_for_status()

    async with anyio.create_task_group() as tg:
        for i in range(concurrency):
            tg.start_soon(worker, clients[i % len(clients)])
        async with send:
            for path in paths:
                await send.send(path)
        receive.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    for client in clients:
        await client.aclose()
    print(f"{len(paths)} manifests in {seconds:.2f}s: {len(paths) / seconds:.0f}/s, cpu {cpu:.2f}s")


if __name__ == "__main__":
    root = Path(sys.argv[2])
    found = sorted("/" + str(p.relative_to(root)) for p in root.rglob("*.spec.manifest.json"))
    concurrency = int(sys.argv[3])
    per_client = int(sys.argv[4]) if len(sys.argv) > 4 else concurrency
    anyio.run(main, sys.argv[1], found, concurrency, per_client)
