"""The lean request path (``fetch/lean.py``) under the one fetch client.

Plain GETs and HEADs go through aiohttp's parser on connections the transport
keeps itself; everything else (proxies, bodies, URLs yarl would rewrite,
headers that frame the message) goes through aiohttp's session, and so does a
request whose connection cannot be made. Whichever way a request goes, the
client's rules apply as before: size bounds, decompression limits, Retry-After,
reason phrases, timeouts, retries. Real servers on loopback: the fixture server,
a forward proxy, and a scripted one that answers with exactly the bytes a test gives.
"""

from __future__ import annotations

import gzip
import random
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
import yarl

from mirrorsync.config import parse_config
from mirrorsync.errors import FetchError, IntegrityError, NotFoundError
from mirrorsync.fetch import Fetched, HttpClient, Url
from mirrorsync.fetch.lean import plain_headers, plain_target
from mirrorsync.fetch.transport import AiohttpTransport
from mirrorsync.fixture.server import FixtureServer
from proxy import ForwardProxy

QUICK = "http: {timeout: 3, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.05}}\n"
TIMEOUTS = (3.0, 3.0, 3.0)

#: What the scripted server does with one request: the bytes to answer, or None to
#: close the connection without answering.
Reply = bytes | None


class Scripted:
    """A loopback HTTP server answering requests, in order, with the replies given
    (across connections), recording each request's head and body and the port of
    the connection it came on."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[bytes, bytes, int]] = []  # (head, body, peer port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, peer = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection, peer[1]), daemon=True).start()

    def _serve(self, connection: socket.socket, port: int) -> None:
        with connection:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(data) < length:
                    data += connection.recv(65536)
                body, data = data[:length], data[length:]
                with self._lock:
                    self.requests.append((head, body, port))
                    reply = self.replies.pop(0) if self.replies else None
                if reply is None:
                    return
                connection.sendall(reply)
                if b"\r\nConnection: close\r\n" in reply.partition(b"\r\n\r\n")[0] + b"\r\n":
                    return

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Reply]], Scripted]]:
    made: list[Scripted] = []

    def make(replies: list[Reply]) -> Scripted:
        made.append(Scripted(replies))
        return made[-1]

    yield make
    for server in made:
        server.close()


def ok(body: bytes = b"ok", extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def client(http: str = QUICK) -> HttpClient:
    sources = "sources: [{name: x, kind: mirror, url: 'http://127.0.0.1:9/'}]\n"
    return HttpClient(parse_config(sources + http, "c.yaml").http)


def get_all(urls: list[str], http: str = QUICK, **kwargs: object) -> list[bytes]:
    async def go() -> list[bytes]:
        async with client(http) as fetcher:
            got = []
            for url in urls:
                fetched = await fetcher.get(Url(url), **kwargs)  # type: ignore[arg-type]
                assert isinstance(fetched, Fetched)
                got.append(fetched.content)
            return got

    return anyio.run(go)


def failure(url: str, http: str = QUICK, **kwargs: object) -> FetchError | IntegrityError:
    try:
        get_all([url], http, **kwargs)
    except (FetchError, IntegrityError) as exc:
        return exc
    raise AssertionError("no error")


def one_line(exc: Exception, url: str) -> str:
    text = str(exc)
    assert "\n" not in text and "\r" not in text and text.startswith(url), text
    assert "aiohttp" not in text and "Traceback" not in text, text
    return text


# -- which way a request goes ----------------------------------------------------------


def test_plain_gets_reuse_one_kept_alive_connection_without_the_session(
    docroot: Path, server: FixtureServer
) -> None:
    for i in range(5):
        (docroot / f"{i}.json").write_text(f"[{i}]")

    async def go() -> None:
        async with client() as fetcher:
            for i in range(5):
                fetched = await fetcher.get(Url(f"{server.url}/{i}.json"))
                assert isinstance(fetched, Fetched) and fetched.content == f"[{i}]".encode()
            transport = fetcher._transport
            assert transport.session_opened is False  # all went the lean way
            assert transport.lean_connections == 1

    anyio.run(go)
    assert len({r.peer_port for r in server.requests}) == 1
    assert [r.status for r in server.requests] == [200] * 5


def test_a_head_and_a_304_leave_the_connection_for_the_next_request(
    docroot: Path, server: FixtureServer
) -> None:
    (docroot / "a.json").write_text("{}")

    async def go() -> None:
        async with client() as fetcher:
            assert await fetcher.head(Url(f"{server.url}/a.json")) == 2
            first = await fetcher.get(Url(f"{server.url}/a.json"))
            assert isinstance(first, Fetched) and first.etag
            again = await fetcher.get(Url(f"{server.url}/a.json"), etag=first.etag)
            assert type(again).__name__ == "NotModified"
            assert fetcher._transport.session_opened is False

    anyio.run(go)
    assert [r.method for r in server.requests] == ["HEAD", "GET", "GET"]
    assert [r.status for r in server.requests] == [200, 200, 304]
    assert len({r.peer_port for r in server.requests}) == 1


def test_a_url_yarl_rewrites_goes_through_the_session_with_the_same_request_head(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    server = scripted([ok(), ok()])
    headers = [("user-agent", "t/1"), ("accept", "*/*"), ("If-None-Match", '"x"')]

    async def go() -> None:
        transport = AiohttpTransport(connections=2)
        try:
            for url in (f"{server.url}/a/b?c=d", f"{server.url}/a/./b?c=d"):
                answer = await transport.send_plain("GET", url, headers, TIMEOUTS)
                async for _ in answer.aiter_raw():
                    pass
                await answer.aclose()
            assert transport.session_opened  # the second: yarl removes "/./"
        finally:
            await transport.aclose()

    anyio.run(go)
    lean, session = (head for head, _, _ in server.requests)
    assert lean == session
    assert lean.startswith(b"GET /a/b?c=d HTTP/1.1\r\nHost: 127.0.0.1:")


def test_plain_target_takes_only_urls_yarl_leaves_as_they_are() -> None:
    alphabet = "aZ09-._~!$&'()*+,;=:@/?" * 4 + "%#[] \u00e9"
    rng = random.Random(31)
    checked = 0
    for _ in range(3000):
        tail = rng.choice(["", "/", "?", "/."]) + "".join(
            rng.choice(alphabet) for _ in range(rng.randint(0, 10))
        )
        host = rng.choice(["h", "h.example", "H", "127.0.0.1", "xn--e1a", "h-"])
        port = rng.choice(["", ":80", ":8080", ":080", ":", ":65536"])
        url = f"http://{host}{port}{tail}"
        plain = plain_target(url)
        if plain is None:
            continue
        checked += 1
        parsed = yarl.URL(url)
        (_, key_host, key_port), host_header, target = plain
        assert target == parsed.raw_path_qs, url
        assert (key_host, key_port) == (parsed.raw_host, parsed.port), url
        # aiohttp's Host header: the host, and the port unless it is the default
        assert host_header == (
            parsed.raw_host if parsed.is_default_port() else f"{parsed.raw_host}:{parsed.port}"
        ), url
    assert checked > 300
    for rewritten in (
        "http://H/a",
        "http://h:80/a",
        "http://h/a/../b",
        "http://h/%41",
        "http://h/a#f",
        "http://u:p@h/a",
        "http://[::1]/a",
        "http://h\u00e9/a",
        "ftp://h/a",
    ):
        assert plain_target(rewritten) is None, rewritten
    assert plain_target("https://h:8443") == (("https", "h", 8443), "h:8443", "/")


def test_headers_that_frame_the_message_or_are_not_plain_go_through_the_session() -> None:
    assert plain_headers([("Accept", "*/*"), ("Connection", "keep-alive"), ("X-A", "a\tb")])
    for unusual in (
        ("Host", "other"),
        ("Content-Length", "0"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("Expect", "100-continue"),
        ("X-Bad", "a\r\nInjected: 1"),
        ("X-Text", "caf\u00e9"),
        ("Bad Name", "1"),
    ):
        assert not plain_headers([("Accept", "*/*"), unusual]), unusual


def test_a_get_with_a_body_goes_through_the_session_and_sends_it(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    server = scripted([ok()])

    async def go() -> None:
        transport = AiohttpTransport(connections=1)
        try:
            answer = await transport.send_plain("GET", f"{server.url}/q", [], TIMEOUTS, b"abc")
            async for _ in answer.aiter_raw():
                pass
            await answer.aclose()
            assert transport.session_opened and transport.lean_connections == 0
        finally:
            await transport.aclose()

    anyio.run(go)
    ((head, body, _),) = server.requests
    assert body == b"abc" and b"Content-Length: 3" in head


def test_a_proxy_carries_every_plain_get(docroot: Path, server: FixtureServer) -> None:
    (docroot / "a.json").write_text("[1]")
    with ForwardProxy() as proxy:
        http = f"http: {{timeout: 3, proxy: '{proxy.url}'}}\n"
        assert get_all([f"{server.url}/a.json"] * 2, http) == [b"[1]"] * 2
        assert [p.target for p in proxy.seen] == [f"{server.url}/a.json"] * 2


# -- the client's rules, on the lean path ----------------------------------------------


def test_a_body_over_the_limit_is_refused_declared_or_chunked(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024
    chunked += b"\r\n" * 1 + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n"
    server = scripted([ok(b"x" * 5000), chunked])
    declared = failure(f"{server.url}/big", max_bytes=1000, limit_name="limits.x")
    assert "5000 bytes, over the 1000-byte limit (limits.x); refused" in one_line(
        declared, server.url
    )
    read = failure(f"{server.url}/chunked", max_bytes=1500)
    assert "body over the 1500-byte limit; refused" in one_line(read, server.url)


def test_a_chunked_body_is_read_whole_and_its_connection_kept(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    server = scripted([chunked, ok(b"f")])
    assert get_all([f"{server.url}/a", f"{server.url}/b"]) == [b"abcde", b"f"]
    assert len({port for _, _, port in server.requests}) == 1


def test_a_body_without_length_or_chunks_is_read_to_the_close_within_the_limit(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    server = scripted([close + b"[1, 2]", close + b"z" * 5000])
    assert get_all([f"{server.url}/a"]) == [b"[1, 2]"]
    exc = failure(f"{server.url}/b", max_bytes=1000)
    assert "body over the 1000-byte limit; refused" in one_line(exc, server.url)


def test_a_gzip_bomb_is_refused_at_the_limit(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    bomb = gzip.compress(b"\0" * (32 << 20))  # 32 MiB of zeros in ~32 KiB
    server = scripted(
        [
            ok(bomb, "Content-Encoding: gzip\r\n"),
            ok(gzip.compress(b"[1]"), "Content-Encoding: gzip\r\n"),
        ]
    )
    exc = failure(f"{server.url}/bomb", max_bytes=1 << 20)
    assert "body over the 1048576-byte limit; refused" in one_line(exc, server.url)
    assert get_all([f"{server.url}/small"]) == [b"[1]"]


def test_a_bad_status_line_is_one_line_and_retried(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    server = scripted([b"HTTP/1.1 abc\r\n\r\n", b"NOT HTTP\r\n\r\n"])
    exc = failure(f"{server.url}/a")
    assert "malformed response" in one_line(exc, server.url)
    assert "after 2 attempts" in str(exc)
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("value", "attempts"),
    [("\u00b2".encode().decode("latin-1"), 2), ("-1", 2), ("1e3", 2), ("99999", 1)],
)
def test_retry_after_values_are_read_as_before(
    scripted: Callable[[list[Reply]], Scripted], value: str, attempts: int
) -> None:
    busy = f"HTTP/1.1 503 Busy\r\nRetry-After: {value}\r\nContent-Length: 0\r\n\r\n"
    server = scripted([busy.encode("latin-1")] * 2)
    exc = failure(f"{server.url}/a")
    text = one_line(exc, server.url)
    assert len(server.requests) == attempts  # hostile values are ignored: retried at once
    if attempts == 1:
        assert "asks to retry after 86400s" in text  # capped at a day, not waited for
    else:
        assert "HTTP 503 Busy after 2 attempts" in text


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/1.1 404 Not\x1b[31m Here\x07 " + b"y" * 300,
        b"HTTP/1.1 404 Nicht gefunden \xe9\xff",
        b"HTTP/1.1 abc",
    ],
)
def test_reason_phrases_and_bad_status_lines_are_worded_as_through_the_session(
    scripted: Callable[[list[Reply]], Scripted], status_line: bytes
) -> None:
    reply = status_line + b"\r\nContent-Length: 0\r\n\r\n"
    server = scripted([reply] * 4)
    http = "http: {timeout: 3, retries: {attempts: 1}}\n"
    lean = failure(f"{server.url}/x/a", http)
    session = failure(f"{server.url}/x/./a", http)  # yarl removes "/./": the session's way
    assert [head.split(b" ")[1] for head, _, _ in server.requests] == [b"/x/a", b"/x/a"]
    assert type(lean) is type(session) and isinstance(lean, FetchError | NotFoundError)
    assert isinstance(session, FetchError)
    assert lean.problem == session.problem
    one_line(lean, server.url)
    assert len(lean.problem) <= 200


def test_a_refused_connection_is_one_line_naming_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/a.json"
    exc = failure(url)
    text = one_line(exc, url)
    assert "Connection refused" in text and "after 2 attempts" in text


def test_a_silent_server_times_out_in_one_line(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/a"
    with listener:
        exc = failure(url, "http: {timeout: 0.3, retries: {attempts: 1}}\n")
    assert "timed out" in one_line(exc, url)


def test_a_kept_alive_connection_the_server_closes_is_retried(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    server = scripted([ok(b"1"), None, ok(b"2")])  # the second request: closed unanswered

    async def go() -> None:
        async with client() as fetcher:
            for expected in (b"1", b"2"):
                fetched = await fetcher.get(Url(f"{server.url}/{expected.decode()}"))
                assert isinstance(fetched, Fetched) and fetched.content == expected
            assert fetcher.stats.retries == 1
            assert fetcher._transport.session_opened is False

    anyio.run(go)
    ports = [port for _, _, port in server.requests]
    assert len(ports) == 3 and ports[0] == ports[1] != ports[2]


def test_a_body_cut_short_is_retried_and_refused_in_one_line(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc"
    server = scripted([short, short])
    exc = failure(f"{server.url}/a")
    assert "after 2 attempts" in one_line(exc, server.url)
    assert len(server.requests) == 2


def test_the_pool_holds_no_more_connections_than_the_concurrency(
    docroot: Path,
) -> None:
    (docroot / "a.json").write_text("[]")
    servers = [FixtureServer(docroot).start() for _ in range(3)]
    try:

        async def go() -> int:
            transport = AiohttpTransport(connections=2)
            most = 0
            try:

                async def fetch(url: str) -> None:
                    nonlocal most
                    answer = await transport.send_plain("GET", url, [], TIMEOUTS)
                    most = max(most, transport.lean_connections)
                    async for _ in answer.aiter_raw():
                        pass
                    await answer.aclose()

                # no throttle above: six at once, to three hosts, wait for room
                async with anyio.create_task_group() as tasks:
                    for _ in range(2):
                        for s in servers:
                            tasks.start_soon(fetch, f"{s.url}/a.json")
                assert not transport.session_opened
                return max(most, transport.lean_connections)
            finally:
                await transport.aclose()

        assert anyio.run(go) <= 2
        assert sum(len(s.requests) for s in servers) == 6
        assert len({(s.port, r.peer_port) for s in servers for r in s.requests}) >= 3
    finally:
        for s in servers:
            s.stop()


def test_a_lean_request_waits_while_the_session_holds_the_only_connection(
    scripted: Callable[[list[Reply]], Scripted],
) -> None:
    server = scripted([ok(b"session"), ok(b"lean")])

    async def go() -> list[bytes]:
        transport = AiohttpTransport(connections=1)
        got: list[bytes] = []

        async def lean() -> None:
            answer = await transport.send_plain("GET", f"{server.url}/lean", [], TIMEOUTS)
            got.extend([chunk async for chunk in answer.aiter_raw()])
            await answer.aclose()

        try:
            held = await transport.send_plain("GET", f"{server.url}/s", [], TIMEOUTS, b"x")
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(lean)
                await anyio.sleep(0.2)
                assert len(server.requests) == 1 and transport.lean_connections == 0
                got.extend([chunk async for chunk in held.aiter_raw()])
                await held.aclose()  # the session's connection is free: the lean one may open
            assert transport.lean_connections == 1
        finally:
            await transport.aclose()
        return got

    assert anyio.run(go) == [b"session", b"lean"]
    assert [head.split(b" ")[1] for head, _, _ in server.requests] == [b"/s", b"/lean"]


TLS = (
    Path(__file__).parent / "data" / "tls-cert.pem",
    Path(__file__).parent / "data" / "tls-key.pem",
)


def test_https_goes_the_lean_way_verified_and_a_bad_certificate_is_one_line_not_retried(
    docroot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (docroot / "a.json").write_text("[2]")
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with FixtureServer(docroot, tls=TLS) as server:
        url = f"{server.url}/a.json"
        monkeypatch.setenv("SSL_CERT_FILE", str(TLS[0]))

        async def go() -> None:
            async with client() as fetcher:
                for _ in range(3):
                    fetched = await fetcher.get(Url(url))
                    assert isinstance(fetched, Fetched) and fetched.content == b"[2]"
                assert fetcher._transport.session_opened is False

        anyio.run(go)
        assert len({r.peer_port for r in server.requests}) == 1
        monkeypatch.delenv("SSL_CERT_FILE")  # the usual CA bundle: not this certificate's
        server.reset_log()
        exc = failure(url)
        assert "TLS certificate verification failed" in one_line(exc, server.url)
        assert "after" not in exc.problem  # not retried
