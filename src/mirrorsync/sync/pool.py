"""A bounded worker pool: items stream in, a fixed number of workers handle them.

Work is never materialised: items are pulled from an async iterator through a
small buffer, so a run over 100,000 specs holds a few dozen in memory and
``workers + 2`` tasks, not one task per spec. Results go to one consumer task,
so whatever it writes (a database batch, a line of output) needs no locking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

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
                await _send(send_items, item)

    async def worker(
        inbox: MemoryObjectReceiveStream[T], outbox: MemoryObjectSendStream[R]
    ) -> None:
        async with inbox, outbox:
            while (item := await _receive(inbox)) is not _END:
                await _send(outbox, await work(item))

    async def collect() -> None:
        async with receive_results:
            while (result := await _receive(receive_results)) is not _END:
                await consume(result)

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        tg.start_soon(collect)
        async with receive_items, send_results:
            for _ in range(workers):
                tg.start_soon(worker, receive_items.clone(), send_results.clone())


# anyio's send() and receive() yield to the event loop even when they need not
# wait: four extra loop turns per item, a tenth of a loopback crawl's CPU. These
# wait only when the buffer is full or empty; every item's work awaits anyway.
_END: Any = object()


async def _send(stream: MemoryObjectSendStream[T], item: T) -> None:
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def _receive(stream: MemoryObjectReceiveStream[T]) -> T:
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await stream.receive()
        except anyio.EndOfStream:
            return cast(T, _END)
    except anyio.EndOfStream:
        return cast(T, _END)
