"""A real HTTP forward proxy on 127.0.0.1 that counts what goes through it.

Plain http requests (``GET http://host:port/path``) are forwarded, one per
connection to the origin (answered with ``Connection: close``); ``CONNECT
host:port`` opens a tunnel (https). Each request is recorded with its
``Proxy-Authorization`` header. It runs its own event loop in a daemon thread,
so it serves both in-process clients and ``mirrorsync`` processes.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.parse
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class Proxied:
    method: str
    target: str  # the absolute URL, or host:port for CONNECT
    proxy_authorization: str | None


class ForwardProxy:
    """``with ForwardProxy() as proxy:`` listens on ``proxy.url`` until the block ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Proxied] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    @property
    def seen(self) -> list[Proxied]:
        with self._lock:
            return list(self._seen)

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0)
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        # Connections still open (an in-process client's kept-alive one): ended
        # here, on the loop, rather than left as coroutines to be collected later.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; whether the client's connection may serve another."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = [line.split(":", 1) for line in lines if ":" in line]
        found = {k.strip().lower(): v.strip() for k, v in headers}
        with self._lock:
            self._seen.append(Proxied(method, target, found.get("proxy-authorization")))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return False
        parts = urllib.parse.urlsplit(target)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        body = await reader.readexactly(int(found.get("content-length", "0")))
        kept = [
            f"{k}:{v}"
            for k, v in headers
            if not k.strip().lower().startswith("proxy-") and k.strip().lower() != "connection"
        ]
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        upstream = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
        up_writer.write(upstream.encode("latin-1") + body)
        await up_writer.drain()
        answer = await up_reader.readuntil(b"\r\n\r\n")
        status_line, *answer_lines = answer.decode("latin-1").split("\r\n")
        answer_lines = [
            x
            for x in answer_lines
            if x and not x.lower().startswith(("connection:", "keep-alive:"))
        ]
        writer.write(
            "\r\n".join([status_line, *answer_lines, "Connection: close", "", ""]).encode("latin-1")
        )
        await _pipe(up_reader, writer, close=False)
        up_writer.close()
        await writer.drain()
        return False


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, close: bool = True
) -> None:
    try:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        if close:
            writer.close()
