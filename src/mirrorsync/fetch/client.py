"""The HTTP client every part of mirrorsync shares."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import logging
import math
import os
import re
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import anyio
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from mirrorsync import __version__
from mirrorsync.config import HttpConfig
from mirrorsync.errors import FetchError, FormatError, IntegrityError, NotFoundError
from mirrorsync.fetch.answer import Response, bytes_received, read_declared
from mirrorsync.fetch.breaker import Breakers
from mirrorsync.fetch.deadline import Watchdog
from mirrorsync.fetch.files import FileTransport
from mirrorsync.fetch.offloop import Detached, detach
from mirrorsync.fetch.retry import (
    RetryableStatus,
    RetryWait,
    StopForLongRetryAfter,
    describe,
    is_retryable,
    is_retryable_status,
    log_retry,
    parse_retry_after,
    retry_after_too_long,
)
from mirrorsync.fetch.s3 import S3Transport
from mirrorsync.fetch.throttle import Throttle, origin
from mirrorsync.fetch.transport import AiohttpTransport, as_sent
from mirrorsync.fetch.validators import kept_validators
from mirrorsync.logs import fields
from mirrorsync.proxies import proxies_for
from mirrorsync.redact import Url, redact_url
from mirrorsync.text import bounded
from mirrorsync.units import header_count, human_duration, human_size, plural, size_problem

#: One DEBUG line per HTTP request, enabled by ``-vv`` (``logs.setup_logging``).
request_log = logging.getLogger("mirrorsync.http")

USER_AGENT = f"mirrorsync/{__version__}"
SMALL_DOCUMENT_CAP = 64 * 1024 * 1024  # catalogue, manifests, hash files
_STEP = 1 << 20  # most bytes decompressed at once
# Bytes hashed and written at once, in a worker thread. Each hand-over costs: with
# 1 MiB batches a 700 MiB download took 2.1 ns of CPU a byte, with 4 MiB 1.5, as
# much as hashing and writing on the event loop (1.4; README, "Performance").
_BATCH = 4 << 20
# A body of at least this many bytes (declared, not compressed, plain http) is read
# off the event loop: received, hashed and written by one worker thread with blocking
# reads into a reused buffer (``_Body.copy_to``), several at once on all cores. Its
# connection is not kept alive after (the loop's parser never saw the body): the next
# request connects again, one round trip, small beside 8 MiB and more.
_OFF_LOOP_MIN = 8 << 20
_RECV = 1 << 20  # bytes received, then hashed and written, at once off the loop
# Off the loop, the disk write of every this many bytes written is started at once:
# the fsync that follows a download then waits for its last few MiB, not all of it
# (8 downloads of 64 MiB ending together: 0.29 s of fsync at the end -> 0.06-0.10 s).
_WRITE_BACK = 8 << 20
_DRAIN_MAX = 64 * 1024  # error bodies up to this size are read, to keep the connection
_DRAIN_SECONDS = 1.0  # ... unless they take longer than this to arrive
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


def requests_logged() -> bool:
    """Whether ``log_request`` writes anything: asked once per client, not per request."""
    return request_log.isEnabledFor(logging.DEBUG)


def log_request(
    method: str,
    url: Url | str,
    status: int | None,
    size: int,
    seconds: float,
    problem: str | None = None,
) -> None:
    """One line for one HTTP request (``-vv``), whoever sent it (fetches, webhooks): the
    method, the URL's display form (never its address: no credentials; a webhook
    gives its origin and name, as its other lines do), the status, the body's bytes
    (received; a POST's: sent) and the time it took; or, for a request that got no
    answer, why."""
    shown = url.display if isinstance(url, Url) else url
    answer = f"HTTP {status}" if status is not None else f"no answer ({problem})"
    request_log.debug(
        "%s %s -> %s, %s, %s",  # no ":" after the URL: a masked query value would take it
        method,
        shown,
        answer,
        human_size(size),
        human_duration(seconds),
        extra=fields(
            event="request",
            method=method,
            url=shown,
            status=status,
            bytes=size,
            seconds=round(seconds, 4),
            error=problem,
        ),
    )


@dataclass
class Tally:
    """Requests and bytes, counted for one stack or for the whole run."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.bytes += other.bytes
        self.retries += other.retries


@dataclass(frozen=True, slots=True)
class Fetched:
    url: Url
    content: bytes
    # The validators that may be sent back next time (fetch.validators.kept_validators)
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True, slots=True)
class NotModified:
    url: Url


