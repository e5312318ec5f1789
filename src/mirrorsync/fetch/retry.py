"""The retry policy: which failures (errors, and answers: :func:`check_status`) are
worth another try, how long to wait, and the retries run under it (:func:`retried`)."""

from __future__ import annotations

import email.utils
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import TYPE_CHECKING, TypeVar

import anyio
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from mirrorsync.config import RetryConfig
from mirrorsync.errors import FetchError, NotFoundError
from mirrorsync.fetch.throttle import origin
from mirrorsync.logs import fields
from mirrorsync.redact import Url
from mirrorsync.text import bounded
from mirrorsync.units import plural

if TYPE_CHECKING:
    from mirrorsync.fetch.answer import Response
    from mirrorsync.fetch.breaker import Breakers
    from mirrorsync.fetch.results import Tally

log = logging.getLogger("mirrorsync.fetch")

T = TypeVar("T")


class RetryableStatus(Exception):
    """A 5xx or 429 answer: retried, then reported as a FetchError."""

    def __init__(self, url: Url | str, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.url = url
        self.status = status
        self.retry_after = retry_after


def is_retryable(exc: BaseException) -> bool:
    # Connection refused/reset, timeouts, truncated bodies and protocol errors
    # are all TransportErrors; 5xx and 429 arrive as RetryableStatus. A
    # certificate that does not verify will not verify on a second try either.
    if isinstance(exc, httpx.UnsupportedProtocol) or tls_verify_failure(exc) is not None:
        return False
    return isinstance(exc, RetryableStatus | httpx.TransportError)


def tls_verify_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc``, if that is what it is."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in current.args if isinstance(a, BaseException)]
    return None


class StopForLongRetryAfter(stop_base):
    """Give up when the server asks for a longer pause than ``backoff_max``.

    Coming back sooner than asked would ignore the server; sleeping longer
    would stall the run. The stack fails for this run and is tried next run.
    """

    def __init__(self, backoff_max: float) -> None:
        self._max = backoff_max

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        return retry_after_too_long(exc, self._max)


def retry_after_too_long(exc: BaseException | None, backoff_max: float) -> bool:
    return (
        isinstance(exc, RetryableStatus)
        and exc.retry_after is not None
        and exc.retry_after > backoff_max
    )


def is_retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


#: The longest ``Retry-After`` taken from a server (1 day): a longer one is read as this.
RETRY_AFTER_CAP = 86400.0
_DELTA_SECONDS = re.compile(r"[0-9]+\Z")  # ASCII digits only: str.isdigit() takes "²"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, as RFC 9110 (10.2.3) has it:
    delay-seconds (ASCII digits) or an HTTP date; anything else is ignored (None).
    Never negative, never more than :data:`RETRY_AFTER_CAP`. Shared by the fetches
    and the webhook deliveries: every byte of it comes from another server."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.match(value):
        # No int(): a 5,000-digit value would hit Python's integer-string limit.
        return RETRY_AFTER_CAP if len(value) > 6 else min(float(value), RETRY_AFTER_CAP)
    if not value.isascii() or len(value) > 64:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": UTC, as RFC 5322 says
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CAP)


#: A server's reason phrase in an error line (a status line may run to 8 KB).
_REASON_CAP = 120


def check_status(url: Url, response: Response) -> None:
    """An answer of 400 and over (but 304) as its error: RetryableStatus for a 5xx or
    429 (its Retry-After read), NotFoundError for a 404 or 410, else FetchError."""
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


class RetryWait:
    """Exponential backoff with jitter, but never less than the server's Retry-After.

    Never more than ``backoff_max`` either: a Retry-After longer than that stops
    the retries instead (:class:`StopForLongRetryAfter`), since an unattended
    run should fail this stack and try again next time rather than sleep for hours.
    """

    def __init__(self, policy: RetryConfig) -> None:
        self._max = policy.backoff_max
        # initial * 2^n, capped, plus up to ``initial`` of random jitter.
        self._backoff = wait_exponential(
            multiplier=policy.backoff_initial, max=policy.backoff_max
        ) + wait_random(0, policy.backoff_initial)

    def __call__(self, state: RetryCallState) -> float:
        delay: float = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return min(delay, self._max)


def describe(exc: BaseException) -> str:
    """One short phrase for a failed attempt, for logs and error lines."""
    if isinstance(exc, RetryableStatus):
        return str(exc)
    failure = tls_verify_failure(exc)
    if failure is not None:
        reason = failure.verify_message or failure.reason or "certificate verify failed"
        return (
            f"TLS certificate verification failed ({reason}); set 'insecure: true' "
            "on the source only if you trust this server"
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {exc}" if str(exc) else "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection broken: {exc}" if str(exc) else "connection broken"
    text = str(exc) or _cause_text(exc)
    if isinstance(exc, httpx.ReadError | httpx.WriteError) and text:
        return f"connection broken: {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cause_text(exc: BaseException) -> str:
    """The first non-empty message down the chain (httpx often wraps an OSError silently)."""
    current = exc.__cause__ or exc.__context__
    for _ in range(8):
        if current is None:
            break
        text = str(current)
        if text:
            return text
        current = current.__cause__ or current.__context__
    return ""


def log_retry(url: Url, state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    reason = describe(exc) if exc else "?"
    log.warning(
        "retrying %s in %.1fs (attempt %d failed: %s)",
        url,
        wait,
        state.attempt_number,
        reason,
        extra=fields(
            event="retry",
            url=url.display,
            attempt=state.attempt_number,
            wait=round(wait, 3),
            reason=reason,
        ),
    )


async def retried(
    url: Url,
    attempt: Callable[[], Awaitable[T]],
    policy: RetryConfig,
    stats: Tally,
    tally: Tally | None,
    breakers: Breakers,
) -> T:
    """``attempt``, retried per ``policy`` (``http.retries``) when it fails."""
    # Most requests succeed at once: only a failed first attempt sets up the
    # retry machinery, which replays that failure as its own first attempt
    # (same waits, logs and counts; 8% of a crawl's CPU saved).
    try:
        return await attempt()
    except (RetryableStatus, httpx.TransportError, httpx.InvalidURL) as exc:
        first: Exception | None = exc  # retried, or worded as a FetchError, below
    # Anything else (a 404's NotFoundError, a FetchError, a deadline) passes as it is,
    # as _with_retries would pass it, without building the machinery for it.

    async def replay_then_attempt() -> T:
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return await attempt()

    return await _with_retries(url, replay_then_attempt, policy, stats, tally, breakers)


async def _with_retries(
    url: Url,
    attempt: Callable[[], Awaitable[T]],
    policy: RetryConfig,
    stats: Tally,
    tally: Tally | None,
    breakers: Breakers,
) -> T:
    """``attempt`` until it succeeds or the policy gives up: each retry counted in
    ``stats`` and ``tally`` and logged; the last failure as a FetchError (a host
    that could not be reached trips its breaker)."""

    def count_retry(state: RetryCallState) -> None:
        stats.retries += 1
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
            raise breakers.trip(origin(url.address), url, problem) from None
        raise FetchError(url, problem) from None
