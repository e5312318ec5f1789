"""http.deadline and http.run_deadline as the client keeps them: one watchdog timer
for every request in flight (fetch/deadline.py), which must end exactly the
requests that are late, and nothing else."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from mirrorsync.config import HttpConfig
from mirrorsync.fetch import DeadlineError, Fetched, HttpClient, RunDeadlineError
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.redact import Url


@pytest.fixture
def server(tmp_path: Path) -> FixtureServer:
    for name in ("slow", "fast", "after"):
        (tmp_path / f"{name}.json").write_bytes(b'{"doc": "%s"}' % name.encode())
    return FixtureServer(tmp_path)


def test_a_late_request_fails_at_its_deadline_while_the_others_go_on(
    server: FixtureServer,
) -> None:
    """Fast requests that start and end while one slow request waits are not
    touched by its deadline, and the slow one ends at its deadline, not at the
    server's pace (10 s)."""
    server.add_fault("/slow.json", "stall", delay=10, after_bytes=2, times=None)
    config = HttpConfig(concurrency=8, per_host_rate=1000, deadline="1s")
    fast: list[bytes] = []
    failure: list[str] = []

    async def slow(client: HttpClient) -> None:
        try:
            await client.get(Url(f"{server.url}/slow.json"))
        except DeadlineError as exc:
            failure.append(str(exc))

    async def main() -> float:
        async with HttpClient(config) as client:
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(slow, client)
                for _ in range(20):  # one after another, for longer than the deadline
                    got = await client.get(Url(f"{server.url}/fast.json"))
                    assert isinstance(got, Fetched)
                    fast.append(got.content)
                    await anyio.sleep(0.06)
            return time.monotonic() - started

    with server:
        seconds = anyio.run(main)
    assert fast == [b'{"doc": "fast"}'] * 20
    assert failure == [
        f"{server.url}/slow.json: timed out: no complete answer within http.deadline (1s); "
        "not retried"
    ]
    assert 1.0 <= seconds < 3.0, seconds


def test_a_cancellation_from_outside_is_not_taken_for_a_deadline(server: FixtureServer) -> None:
    """The caller's own timeout (a cancel scope around the request) cancels the
    request as it would any await: it is neither reported as http.deadline nor
    swallowed, and the client's next request is not cancelled by it."""
    server.add_fault("/slow.json", "delay", delay=5, times=1)
    config = HttpConfig(concurrency=4, per_host_rate=1000, deadline="30s")

    async def main() -> tuple[bool, Fetched | object]:
        async with HttpClient(config) as client:
            with anyio.move_on_after(0.5) as scope:
                await client.get(Url(f"{server.url}/slow.json"))
            after = await client.get(Url(f"{server.url}/after.json"))
            return scope.cancelled_caught, after

    with server:
        cancelled, after = anyio.run(main)
    assert cancelled
    assert isinstance(after, Fetched) and after.content == b'{"doc": "after"}'


def test_a_deadline_and_a_cancellation_at_once_leave_no_cancellation_behind(
    server: FixtureServer,
) -> None:
    """When the request's deadline and the caller's cancel scope end it at the same
    moment, it ends one way or the other (the scope catches it, or the deadline
    is reported), and the task is not left cancelled: its next request is answered."""
    server.add_fault("/slow.json", "delay", delay=5, times=None)
    config = HttpConfig(concurrency=4, per_host_rate=1000, deadline="0.3s")

    async def main() -> list[str]:
        ends = []
        async with HttpClient(config) as client:
            for _ in range(5):
                with anyio.move_on_after(0.3) as scope:
                    try:
                        await client.get(Url(f"{server.url}/slow.json"))
                    except DeadlineError:
                        ends.append("deadline")
                if scope.cancelled_caught:
                    ends.append("cancelled")
                after = await client.get(Url(f"{server.url}/after.json"))
                assert isinstance(after, Fetched)
        return ends

    with server:
        ends = anyio.run(main)
    assert len(ends) == 5 and set(ends) <= {"deadline", "cancelled"}, ends


def test_deadlines_hold_on_a_second_event_loop(server: FixtureServer) -> None:
    """A client used by two ``anyio.run`` calls (the CLI runs one per command)
    keeps the deadlines in the second as in the first."""
    server.add_fault("/slow.json", "stall", delay=10, after_bytes=2, times=None)
    config = HttpConfig(concurrency=4, per_host_rate=1000, deadline="0.5s")
    client = HttpClient(config)

    async def once() -> str:
        try:
            await client.get(Url(f"{server.url}/slow.json"))
        except DeadlineError as exc:
            return str(exc)
        finally:
            await client.aclose()
        return "answered"

    with server:
        first = anyio.run(once)
        started = time.monotonic()
        second = anyio.run(once)
        seconds = time.monotonic() - started
    assert first == second
    assert "no complete answer within http.deadline (0.5s)" in second
    assert seconds < 2.0, seconds


def test_a_request_queued_past_the_run_deadline_ends_there(server: FixtureServer) -> None:
    """With one slot, held by a stalled request, a second request waits in the
    queue; the run deadline ends both, each with its own words."""
    server.add_fault("/slow.json", "stall", delay=10, after_bytes=2, times=None)
    config = HttpConfig(concurrency=1, per_host_rate=1000, deadline="30s", run_deadline="1s")
    errors: list[BaseException] = []

    async def get(client: HttpClient, name: str) -> None:
        try:
            await client.get(Url(f"{server.url}/{name}.json"))
        except (DeadlineError, RunDeadlineError) as exc:
            errors.append(exc)

    async def main() -> None:
        async with HttpClient(config) as client, anyio.create_task_group() as tg:
            tg.start_soon(get, client, "slow")
            await anyio.sleep(0.2)
            tg.start_soon(get, client, "fast")

    with server:
        started = time.monotonic()
        anyio.run(main)
        seconds = time.monotonic() - started
    assert sorted(type(e).__name__ for e in errors) == ["RunDeadlineError", "RunDeadlineError"]
    assert all("the run reached http.run_deadline (1s)" in str(e) for e in errors)
    assert seconds < 3.0, seconds
    assert server.count("/fast.json") == 0  # it never got the slot
