"""Connections: small pools, the configured total, reused rather than reopened."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from mirrorsync.config import HttpConfig, RetryConfig
from mirrorsync.errors import NotFoundError
from mirrorsync.fetch import HttpClient
from mirrorsync.fetch.pools import PoolShards
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.redact import Url


@pytest.fixture
def server(tmp_path: Path) -> FixtureServer:
    for i in range(200):
        (tmp_path / f"doc{i}.json").write_bytes(b'{"n": %d}' % i)
    return FixtureServer(tmp_path)


def config(concurrency: int) -> HttpConfig:
    return HttpConfig(
        concurrency=concurrency,
        per_host_concurrency=concurrency,
        per_host_rate=100_000,
        retries=RetryConfig(attempts=2, backoff_initial=0.01, backoff_max=0.05),
    )


def test_concurrent_requests_use_at_most_the_configured_connections(
    server: FixtureServer,
) -> None:
    server.add_fault("/doc*", "delay", times=None, delay=0.02)  # so that requests overlap

    async def main() -> None:
        async with HttpClient(config(6)) as client, anyio.create_task_group() as tg:
            for i in range(120):
                tg.start_soon(client.get, Url(f"{server.url}/doc{i}.json"))

    with server:
        anyio.run(main)
    ports = {r.peer_port for r in server.requests}
    assert len(server.requests) == 120
    assert 3 <= len(ports) <= 6  # in parallel, never beyond the limit
    assert 0 not in ports


def test_one_request_at_a_time_keeps_to_one_connection(server: FixtureServer) -> None:
    """Every way a response ends (read, HEAD, 404, retried 503) gives its slot back:
    a slot kept by mistake would send the next request to another pool."""
    server.add_fault("/doc5.json", "status", status=503, times=1)

    async def main() -> None:
        async with HttpClient(config(8)) as client:
            for i in range(10):
                await client.get(Url(f"{server.url}/doc{i}.json"))
                await client.head(Url(f"{server.url}/doc{i}.json"))
                with pytest.raises(NotFoundError):
                    await client.get(Url(f"{server.url}/missing{i}.json"))
                await client.measure(Url(f"{server.url}/doc{i}.json"))

    with server:
        anyio.run(main)
    assert len(server.requests) == 41  # 40, and doc5 once more after its 503
    assert len({r.peer_port for r in server.requests}) == 1


def test_every_ending_of_a_request_releases_its_slot(server: FixtureServer) -> None:
    """Read, closed unread, refused connection, dropped connection, cancelled:
    the transport counts nothing in flight afterwards."""
    server.add_fault("/gone.json", "drop", times=None)
    server.add_fault("/slow.json", "delay", times=None, delay=5)
    shards = PoolShards(connections=4)

    async def main() -> None:
        async with httpx.AsyncClient(transport=shards, timeout=2) as client:
            assert (await client.get(f"{server.url}/doc1.json")).status_code == 200
            async with client.stream("GET", f"{server.url}/doc2.json") as response:
                assert shards.in_flight == 1
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"{server.url}/gone.json")
            with pytest.raises(httpx.ConnectError):
                await client.get("http://127.0.0.1:9/refused")  # the discard port: closed
            with anyio.move_on_after(0.2):
                await client.get(f"{server.url}/slow.json")
            assert shards.in_flight == 0
            assert response.is_closed

    with server:
        anyio.run(main)