@dataclass(frozen=True, slots=True)
class Downloaded:
    url: Url
    path: Path
    length: int
    sha256: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Answered:
    """The answer to :meth:`HttpClient.send`: status, a few headers, the body."""

    url: Url
    status: int
    headers: dict[str, str]
    content: bytes


class DeadlineError(FetchError):
    """A request ran past ``http.deadline``, or the run past ``http.run_deadline``."""


class RunDeadlineError(DeadlineError):
    """The run reached ``http.run_deadline``: no request is sent or finished after it."""


class HttpClient:
    """One ``httpx.AsyncClient`` behind a global concurrency cap, per-host limits and retries.

    TLS certificates are verified unless ``verify=False``. Clients that pass
    the same ``throttle`` share its limits, its per-host circuit breakers and
    its run deadline (e.g. one verifying and one not).

    Every body is read by :class:`_Body`, the one place where lengths and
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
            # Only encodings _Body decodes itself, a bounded step at a time.
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
    ) -> _Body:
        def count(n: int) -> None:
            self.stats.bytes += n
            if tally is not None:
                tally.bytes += n

        body = _Body(url, response, max_bytes, limit_name, expected_length, count)
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
        return await self._retrying(url, attempt, tally)

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
        slot = _NO_SLOT if url.address.startswith("file:") else self._throttle.slot(host)
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
        if isinstance(content, Path) and direct:  # _BATCH bytes a thread hop
            headers = {**headers, "content-length": str(os.stat(content).st_size)}
            upload = await anyio.to_thread.run_sync(_FileChunks, content)
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
            if isinstance(upload, _FileChunks):
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
                await _drain(method, response)
            if response.status_code not in allow:
                _check_status(url, response)
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
        body: bytes | BinaryIO | _FileChunks | None = None,
    ) -> tuple[Response, httpx.URL | None]:
        """A plain http(s) GET or HEAD (no credentials in the URL, no proxy), sent
        straight to the transport: the client's layers (auth, cookies, mounts,
        event hooks, its redirect loop) cost twice what the transport does on a
        small request. A redirect is handed to the client, which follows it as
        it follows any (``follow_redirects``, its limit, its header rules)."""
        sent = [*self._defaults, *headers.items()] if headers else self._defaults
        answer = await self._transport.send_plain(method, address, sent, self._timeouts, body)
        if not answer.has_redirect_location:
            return answer, None
        try:
            await _drain(method, answer)
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

    async def _retrying(
        self, url: Url, attempt: Callable[[], Awaitable[T]], tally: Tally | None
    ) -> T:
        # Most requests succeed at once: only a failed first attempt sets up the
        # retry machinery, which replays that failure as its own first attempt
        # (same waits, logs and counts; 8% of a crawl's CPU saved).
        try:
            return await attempt()
        except Exception as exc:  # classified by the retry policy below
            first: Exception | None = exc

        async def replay_then_attempt() -> T:
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await attempt()

        return await self._retry_policy(url, replay_then_attempt, tally)

    async def _retry_policy(
        self, url: Url, attempt: Callable[[], Awaitable[T]], tally: Tally | None
    ) -> T:
        policy = self._config.retries

        def count_retry(state: RetryCallState) -> None:
            self.stats.retries += 1
            if tally is not None:
                tally.retries += 1
            log_retry(url, state)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | StopForLongRetryAfter(policy.backoff_max),
            wait=RetryWait(policy),
            retry=retry_if_exception(is_retryable),
            before_sleep=count_retry,
            sleep=anyio.sleep,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except RetryableStatus as exc:
            if retry_after_too_long(exc, policy.backoff_max):
                problem = (
                    f"{describe(exc)}: the server asks to retry after {exc.retry_after:.0f}s, "
                    f"longer than http.retries.backoff_max ({policy.backoff_max:g}s); "
                    "trying again next run"
                )
            else:
                problem = f"{describe(exc)} after {plural(policy.attempts, 'attempt')}"
            raise FetchError(url, problem, exc.status) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise FetchError(url, f"invalid URL: {exc}") from None
        except httpx.TransportError as exc:
            if not is_retryable(exc):
                raise FetchError(url, describe(exc)) from None
            problem = f"{describe(exc)} after {plural(policy.attempts, 'attempt')}"
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                raise self._throttle.breakers.trip(origin(url.address), url, problem) from None
            raise FetchError(url, problem) from None


class _FileChunks:
    """A file's bytes for an upload, read in a worker thread ``_BATCH`` bytes at a time.

    Not a generator: aiohttp iterates the body in a task of its own, which may
    still be inside a read when the request ends (an error answer, a deadline);
    ``close`` then only closes the file, and that read ends the iteration."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115  (closed by close(), after the request)

    def __aiter__(self) -> _FileChunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await anyio.to_thread.run_sync(self._read)
        if not chunk:
            raise StopAsyncIteration
        return chunk

    def _read(self) -> bytes:
        try:
            return self._file.read(_BATCH)
        except ValueError:  # closed: the request is over
            return b""

    def close(self) -> None:
        self._file.close()


