"""The HTTP client every part of mirrorsync shares: :class:`HttpClient`'s requests,
each throttled, under the deadlines and retried.

Its parts live beside it: the transport (``transport.py``) and the answer it
gives (``answer.py``); every body read in bounded steps (``body.py``; a large one
off the event loop, ``offloop.py``); the retry policy (``retry.py``), the
throttle (``throttle.py``), the circuit breakers (``breaker.py``) and the
deadlines (``deadline.py``); what a request gives back (``results.py``) and its
``-vv`` line (``request_log.py``).
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import anyio
import httpx

from mirrorsync import __version__
from mirrorsync.config import HttpConfig
from mirrorsync.errors import FetchError, FormatError
from mirrorsync.fetch.answer import Response, bytes_received
from mirrorsync.fetch.body import Body, drain
from mirrorsync.fetch.breaker import Breakers
from mirrorsync.fetch.deadline import DeadlineError, RunDeadlineError, Watchdog
from mirrorsync.fetch.files import FileTransport
from mirrorsync.fetch.request_log import log_request, requests_logged
from mirrorsync.fetch.results import Answered, Downloaded, Fetched, NotModified, Tally
from mirrorsync.fetch.retry import check_status, describe, retried
from mirrorsync.fetch.s3 import S3Transport
from mirrorsync.fetch.throttle import NO_SLOT, Throttle, origin
from mirrorsync.fetch.transport import AiohttpTransport, as_sent
from mirrorsync.fetch.upload import FileChunks
from mirrorsync.fetch.validators import kept_validators
from mirrorsync.proxies import proxies_for
from mirrorsync.redact import Url, redact_url
from mirrorsync.units import header_count, size_problem

USER_AGENT = f"mirrorsync/{__version__}"
SMALL_DOCUMENT_CAP = 64 * 1024 * 1024  # catalogue, manifests, hash files
# What ``send`` hands back of an answer's headers: an object store's validators and
# digest; a registry's upload protocol (location, digest, range), auth and paging.
_ANSWER_HEADERS = (
    "etag",
    "content-length",
    "x-amz-meta-sha256",
    "last-modified",
    "location",
    "www-authenticate",
    "docker-content-digest",
    "content-type",
    "range",
    "link",
)

T = TypeVar("T")

# Sent straight to the transport: http(s), no userinfo (httpx turns it into auth).
_DIRECT = re.compile(r"https?://[^/@?#]*(?:[/?#]|$)", re.IGNORECASE)


class HttpClient:
    """One ``httpx.AsyncClient`` behind a global concurrency cap, per-host limits and retries.

    TLS certificates are verified unless ``verify=False``. Clients that pass
    the same ``throttle`` share its limits, its per-host circuit breakers and
    its run deadline (e.g. one verifying and one not).

    Every body is read by :class:`Body`, the one place where lengths and
    digests are checked: a body is never read, or decompressed, past its
    promised length (+1 byte, to see that it is too long) or its size limit.
    Every attempt must end within ``http.deadline`` of getting its slot, and
    none runs past ``http.run_deadline`` after the throttle was made.
    """

    def __init__(
        self,
        config: HttpConfig,
        *,
        verify: bool = True,
        throttle: Throttle | None = None,
        stats: Tally | None = None,
    ) -> None:
        self._config = config
        self.verify = verify
        self._throttle = throttle or Throttle(
            config.concurrency, config.per_host_rate, config.host_concurrency
        )
        self._deadline = config.deadline_seconds
        self._run_ends = self._throttle.started + config.run_deadline_seconds
        proxies = proxies_for(config.proxy)
        self._transport = AiohttpTransport(
            connections=config.concurrency, verify=verify, proxies=proxies
        )
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout),
            transport=self._transport,
            # Local mirrors, and S3 buckets (signed, then sent by the same transport).
            mounts={
                "file://": FileTransport(),
                "s3://": S3Transport(self._transport, config.s3),
            },
            # Only encodings Body decodes itself, a bounded step at a time.
            headers={"user-agent": USER_AGENT, "accept-encoding": "gzip, deflate"},
            follow_redirects=True,
            verify=verify,
        )
        self.stats = stats if stats is not None else Tally()  # clients may share one
        # Requests that need nothing of httpx's client but its types go straight
        # to the transport (see ``_send_direct``), which applies any proxy itself.
        self._direct = True
        self._defaults = as_sent(self._client.headers)
        timeouts = httpx.Timeout(config.timeout)
        self._timeouts = (timeouts.connect, timeouts.read, timeouts.pool)
        self._log_requests = requests_logged()  # once: a crawl sends ~1,000 requests/s
        self._watchdog = Watchdog()

    @property
    def breakers(self) -> Breakers:
        return self._throttle.breakers

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(
        self,
        url: Url,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        max_bytes: int = SMALL_DOCUMENT_CAP,
        limit_name: str | None = None,
        expected_length: int | None = None,
        expected_digest: str | None = None,
        algorithm: str = "sha256",
        tally: Tally | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fetched | NotModified:
        """GET a small document into memory, conditionally when validators are given.

        A body over ``max_bytes`` (declared or read) is refused (``limit_name``
        names the setting in the message); one whose length or ``algorithm``
        digest is not the one expected is an IntegrityError. ``headers`` are sent
        too (a registry's Accept and Authorization).
        """
        headers = dict(headers or {})
        if etag:
            headers["if-none-match"] = etag
        if last_modified:
            headers["if-modified-since"] = last_modified

        async def read(response: Response) -> Fetched | NotModified:
            if response.status_code == 304:
                return NotModified(url)
            body = self._body(url, response, max_bytes, limit_name, expected_length, tally)
            if expected_digest is not None:
                body.hash_with(algorithm)
            content = await body.read()
            body.check(expected_digest)
            return Fetched(url, content, *kept_validators(response.headers))

        return await self._fetch("GET", url, headers, tally, read)

    async def download(
        self,
        url: Url,
        dest: Path,
        *,
        expected_length: int | None = None,
        expected_sha256: str | None = None,
        max_bytes: int | None = None,
        limit_name: str | None = None,
        promised_by: str = "the manifest",
        tally: Tally | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Downloaded:
        """Stream a blob to ``dest``, hashing it on the way; check length and checksum.

        With ``expected_length`` no more than that (+1 byte) is read or written.
        ``promised_by`` names what promised them, in messages."""
        result = await self.download_if_modified(
            url,
            dest,
            expected_length=expected_length,
            expected_sha256=expected_sha256,
            max_bytes=max_bytes,
            limit_name=limit_name,
            promised_by=promised_by,
            tally=tally,
            headers=headers,
        )
        assert isinstance(result, Downloaded)  # unconditional requests are never answered 304
        return result

    async def download_if_modified(
        self,
        url: Url,
        dest: Path,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        expected_length: int | None = None,
        expected_sha256: str | None = None,
        max_bytes: int | None = None,
        limit_name: str | None = None,
        promised_by: str = "the manifest",
        tally: Tally | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Downloaded | NotModified:
        """``download``, conditionally when validators are given: NotModified on a 304."""
        headers = dict(headers or {})
        if etag:
            headers["if-none-match"] = etag
        if last_modified:
            headers["if-modified-since"] = last_modified

        async def read(response: Response) -> Downloaded | NotModified:
            if response.status_code == 304:
                return NotModified(url)
            body = self._body(url, response, max_bytes, limit_name, expected_length, tally)
            body.promised_by = promised_by
            body.hash_with("sha256")
            # Never through a link planted at the name (a copy's directory is not trusted);
            # truncated, not exclusive: a retry writes the same temporary again.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(dest, flags, 0o666), "wb") as out:
                await body.copy_to(out)
            return Downloaded(
                url,
                dest,
                body.length,
                body.check(expected_sha256),
                *kept_validators(response.headers),
            )

        return await self._fetch("GET", url, headers, tally, read)

    async def head(
        self,
        url: Url,
        *,
        tally: Tally | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int | None:
        """HEAD a URL; return its Content-Length (None when not given)."""

        async def read(response: Response) -> int | None:
            size = header_count(response.headers.get("content-length"))
            problem = None if size is None else size_problem(size, "Content-Length")
            if problem is not None:  # kept, it would stop every write of the crawl
                raise FormatError("response", problem, url)
            return size

        return await self._fetch("HEAD", url, dict(headers or {}), tally, read)

    async def measure(
        self,
        url: Url,
        *,
        algorithm: str = "sha256",
        expected_length: int | None = None,
        tally: Tally | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """GET a blob without keeping it: its length and hex digest (``algorithm``).

        With ``expected_length``, a longer body is refused (IntegrityError) after
        that many bytes and one more."""

        async def read(response: Response) -> tuple[int, str]:
            body = self._body(url, response, None, None, expected_length, tally)
            body.hash_with(algorithm)
            await body.copy_to(None)
            return body.length, body.check(None)

        return await self._fetch("GET", url, dict(headers or {}), tally, read)

    async def send(
        self,
        method: str,
        url: Url,
        *,
        content: bytes | Path = b"",
        headers: Mapping[str, str] | None = None,
        allow: frozenset[int] = frozenset(),
        max_bytes: int = SMALL_DOCUMENT_CAP,
        tally: Tally | None = None,
    ) -> Answered:
        """Any request with a body (an object store's PUT, POST, DELETE; a registry's
        POST, PUT, PATCH, a token GET), retried as every request is (a body is sent
        again whole: a file is opened again); the answer's body in memory, at most
        ``max_bytes``. A status of 400 and over raises as for a GET, unless ``allow``
        lists it (a 401 whose challenge is read)."""

        async def read(response: Response) -> Answered:
            data = b""
            if method != "HEAD":
                data = await self._body(url, response, max_bytes, None, None, tally).read()
            found = response.headers
            return Answered(
                url,
                response.status_code,
                {k: v for k in _ANSWER_HEADERS if (v := found.get(k)) is not None},
                data,
            )

        return await self._fetch(method, url, dict(headers or {}), tally, read, content, allow)

    # -- internals ---------------------------------------------------------

    def _body(
        self,
        url: Url,
        response: Response,
        max_bytes: int | None,
        limit_name: str | None,
        expected_length: int | None,
        tally: Tally | None,
    ) -> Body:
        def count(n: int) -> None:
            self.stats.bytes += n
            if tally is not None:
                tally.bytes += n

        body = Body(url, response, max_bytes, limit_name, expected_length, count)
        body.read_timeout = self._timeouts[1]
        return body

    async def _fetch(
        self,
        method: str,
        url: Url,
        headers: dict[str, str],
        tally: Tally | None,
        read: Callable[[Response], Awaitable[T]],
        content: bytes | Path | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> T:
        """One request, retried per ``http.retries``; ``read`` turns the answer into a result."""
        attempt = functools.partial(self._once, method, url, headers, tally, read, content, allow)
        policy, breakers = self._config.retries, self._throttle.breakers
        return await retried(url, attempt, policy, self.stats, tally, breakers)

    async def _once(
        self,
        method: str,
        url: Url,
        headers: dict[str, str],
        tally: Tally | None,
        read: Callable[[Response], Awaitable[T]],
        content: bytes | Path | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> T:
        """One throttled attempt, within the deadlines; the status is checked before
        the body is read."""
        host = origin(url.address)
        breakers = self._throttle.breakers
        breakers.check(host, url)
        run_left = self._run_ends - time.monotonic()
        if run_left <= 0:
            raise self._run_over(url)
        # file:// requests skip the throttle: it spares servers, a local disk needs none.
        slot = NO_SLOT if url.address.startswith("file:") else self._throttle.slot(host)
        # One deadline for both (the watchdog's, no timer of its own): the run's
        # while queued, then the sooner of the run's and the request's.
        attempt = self._watchdog.attempt(run_left)
        run_ends = attempt.deadline
        request_ends = math.inf
        with attempt:
            async with slot:
                breakers.check(host, url)  # it may have gone down while this one queued
                request_ends = attempt.now() + self._deadline
                if request_ends < run_ends:
                    attempt.move(request_ends)
                return await self._send(method, url, headers, tally, read, content, allow)
        if request_ends < run_ends:
            raise DeadlineError(
                url,
                f"timed out: no complete answer within http.deadline "
                f"({self._deadline:g}s); not retried",
            )
        raise self._run_over(url)

    def _run_over(self, url: Url) -> RunDeadlineError:
        return RunDeadlineError(
            url,
            f"not finished: the run reached http.run_deadline "
            f"({self._config.run_deadline_seconds:g}s); trying again next run",
        )

    async def _send(
        self,
        method: str,
        url: Url,
        headers: dict[str, str],
        tally: Tally | None,
        read: Callable[[Response], Awaitable[T]],
        content: bytes | Path | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> T:
        self.stats.requests += 1
        if tally is not None:
            tally.requests += 1
        address = url.address
        if address.startswith("file:///"):  # httpx takes a URL without a host for a relative one
            address = "file://localhost/" + address[8:]
        final: httpx.URL | None  # where a redirect led; None: not redirected
        started = time.monotonic() if self._log_requests else 0.0
        upload: Any = content
        # A body in memory goes through httpx's client (where an s3:// transport is
        # mounted); a file on plain http(s) is streamed from disk by the transport.
        direct = self._direct and _DIRECT.match(address) and not isinstance(content, bytes)
        if isinstance(content, Path) and direct:  # body.BATCH bytes a thread hop
            headers = {**headers, "content-length": str(os.stat(content).st_size)}
            upload = await anyio.to_thread.run_sync(FileChunks, content)
        elif isinstance(content, Path):
            upload = await anyio.to_thread.run_sync(content.read_bytes)
        try:
            if direct:
                response, final = await self._send_direct(method, address, headers, upload)
            else:
                request = self._client.build_request(
                    method, address, headers=headers, content=upload
                )
                response = await self._client.send(request, stream=True)
                final = response.url
        except Exception as exc:
            if self._log_requests:
                log_request(method, url, None, 0, time.monotonic() - started, describe(exc))
            raise
        finally:
            if isinstance(upload, FileChunks):
                upload.close()
        try:
            https = address[:6].lower() == "https:"
            if self.verify and https and final is not None and final.scheme != "https":
                raise FetchError(
                    url,
                    f"redirected to {redact_url(str(final))} without TLS; refused "
                    "(set 'insecure: true' on the source to allow it)",
                )
            if method == "HEAD" or (
                response.status_code >= 400 and response.status_code not in allow
            ):
                await drain(method, response)
            if response.status_code not in allow:
                check_status(url, response)
            return await read(response)
        finally:
            await response.aclose()
            if self._log_requests:
                seconds = time.monotonic() - started  # bytes as received (compressed or not)
                log_request(method, url, response.status_code, bytes_received(response), seconds)

    async def _send_direct(
        self,
        method: str,
        address: str,
        headers: dict[str, str],
        body: bytes | BinaryIO | FileChunks | None = None,
    ) -> tuple[Response, httpx.URL | None]:
        """A plain http(s) GET or HEAD (no credentials in the URL, no proxy), sent
        straight to the transport: the client's layers (auth, cookies, mounts,
        event hooks, its redirect loop) cost twice what the transport does on a
        small request. A redirect is handed to the client, which follows it as
        it follows any (``follow_redirects``, its limit, its header rules)."""
        sent = self._defaults
        if headers:  # the caller's replace the client's of the same name, as httpx merges
            given = {name.lower() for name in headers}
            sent = [(k, v) for k, v in sent if k.lower() not in given] + list(headers.items())
        answer = await self._transport.send_plain(method, address, sent, self._timeouts, body)
        if not answer.has_redirect_location:
            return answer, None
        try:
            await drain(method, answer)
        finally:
            await answer.aclose()
        location = answer.headers["location"]
        try:
            target = httpx.URL(address).join(location)
        except httpx.InvalidURL as exc:  # as the client words it
            raise httpx.RemoteProtocolError(f"Invalid URL in location header: {exc}.") from None
        if origin(target) != origin(address):  # credentials stay with their origin
            # (a registry's token sent on to its CDN or S3 would leak, and S3 refuses it)
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        follow = self._client.build_request(method, target, headers=headers)
        response = await self._client.send(follow, stream=True)
        return response, response.url
