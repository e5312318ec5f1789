"""Per host: requests in flight capped, and a token bucket of per_host_rate per second."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from mirrorsync.config import HttpConfig
from mirrorsync.fetch import HttpClient
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.redact import Url


@pytest.fixture
def server(tmp_path: Path) -> FixtureServer:
    for i in range(40):
        (tmp_path / f"doc{i}.json").write_bytes(b"{}")
    return FixtureServer(tmp_path)


def fetch_all(server: FixtureServer, config: HttpConfig, n: int) -> float:
    async def main() -> None:
        async with HttpClient(config) as client, anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(client.get, Url(f"{server.url}/doc{i}.json"))

    with server:
        started = time.monotonic()
        anyio.run(main)
        return time.monotonic() - started


def test_requests_in_flight_to_a_host_are_capped(server: FixtureServer) -> None:
    server.add_fault("/doc*", "delay", times=None, delay=0.2)
    config = HttpConfig(concurrency=16, per_host_concurrency=3, per_host_rate=1000)
    elapsed = fetch_all(server, config, 12)
    assert len(server.requests) == 12
    assert 0.8 <= elapsed < 1.6  # four waves of three, not one wave of twelve


def test_requests_to_a_host_keep_to_its_rate(server: FixtureServer) -> None:
    # A bucket of 10 tokens filling at 10/s: 30 requests need at least 2 s.
    config = HttpConfig(concurrency=8, per_host_rate=10)
    elapsed = fetch_all(server, config, 30)
    assert len(server.requests) == 30
    assert 1.9 <= elapsed < 4.0