class _NoSlot(contextlib.AbstractAsyncContextManager[None]):
    async def __aexit__(self, *exc_info: object) -> None:
        return None


_NO_SLOT = _NoSlot()


class _Body:
    """A response body as stored (decoded from any Content-Encoding), read in
    bounded steps: the one length, limit and digest check of every download.

    Never reads or decompresses more than the promised ``expected_length`` + 1
    bytes (the one more shows the body is too long), nor more than
    ``max_bytes`` + 1; a declared Content-Length that breaks either is refused
    before the body is read. ``count`` is told of every byte passed on.
    """

    def __init__(
        self,
        url: Url,
        response: Response,
        max_bytes: int | None,
        limit_name: str | None,
        expected_length: int | None,
        count: Callable[[int], None],
    ) -> None:
        self.url = url
        self.length = 0
        self._response = response
        self._max = max_bytes
        self._limit_name = limit_name
        self._expected = expected_length
        self._count = count
        self._digest: Any = None
        self.promised_by = "the manifest"
        self._raw_deflate = False
        self.read_timeout: float | None = None  # of each read off the loop (``http.timeout``)
        self._decoder = _decoder(url, response.headers.get("content-encoding", ""))
        declared = response.headers.get("content-length", "")
        self._declared: int | None = None  # the body's length, when the headers tell it
        # identity: the declared length is it (ASCII digits only: int("²") fails)
        if declared.isascii() and declared.isdigit() and self._decoder is None:
            size = self._declared = int(declared)
            if max_bytes is not None and size > max_bytes:
                raise _too_large(url, size, max_bytes, limit_name)
            if expected_length is not None and size != expected_length:
                raise IntegrityError(
                    url,
                    f"got {size} bytes, the manifest says {expected_length} "
                    "(by its Content-Length; not read)",
                )

    def hash_with(self, algorithm: str) -> None:
        self._digest = hashlib.new(algorithm)

    async def copy_to(self, out: BinaryIO | None) -> None:
        """Read the whole body into ``out`` (None: nowhere), hashing it on the way.

        The event loop only receives: the bytes are hashed and written in a worker
        thread, ``_BATCH`` bytes at a time (hashlib and file writes release the
        GIL), while the socket keeps filling. Bounds are checked as each chunk
        arrives (``_take``), before it is hashed or written."""
        if self._decoder is None and self._declared is not None and self._declared >= _OFF_LOOP_MIN:
            timeout = self.read_timeout if self.read_timeout is not None else 3600.0
            detached = detach(self._response, self._declared, timeout)
            if detached is not None:
                await self._copy_off_loop(detached, out)
                return
        digest, self._digest = self._digest, None  # taken here, in order, off the loop

        def sink(batch: list[bytes]) -> None:
            if digest is not None:
                for chunk in batch:
                    digest.update(chunk)
            if out is not None:
                out.writelines(batch)

        batch: list[bytes] = []
        size = 0
        try:
            async for chunk in self:
                batch.append(chunk)
                size += len(chunk)
                if size >= _BATCH:
                    await anyio.to_thread.run_sync(sink, batch)
                    batch, size = [], 0
            if batch:
                await anyio.to_thread.run_sync(sink, batch)
        finally:
            self._digest = digest

    async def _copy_off_loop(self, body: Detached, out: BinaryIO | None) -> None:
        """``copy_to`` for a body of declared length within the bounds (checked by
        ``__init__``; never read past it): one worker thread receives it into a reused
        buffer, hashes and writes it (``recv_into``, hashlib and writes release the
        GIL), so downloads go on side by side on every core while the loop serves the
        rest. Bytes are counted as they arrive (every ``_WRITE_BACK`` bytes); a
        cancelled download (a deadline) stops the thread's read and waits for it
        before going on."""
        loop = asyncio.get_running_loop()
        digest = self._digest
        count = self._count
        finished: asyncio.Future[None] = loop.create_future()
        # "new" until the thread starts ("running"); "given up" once the download is
        # (a cancellation may come while waiting for a thread: then none ever runs).
        state = ["new"]
        lock = threading.Lock()

        def pull() -> int:
            with lock:
                if state[0] == "given up":
                    return 0
                state[0] = "running"
            try:
                length = len(body.head)
                if body.head:
                    _sink(body.head, digest, out)
                view = memoryview(bytearray(min(_RECV, body.left) or 1))
                flushed = 0  # bytes whose write to disk has been started
                counted = length  # bytes counted (one wake-up of the loop per _WRITE_BACK)
                try:
                    while n := body.readinto(view):
                        length += n  # received: counted, whatever happens next
                        _sink(view[:n], digest, out)
                        if length - flushed >= _WRITE_BACK:
                            loop.call_soon_threadsafe(count, length - counted)
                            counted = length
                            if out is not None:
                                _write_back(out, flushed, length - flushed)
                            flushed = length
                finally:
                    if length > counted:
                        loop.call_soon_threadsafe(count, length - counted)
                return length
            finally:
                loop.call_soon_threadsafe(_settle, finished)

        if body.head:
            count(len(body.head))
        try:
            self.length = await anyio.to_thread.run_sync(pull, abandon_on_cancel=True)
        except BaseException:
            with lock:
                running, state[0] = state[0] == "running", "given up"
            if running:  # stop its read, and wait: it holds the file and the socket
                body.stop()
                with anyio.CancelScope(shield=True):
                    await finished
            raise
        finally:
            body.close()

    async def read(self) -> bytes:
        """The whole body into memory, within the same bounds as iterating it.

        A body of declared length (already checked against the bounds) is read
        in one go where the transport can; any other is gathered chunk by chunk."""
        if self._declared is not None:
            whole = await read_declared(self._response, self._declared)
            if whole is not None:
                return self._take(whole)
        content = bytearray()
        async for chunk in self:
            content += chunk
        return bytes(content)

    def _budget(self) -> int:
        """How many more bytes may be taken: up to one past the tighter bound (0: no bound)."""
        expected, most = self._expected, self._max
        if expected is None:
            return 0 if most is None else most + 1 - self.length
        if most is not None and most < expected:
            return most + 1 - self.length
        return expected + 1 - self.length

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for raw in self._response.aiter_raw():
            if self._decoder is None:
                if raw:
                    yield self._take(raw)
                continue
            for piece in self._decompress(raw):
                yield self._take(piece)
        if self._decoder is not None:
            rest = self._decoder.flush()
            if not self._decoder.eof:
                raise FetchError(self.url, "compressed body ends early (Content-Encoding)")
            if rest:
                yield self._take(rest)

    def _decompress(self, raw: bytes) -> Iterator[bytes]:
        """``raw`` decoded, at most ``_STEP`` bytes (or the budget) per piece: each
        piece is taken (and counted against the bounds) before the next is made."""
        data = raw
        while data:
            decoder = self._decoder
            assert decoder is not None
            if decoder.eof:  # trailing bytes after the compressed stream: ignored
                return
            budget = self._budget()
            try:
                out: bytes = decoder.decompress(data, min(budget, _STEP) if budget else _STEP)
            except zlib.error as exc:
                if self._raw_deflate_fallback():  # "deflate" sent without its zlib header
                    continue
                raise FetchError(
                    self.url, f"body does not decode as its Content-Encoding says ({exc})"
                ) from None
            tail: bytes = decoder.unconsumed_tail
            if not out and len(tail) >= len(data):  # no progress: cannot happen, never spin
                return
            data = tail
            if out:
                yield out

    def _raw_deflate_fallback(self) -> bool:
        """Some servers send raw deflate as ``deflate``; switch, if nothing was decoded yet."""
        encoding = self._response.headers.get("content-encoding", "").strip().lower()
        if encoding != "deflate" or self.length or self._raw_deflate:
            return False
        self._raw_deflate = True
        self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
        return True

    def _take(self, chunk: bytes) -> bytes:
        budget = self._budget()
        if budget and len(chunk) >= budget:  # past a bound: refuse, keeping none of it
            over = self.length + len(chunk)
            if self._expected is not None and over > self._expected:
                raise IntegrityError(
                    self.url,
                    f"more than the {self._expected} bytes the manifest promises; refused",
                )
            assert self._max is not None
            raise _too_large(self.url, None, self._max, self._limit_name)
        self.length += len(chunk)
        self._count(len(chunk))
        if self._digest is not None:
            self._digest.update(chunk)
        return chunk

    def check(self, expected_digest: str | None) -> str:
        """The body's hex digest ("" if not hashed), once its length and digest are checked."""
        if self._expected is not None and self.length != self._expected:
            raise IntegrityError(
                self.url, f"got {self.length} bytes, the manifest says {self._expected}"
            )
        digest: str = self._digest.hexdigest() if self._digest is not None else ""
        if expected_digest is not None and digest != expected_digest:
            name = self._digest.name if self._digest is not None else "digest"
            raise IntegrityError(
                self.url, f"{name} is {digest}, but {self.promised_by} says {expected_digest}"
            )
        return digest


