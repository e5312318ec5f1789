"""The headers a request carries on the wire are mirrorsync's, never aiohttp's defaults.

``fetch/transport.py`` tells aiohttp to skip its automatic Accept,
Accept-Encoding and User-Agent only when a request lacks one of them (the
crawl's requests carry all three, and skipping costs a copy of the headers per
request): either way the wire shows what mirrorsync set, or nothing, never
aiohttp's ``Accept-Encoding: gzip, deflate, br`` (a brotli body ``Body``
cannot decode) or its ``Python/aiohttp`` agent. A real server on loopback
records each request's head.
"""

from __future__ import annotations

import socket
import threading

import anyio

from mirrorsync import __version__
from mirrorsync.config import parse_config
from mirrorsync.fetch import Fetched, HttpClient, Url
from mirrorsync.fetch.transport import AiohttpTransport


def _recording_server(answers: int) -> tuple[int, list[bytes]]:
    """A loopback server answering ``answers`` requests (200, "ok", kept alive);
    its port and the heads of the requests it got."""
    heads: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                data = b""
                for _ in range(answers):
                    while b"\r\n\r\n" not in data:
                        chunk = connection.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, _, data = data.partition(b"\r\n\r\n")
                    heads.append(head)
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], heads


def _fields(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]


def test_a_get_carries_mirrorsyncs_accept_encoding_and_agent_once_each() -> None:
    port, heads = _recording_server(2)
    config = parse_config("sources: [{name: m, kind: mirror, url: 'http://h/m'}]\n")

    async def main() -> None:
        async with HttpClient(config.http) as client:
            for name in ("a.json", "b.json"):
                fetched = await client.get(Url(f"http://127.0.0.1:{port}/{name}"))
                assert isinstance(fetched, Fetched) and fetched.content == b"ok"

    anyio.run(main)
    assert len(heads) == 2
    for head in heads:
        fields = _fields(head)
        names = [name for name, _ in fields]
        assert names.count("accept") == names.count("accept-encoding") == 1, fields
        assert names.count("user-agent") == 1, fields
        assert dict(fields)["accept-encoding"] == "gzip, deflate"  # never br
        assert dict(fields)["user-agent"] == f"mirrorsync/{__version__}"


def test_a_request_without_them_gets_none_of_aiohttps_defaults() -> None:
    port, heads = _recording_server(2)
    url = f"http://127.0.0.1:{port}/doc"
    timeouts = (5.0, 5.0, 5.0)

    async def main() -> None:
        transport = AiohttpTransport(connections=1)
        try:
            for headers in ([], [("User-Agent", "test/1"), ("X-Other", "1")]):
                answer = await transport.send_plain("GET", url, headers, timeouts)
                async for _ in answer.aiter_raw():
                    pass
                await answer.aclose()
        finally:
            await transport.aclose()

    anyio.run(main)
    bare, partial = (dict(_fields(head)) for head in heads)
    assert "accept" not in bare and "accept-encoding" not in bare and "user-agent" not in bare
    assert "accept" not in partial and "accept-encoding" not in partial
    assert partial["user-agent"] == "test/1"


def test_a_header_the_caller_sets_replaces_the_clients_default() -> None:
    """An OCI manifest GET names its own Accept: the wire carries that one, once, as
    httpx's client sends it when it follows a redirect (its headers merge), not the
    default beside it."""
    port, heads = _recording_server(1)
    config = parse_config("sources: [{name: m, kind: mirror, url: 'http://h/m'}]\n")
    accept = "application/vnd.oci.image.manifest.v1+json"

    async def main() -> None:
        async with HttpClient(config.http) as client:
            url = Url(f"http://127.0.0.1:{port}/manifest")
            fetched = await client.get(url, headers={"Accept": accept, "User-Agent": "oci/1"})
            assert isinstance(fetched, Fetched) and fetched.content == b"ok"

    anyio.run(main)
    (head,) = heads
    fields = _fields(head)
    assert [v for k, v in fields if k == "accept"] == [accept], fields
    assert [v for k, v in fields if k == "user-agent"] == ["oci/1"], fields
