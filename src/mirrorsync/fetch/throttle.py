"""Throttling: a global cap on requests in flight, and per host a cap and a token bucket.

A host is an origin: scheme, name and port. Two servers on one machine are two
hosts, as they are to a user; ``https://h`` and ``https://h:443`` are one.
"""

from __future__ import annotations

import contextlib
import functools
import time

import anyio
import httpx

from mirrorsync.fetch.breaker import Breakers

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str | httpx.URL) -> str:
    """``scheme://host:port`` of a URL, the key of everything per host.

    A URL httpx cannot parse keys on its first three ``/`` parts; the request
    itself then fails with a proper error. Parsed once per distinct
    ``scheme://authority``: a crawl asks this for every one of its requests.
    """
    if isinstance(url, str):
        return _origin_of_authority("/".join(url.split("/", 3)[:3]))
    return _origin(url)


@functools.lru_cache(maxsize=256)
def _origin_of_authority(prefix: str) -> str:
    return _origin(prefix)


def _origin(url: str | httpx.URL) -> str:
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL:
        return "/".join(str(url).split("/")[:3])
    port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0)
    if not port:  # s3://bucket: limits per bucket, named as the bucket
        return f"{parsed.scheme}://{parsed.host}"
    return f"{parsed.scheme}://{parsed.host}:{port}"


class _Bucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = anyio.Lock()

    async def take(self) -> None:
        if not self.lock.locked() and self._refill() >= 1.0:  # nobody waiting, a token free
            self.tokens -= 1.0
            return
        # Waiters queue on the lock, so tokens go out in arrival order.
        async with self.lock:
            if self._refill() < 1.0:
                await anyio.sleep((1.0 - self.tokens) / self.rate)
                self.tokens = 1.0
                self.stamp = time.monotonic()
            self.tokens -= 1.0

    def _refill(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens


class _Host:
    def __init__(self, rate: float, concurrency: int) -> None:
        self.bucket = _Bucket(rate)
        self.limiter = anyio.Semaphore(concurrency, fast_acquire=True)


class Throttle:
    """``concurrency`` requests in flight in all, ``per_host_concurrency`` and
    ``per_host_rate`` per second to each host.

    The per-host cap is taken before a global slot, so requests queued for a
    slow or dead host never hold slots that other hosts could use. The clients
    sharing a throttle also share its ``breakers`` (hosts found down) and the
    moment it was made, ``started``, from which ``http.run_deadline`` counts.
    """

    def __init__(
        self, concurrency: int, per_host_rate: float, per_host_concurrency: int | None = None
    ) -> None:
        self.breakers = Breakers()
        self.started = time.monotonic()
        self._limiter = anyio.Semaphore(concurrency, fast_acquire=True)
        self._rate = per_host_rate
        self._per_host = min(per_host_concurrency or concurrency, concurrency)
        self._hosts: dict[str, _Host] = {}

    def slot(self, host: str) -> _Slot:
        """An async context manager: a request to ``host`` may be sent inside it."""
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host(self._rate, self._per_host)
        return _Slot(entry, self._limiter)


class _Slot:
    """The host's token, then one from its bucket, then a global one; given back
    in reverse. A class, not generator-based context managers: one per request."""

    __slots__ = ("_host", "_limiter", "_taken")

    def __init__(self, host: _Host, limiter: anyio.Semaphore) -> None:
        self._host = host
        self._limiter = limiter

    async def __aenter__(self) -> None:
        await _acquire(self._host.limiter)
        try:
            await self._host.bucket.take()
            await _acquire(self._limiter)
        except BaseException:
            self._host.limiter.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter.release()
        self._host.limiter.release()


class _NoSlot(contextlib.AbstractAsyncContextManager[None]):
    """No slot at all: a ``file://`` request (the throttle spares servers, a local
    disk needs none)."""

    async def __aexit__(self, *exc_info: object) -> None:
        return None


NO_SLOT = _NoSlot()


async def _acquire(limiter: anyio.Semaphore) -> None:
    """A semaphore's token; taken without a trip through the event loop when one is
    free (anyio's ``acquire`` yields to the loop even then: 5% of a crawl's CPU).

    Semaphores, not capacity limiters: a limiter records its borrowing task on
    every acquire and release (``current_task``, another 5% of a small request's
    CPU), which only matters to code that could take a token twice; a slot is
    taken once per request, and given back by the same ``_Slot``."""
    try:
        limiter.acquire_nowait()
    except anyio.WouldBlock:
        await limiter.acquire()