def _sink(chunk: bytes | memoryview, digest: Any, out: BinaryIO | None) -> None:
    if digest is not None:
        digest.update(chunk)
    if out is not None:
        out.write(chunk)


def _write_back(out: BinaryIO, offset: int, length: int) -> None:
    """Start writing ``out``'s bytes [offset, offset + length) to disk, not waiting
    for it: Linux's POSIX_FADV_DONTNEED starts the write-back of a range's dirty
    pages (and drops only pages already clean, none of these). Durability is still
    the caller's fsync; where the hint is not supported, nothing happens."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        out.flush()
        advise(out.fileno(), offset, length, os.POSIX_FADV_DONTNEED)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _decoder(url: Url, encoding: str) -> Any:
    """A zlib decompressor for the response's Content-Encoding; None for identity."""
    if not encoding:  # most answers: none given
        return None
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if codings in (["gzip"], ["x-gzip"]):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if codings == ["deflate"]:
        return zlib.decompressobj()
    raise FetchError(url, f"unsupported Content-Encoding {encoding[:40]!r}; refused")


async def _drain(method: str, response: Response) -> None:
    """Read a small body nobody needs (HEAD, error pages), so that the connection
    can serve the next request: closing a response with its body unread closes
    the connection, and a crawl with many 404s would reconnect for each.

    Raw bytes, never decompressed; a body that fails or dawdles is given up on
    (its connection is then closed): the status is what the caller reports.
    """
    declared = response.headers.get("content-length", "")
    if method == "HEAD" or (
        declared.isascii() and declared.isdigit() and int(declared) <= _DRAIN_MAX
    ):
        with anyio.move_on_after(_DRAIN_SECONDS), contextlib.suppress(httpx.HTTPError):
            async for _ in response.aiter_raw():
                pass


def _too_large(url: Url, size: int | None, max_bytes: int, limit_name: str | None) -> FetchError:
    what = f"{size} bytes, over" if size is not None else "body over"
    setting = f" ({limit_name})" if limit_name else ""
    return FetchError(url, f"{what} the {max_bytes}-byte limit{setting}; refused")


#: A server's reason phrase in an error line (a status line may run to 8 KB).
_REASON_CAP = 120


def _check_status(url: Url, response: Response) -> None:
    status = response.status_code
    if status < 400 or status == 304:
        return
    reason = bounded(response.reason_phrase, _REASON_CAP)
    if is_retryable_status(status):
        raise RetryableStatus(
            url,
            status,
            reason,
            parse_retry_after(response.headers.get("retry-after")),
        )
    if status in (404, 410):
        raise NotFoundError(url, f"HTTP {status} {reason}".rstrip(), status)
    raise FetchError(url, f"HTTP {status} {reason}".rstrip(), status)
