"""The retry policy: which failures are worth another try, and how long to wait."""

from __future__ import annotations

import email.utils
import logging
import time

import httpx
from tenacity import RetryCallState, wait_exponential, wait_random

from mirrorsync.config import RetryConfig
from mirrorsync.logs import fields

log = logging.getLogger("mirrorsync.fetch")


class RetryableStatus(Exception):
    """A 5xx or 429 answer: retried, then reported as a FetchError."""

    def __init__(self, url: str, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.url = url
        self.status = status
        self.retry_after = retry_after


def is_retryable(exc: BaseException) -> bool:
    # Connection refused/reset, timeouts, truncated bodies and protocol errors
    # are all TransportErrors; 5xx and 429 arrive as RetryableStatus.
    return isinstance(exc, RetryableStatus | httpx.TransportError)


def is_retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RetryWait:
    """Exponential backoff with jitter, but never less than the server's Retry-After.

    A Retry-After longer than ``backoff_max`` is capped there: an unattended run
    should fail this stack and try again next time rather than sleep for hours.
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
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {exc}" if str(exc) else "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection broken: {exc}" if str(exc) else "connection broken"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def log_retry(url: str, state: RetryCallState) -> None:
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
            event="retry", url=url, attempt=state.attempt_number, wait=round(wait, 3), reason=reason
        ),
    )
