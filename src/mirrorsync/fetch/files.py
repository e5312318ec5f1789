"""``file://`` URLs behind the same client API as HTTP: an httpx transport for local files.

Sites often keep a mirror on a shared filesystem and give it to Spack as
``file:///path``. :class:`FileTransport` is mounted on the shared
``httpx.AsyncClient`` for ``file://``, so a ``mirror`` source with such a URL
goes through exactly the code an HTTP mirror does (size limits, checksums,
the HTTP cache, conditional requests, events, the crawl, ``verify``): it
answers like a static file server. A missing file is a 404, an unreadable one
a 403, and each file has an ``ETag`` and ``Last-Modified`` from its size and
modification time, so ``If-None-Match`` / ``If-Modified-Since`` get a 304.
Files are read in a worker thread, a chunk at a time.
"""

from __future__ import annotations

import email.utils
import os
import stat
import urllib.parse
from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio
import httpx

_CHUNK = 1 << 20


class _FileStream(httpx.AsyncByteStream):
    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await anyio.to_thread.run_sync(self._file.read, _CHUNK)
            if not chunk:
                break
            yield chunk

    async def aclose(self) -> None:
        self._file.close()


class _Empty(httpx.AsyncByteStream):
    """A body of no bytes that, like a socket's, can be read (drained) once."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        return
        yield b""  # pragma: no cover - makes this an async generator


class FileTransport(httpx.AsyncBaseTransport):
    """GET and HEAD of ``file:///absolute/path`` as a static file server would answer them."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method not in ("GET", "HEAD"):
            return _status(405, request)
        if request.url.host not in ("", "localhost"):
            return _status(400, request)  # file://server/share is not a local path
        path = urllib.parse.unquote(request.url.path)
        if not path.startswith("/") or "\x00" in path or ".." in path.split("/"):
            return _status(400, request)
        try:
            file = await anyio.to_thread.run_sync(open, path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return _status(404, request)
        except PermissionError:
            return _status(403, request)
        except OSError:
            return _status(500, request)
        try:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                file.close()
                return _status(404, request)
            etag = f'"{info.st_mtime_ns:x}-{info.st_size:x}"'
            modified = email.utils.formatdate(info.st_mtime, usegmt=True)
            headers = {"etag": etag, "last-modified": modified}
            if _not_modified(request, etag, info.st_mtime):
                file.close()
                return httpx.Response(304, headers=headers, stream=_Empty(), request=request)
            headers["content-length"] = str(info.st_size)
            if request.method == "HEAD":
                file.close()
                return httpx.Response(200, headers=headers, stream=_Empty(), request=request)
            return httpx.Response(200, headers=headers, stream=_FileStream(file), request=request)
        except BaseException:
            file.close()
            raise


def _not_modified(request: httpx.Request, etag: str, mtime: float) -> bool:
    wanted = request.headers.get("if-none-match")
    if wanted is not None:
        return etag in [tag.strip() for tag in wanted.split(",")] or wanted.strip() == "*"
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False
    return int(mtime) <= when


def _status(code: int, request: httpx.Request) -> httpx.Response:
    return httpx.Response(code, headers={"content-length": "0"}, stream=_Empty(), request=request)
