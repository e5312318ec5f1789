"""A large blob is received off the event loop (issue 31, copy throughput).

A download of a declared length of 8 MiB and more over plain http is read by
one worker thread from its connection's socket (hashed and written there);
everything else about the request stays the client's one rule: the length
and sha256 checks, the byte counts, the retry policy and its words for a
broken or stalled body, ``http.timeout``, ``http.deadline`` and a
cancellation from outside, which stop the thread's read at once. Its
connection is closed afterwards (the loop's parser never saw the body).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from conftest import run_cli, write_config
from mirrorsync.config import parse_config
from mirrorsync.errors import FetchError, IntegrityError
from mirrorsync.fetch import HttpClient, Tally, Url
from mirrorsync.fixture.server import FixtureServer

LARGE = 12 << 20  # read off the loop
SMALL = 1 << 20  # read on the loop

Handler = Callable[[socket.socket, int], None]


def _config(*, attempts: int = 1, timeout: float = 5, deadline: str = "") -> HttpClient:
    text = (
        "sources: [{name: m, kind: mirror, url: 'http://h/m'}]\n"
        f"http:\n  concurrency: 4\n  per_host_rate: 1000\n  timeout: {timeout}\n"
        f"  retries: {{attempts: {attempts}, backoff_initial: 0.01, backoff_max: 0.02}}\n"
        + (f"  deadline: {deadline}\n" if deadline else "")
    )
    return HttpClient(parse_config(text).http)


class Server:
    """A loopback HTTP/1.1 server: ``handler(connection, n)`` answers the n-th
    connection (in a thread of its own); ``connections`` counts them."""

    def __init__(self, handler: Handler) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self._handler = handler
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> Url:
        return Url(f"http://127.0.0.1:{self.port}/{path}")

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            n, self.connections = self.connections, self.connections + 1
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        with conn, contextlib.suppress(OSError):  # the client went away
            self._handler(conn, n)

    def close(self) -> None:
        self.listener.close()


def _request(conn: socket.socket) -> str | None:
    """The path of the next request on ``conn`` (None: the client closed it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    return data.split(b" ", 2)[1].decode()


def _body(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def _head(size: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size


def _keep_alive(conn: socket.socket, n: int) -> None:
    """Answers every request on the connection: /<size> is that many bytes."""
    while (path := _request(conn)) is not None:
        size = int(path.strip("/"))
        conn.sendall(_head(size) + _body(size))


def test_a_large_blob_is_read_off_the_loop_whole_and_its_connection_not_reused(
    tmp_path: Path,
) -> None:
    """Two large blobs in turn: each whole, its sha256 and length checked, every byte
    counted (run and stack), each on a connection of its own (closed after: the
    loop's parser never saw its body); two small ones share one kept-alive."""
    server = Server(_keep_alive)
    tally = Tally()

    async def main() -> list[tuple[int, str]]:
        done = []
        async with _config() as client:
            for i, size in enumerate((LARGE, LARGE + 3, SMALL, SMALL)):
                dest = tmp_path / f"blob{i}"
                body = _body(size)
                got = await client.download(
                    server.url(str(size)),
                    dest,
                    expected_length=len(body),
                    expected_sha256=hashlib.sha256(body).hexdigest(),
                    tally=tally,
                )
                assert dest.read_bytes() == body
                done.append((got.length, got.sha256))
            assert client.stats.bytes == tally.bytes == 2 * LARGE + 3 + 2 * SMALL
            return done

    try:
        done = anyio.run(main)
    finally:
        server.close()
    assert [length for length, _ in done] == [LARGE, LARGE + 3, SMALL, SMALL]
    assert done[0][1] == hashlib.sha256(_body(LARGE)).hexdigest()
    assert server.connections == 3  # one per large blob, one for both small ones
    assert tally.requests == 4


def test_a_large_blob_unlike_its_manifest_is_refused(tmp_path: Path) -> None:
    """The sha256 check is the same off the loop: a blob whose bytes are not the
    promised ones is an IntegrityError naming both digests."""
    server = Server(_keep_alive)

    async def main() -> None:
        async with _config() as client:
            await client.download(
                server.url(str(LARGE)),
                tmp_path / "blob",
                expected_length=LARGE,
                expected_sha256="0" * 64,
            )

    try:
        with pytest.raises(
            IntegrityError, match=r"sha256 is [0-9a-f]{64}, but the manifest says 0+"
        ):
            anyio.run(main)
    finally:
        server.close()


def _failure(handler: Handler, size: int, **config: object) -> tuple[str, float]:
    """The one-line error of downloading /<size> from ``handler``, and how long it took."""
    server = Server(handler)

    async def main() -> None:
        async with _config(**config) as client:  # type: ignore[arg-type]
            await client.download(server.url(str(size)), Path("/dev/null"), expected_length=size)

    started = time.monotonic()
    try:
        with pytest.raises(FetchError) as failure:
            anyio.run(main)
    finally:
        server.close()
    text = str(failure.value).replace(str(server.port), "PORT")
    return text, time.monotonic() - started


def _cut_off(conn: socket.socket, n: int) -> None:
    """Half the promised body, then the connection is closed."""
    size = int((_request(conn) or "/0").strip("/"))
    conn.sendall(_head(size) + _body(size // 2))


def test_a_large_body_cut_off_is_retried_and_worded_as_on_the_loop() -> None:
    """A body that breaks off: retried per ``http.retries``, then one line in the
    very words a small body's failure gets (httpcore's)."""
    large, _ = _failure(_cut_off, LARGE, attempts=2)
    small, _ = _failure(_cut_off, SMALL, attempts=2)
    assert "peer closed connection without sending complete message body after 2 attempts" in large
    assert large.replace(str(LARGE), "N") == small.replace(str(SMALL), "N")


def _stalls(conn: socket.socket, n: int) -> None:
    """A third of the promised body, then nothing for longer than any read timeout."""
    size = int((_request(conn) or "/0").strip("/"))
    conn.sendall(_head(size) + _body(size // 3))
    time.sleep(4)


def test_a_large_body_that_stalls_times_out_at_http_timeout() -> None:
    """Each read off the loop waits at most ``http.timeout``, as the loop's do."""
    large, took = _failure(_stalls, LARGE, timeout=0.5)
    small, _ = _failure(_stalls, SMALL, timeout=0.5)
    assert "timed out (ReadTimeout)" in large and took < 3
    assert large.replace(str(LARGE), "N") == small.replace(str(SMALL), "N")


def _trickles(conn: socket.socket, n: int) -> None:
    """The body 64 KiB every 50 ms: never slow enough for the read timeout."""
    size = int((_request(conn) or "/0").strip("/"))
    conn.sendall(_head(size) + _body(1 << 20))
    for _ in range(200):
        conn.sendall(_body(64 << 10))
        time.sleep(0.05)


def test_http_deadline_stops_a_large_download_in_its_thread(tmp_path: Path) -> None:
    """``http.deadline`` cuts a trickling large body off: the error comes at the
    deadline, and the thread reading it has stopped (the file grows no more)."""
    server = Server(_trickles)
    dest = tmp_path / "blob"

    async def main() -> None:
        async with _config(deadline="1s") as client:
            await client.download(server.url(str(LARGE)), dest, expected_length=LARGE)

    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match=r"http\.deadline"):
            anyio.run(main)
        took = time.monotonic() - started
        size = dest.stat().st_size
        time.sleep(0.3)
        assert dest.stat().st_size == size  # nothing written after the error
    finally:
        server.close()
    assert 1 <= took < 3
    assert (1 << 20) < size < LARGE


def test_a_cancelled_large_download_stops_and_the_client_goes_on(tmp_path: Path) -> None:
    """A cancellation from outside (a run stopping) ends a large download at once;
    the next request of the same client is answered as ever."""
    trickling = Server(_trickles)
    whole = Server(_keep_alive)

    async def main() -> tuple[float, int]:
        async with _config() as client:
            started = time.monotonic()
            with anyio.move_on_after(0.5):
                await client.download(trickling.url(str(LARGE)), tmp_path / "a")
            took = time.monotonic() - started
            got = await client.download(
                whole.url(str(LARGE)), tmp_path / "b", expected_length=LARGE
            )
            return took, got.length

    try:
        took, length = anyio.run(main)
    finally:
        trickling.close()
        whole.close()
    assert took < 1.5
    assert length == LARGE


def test_a_command_that_fetches_never_imports_httpx_command_line() -> None:
    """httpx's own command line (click, pygments: ~40 ms of every start) is never
    imported with the fetch client, whatever is installed beside it."""
    code = (
        "import sys, mirrorsync.fetch.client, mirrorsync.delivery, mirrorsync.mirrors.run\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'pygments')))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert shown.strip() == "[]"


def test_a_copy_without_webhooks_loads_no_delivery_code_and_still_forgets_removed_ones(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """``mirror`` with no webhook configured does not import the delivery code
    (signing, payloads: start-up time of every copy), yet a webhook that has left
    the configuration is recorded as such before publishing, as ``Outbox.open``
    does (no event of this run is queued for it)."""
    from receiver import Receiver, new_secret
    from test_mirrors import _config_text, _graph, _publish_upstream

    _publish_upstream(docroot, _graph(), None)
    text = _config_text(tmp_path, server, "")
    secret = new_secret()
    with Receiver(secret) as receiver:
        hook = (
            f"webhooks:\n  - name: site\n    url: {receiver.url}\n    secret_env: HOOK_SECRET\n"
            "    events: [mirror.updated]\n"
        )
        config = write_config(tmp_path / "c.yaml", text + hook)
        once = run_cli("-c", str(config), "once", cwd=tmp_path, env={"HOOK_SECRET": secret})
        assert once.returncode == 0, once.stderr  # synced, copied, mirror.updated sent
    config = write_config(tmp_path / "c.yaml", text)  # the webhook removed
    shutil.rmtree(tmp_path / "copy")  # copied again by the next run
    done = run_cli("-c", str(config), "mirror", cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "mirrorsync.mirrors.run" in imported
    assert not {m for m in imported if m.startswith("mirrorsync.delivery")}
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT name, configured FROM webhooks").fetchall() == [("site", 0)]


def _chunked_and_declared(conn: socket.socket, n: int) -> None:
    """Chunked framing and a Content-Length of the bare body: the framing decides."""
    size = int((_request(conn) or "/0").strip("/"))
    body = _body(size)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % size
    half = size // 2
    conn.sendall(head + b"%x\r\n" % half + body[:half] + b"\r\n")
    conn.sendall(b"%x\r\n" % (size - half) + body[half:] + b"\r\n0\r\n\r\n")


def test_a_chunked_body_declaring_a_length_is_refused_as_on_the_loop() -> None:
    """A body both chunked and of declared length is refused before any of it is
    read (the parser's rule, request smuggling's shape), large or small, in the
    same words; a raw read of such a body would take its framing for its bytes."""
    large, _ = _failure(_chunked_and_declared, LARGE)
    small, _ = _failure(_chunked_and_declared, SMALL)
    assert "Transfer-Encoding can't be present with Content-Length" in large
    assert large.replace(str(LARGE), "N") == small.replace(str(SMALL), "N")


def test_a_large_download_cancelled_while_waiting_for_a_thread_ends_at_once(
    tmp_path: Path,
) -> None:
    """Every worker thread busy: a large download cancelled (a deadline, a run
    stopping) before its thread started ends at once, and no thread runs it later."""
    server = Server(_keep_alive)
    dest = tmp_path / "blob"

    async def main() -> float:
        limiter = anyio.to_thread.current_default_thread_limiter()
        tokens, limiter.total_tokens = limiter.total_tokens, 1
        release = threading.Event()

        async def hold() -> None:  # the one thread, busy
            await anyio.to_thread.run_sync(release.wait)

        try:
            async with _config() as client, anyio.create_task_group() as tg:
                tg.start_soon(hold)
                await anyio.sleep(0.1)
                started = time.monotonic()
                with anyio.move_on_after(0.5):
                    await client.download(server.url(str(LARGE)), dest, expected_length=LARGE)
                took = time.monotonic() - started
                release.set()
                await anyio.sleep(0.2)  # a thread that ran it now would write the file
        finally:
            release.set()
            limiter.total_tokens = tokens
        return took

    try:
        took = anyio.run(main)
    finally:
        server.close()
    assert took < 1.5
    assert dest.stat().st_size == 0
