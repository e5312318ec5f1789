"""A bounded worker pool: items stream in, a fixed number of workers handle them.

Work is never materialised: items are pulled from an async iterator through a
small buffer, so a run over 100,000 specs holds a few dozen in memory and
``workers + 2`` tasks, not one task per spec. Results go to one consumer task,
so whatever it writes (a database batch, a line of output) needs no locking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

T = TypeVar("T")
R = TypeVar("R")


async def run_pool(
    items: AsyncIterator[T],
    work: Callable[[T], Awaitable[R]],
    consume: Callable[[R], Awaitable[None]],
    *,
    workers: int,
) -> None:
    """Run ``work`` on every item with ``workers`` tasks; ``consume`` each result in turn.

    An exception from any of them cancels the rest and propagates.
    """
    workers = max(1, workers)
    send_items, receive_items = anyio.create_memory_object_stream[T](workers)
    send_results, receive_results = anyio.create_memory_object_stream[R](workers)

    async def produce() -> None:
        async with send_items:
            async for item in items:
                await send_items.send(item)

    async def worker(inbox: ObjectReceiveStream[T], outbox: ObjectSendStream[R]) -> None:
        async with inbox, outbox:
            async for item in inbox:
                await outbox.send(await work(item))

    async def collect() -> None:
        async with receive_results:
            async for result in receive_results:
                await consume(result)

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        tg.start_soon(collect)
        async with receive_items, send_results:
            for _ in range(workers):
                tg.start_soon(worker, receive_items.clone(), send_results.clone())
