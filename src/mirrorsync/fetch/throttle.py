"""Throttling: a global cap on requests in flight and a token bucket per host."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class _Bucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = anyio.Lock()

    async def take(self) -> None:
        # Waiters queue on the lock, so tokens go out in arrival order.
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens < 1.0:
                await anyio.sleep((1.0 - self.tokens) / self.rate)
                self.tokens = 1.0
                self.stamp = time.monotonic()
            self.tokens -= 1.0


class Throttle:
    """``concurrency`` requests in flight over all hosts, ``per_host_rate`` per second each."""

    def __init__(self, concurrency: int, per_host_rate: float) -> None:
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._rate = per_host_rate
        self._buckets: dict[str, _Bucket] = {}

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = _Bucket(self._rate)
        await bucket.take()
        async with self._limiter:
            yield
