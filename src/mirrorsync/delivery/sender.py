"""One signed POST to a webhook, retried within the run on 5xx, 429 and network errors."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import anyio
import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from mirrorsync import __version__
from mirrorsync.config import RetryConfig, WebhookConfig
from mirrorsync.delivery.formats import Request
from mirrorsync.delivery.signing import Credentials, headers
from mirrorsync.fetch.request_log import log_request, requests_logged
from mirrorsync.fetch.retry import (
    RetryableStatus,
    RetryWait,
    describe,
    is_retryable,
    is_retryable_status,
    parse_retry_after,
)
from mirrorsync.proxies import proxies_for
from mirrorsync.redact import MASK, Url
from mirrorsync.units import Verbatim, human_duration, plural

log = logging.getLogger("mirrorsync.delivery")

USER_AGENT = f"mirrorsync/{__version__}"


def origin(url: str) -> str:
    """Scheme, host and port only: a webhook URL's path often carries a token (Slack,
    Discord, Teams), which the masking rule cannot recognise. Lines name the webhook."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid URL>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


#: Formats whose URL path is itself the credential (Slack's and Discord's webhook
#: tokens, a Teams workflow, an ntfy topic that anyone knowing it may read).
_PATH_IS_SECRET = frozenset({"slack", "discord", "teams", "ntfy"})


def shown_url(hook: WebhookConfig) -> str:
    """A webhook's URL as listed and stored: credentials masked, and for a chat
    format the path too, with a digest of the whole URL so a change still shows."""
    if hook.format not in _PATH_IS_SECRET:
        return Url(hook.url).display
    digest = hashlib.sha256(hook.url.encode("utf-8")).hexdigest()[:12]
    return f"{origin(hook.url)}/{MASK} (sha256 {digest})"


@dataclass(frozen=True, slots=True)
class Answer:
    """How a delivery attempt ended (after any in-run retries)."""

    status: int | None  # the last HTTP status, None if no answer came
    requests: int
    problem: str | None = None  # None when acknowledged (2xx)
    seconds: float = 0.0

    @property
    def acknowledged(self) -> bool:
        return self.problem is None

    @property
    def gone(self) -> bool:
        return self.status == 410


class Sender:
    """Signed POSTs over an ``httpx.AsyncClient`` per proxy (most often one, direct);
    redirects are not followed. The proxy for each webhook is chosen as for every other
    request (``mirrorsync/proxies.py``: ``http.proxy``, else the environment, ``NO_PROXY``)."""

    def __init__(self, retries: RetryConfig, proxy: str | None = None) -> None:
        self._retries = retries
        self._proxies = proxies_for(proxy)
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self._log_requests = requests_logged()  # -vv: one line per request, as for the fetches

    def _client_for(self, url: str) -> httpx.AsyncClient:
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        proxy = self._proxies.for_url(parsed.scheme, f"{parsed.host}:{port}")
        client = self._clients.get(proxy)
        if client is None:  # trust_env off: the rule above decides, not httpx's own reading
            client = httpx.AsyncClient(
                headers={"user-agent": USER_AGENT},
                follow_redirects=False,
                proxy=proxy,
                trust_env=False,
            )
            self._clients[proxy] = client
        return client

    async def __aenter__(self) -> Sender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def post(
        self,
        hook: WebhookConfig,
        credentials: Credentials,
        message_id: str,
        request: Request,
        *,
        retry: bool = True,
    ) -> Answer:
        """Send ``request`` (a POST, or Matrix's PUT); 2xx acknowledges, 410 and other
        4xx/3xx end it, the rest is retried. ``format: email`` goes over SMTP instead."""
        if hook.format == "email":
            from mirrorsync.delivery.mail import send_mail  # only where mail is configured

            once = RetryConfig(attempts=1)
            mailed = await send_mail(hook, credentials, request, self._retries if retry else once)
            return Answer(*mailed)
        requests = 0
        started = time.monotonic()
        body = request.body
        url = request.url or hook.url

        async def attempt() -> int:
            nonlocal requests
            requests += 1
            signed = headers(credentials, message_id, int(time.time()), body, request.content_type)
            signed.update(request.headers)
            # ``timeout`` bounds the whole request, not only each read: a receiver
            # trickling its answer a byte at a time cannot hold the run.
            with anyio.move_on_after(hook.timeout):
                async with self._client_for(url).stream(
                    request.method, url, content=body, headers=signed, timeout=hook.timeout
                ) as response:
                    status = response.status_code
                    if is_retryable_status(status):
                        raise RetryableStatus(
                            url,
                            status,
                            response.reason_phrase,
                            parse_retry_after(response.headers.get("retry-after")),
                        )
                    return status
            raise httpx.ReadTimeout(f"no complete answer within {hook.timeout:g}s")

        async def logged_attempt() -> int:
            """``attempt``, and at ``-vv`` its line (a POST's size is the body it sent)."""
            if not self._log_requests:
                return await attempt()
            sent, shown = time.monotonic(), f"{origin(url)} (webhook {hook.name})"
            try:
                status = await attempt()
            except RetryableStatus as exc:
                log_request(request.method, shown, exc.status, len(body), time.monotonic() - sent)
                raise
            except Exception as exc:
                log_request(
                    request.method, shown, None, len(body), time.monotonic() - sent, describe(exc)
                )
                raise
            log_request(request.method, shown, status, len(body), time.monotonic() - sent)
            return status

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "webhook %s: retrying %s in %s (attempt %d failed: %s)",
                Verbatim(hook.name),
                origin(hook.url),
                human_duration(wait),
                state.attempt_number,
                describe(exc) if exc else "?",
            )

        attempts = self._retries.attempts if retry else 1
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=RetryWait(self._retries),
            retry=retry_if_exception(is_retryable),
            before_sleep=before_sleep,
            sleep=anyio.sleep,
            reraise=True,
        )
        try:
            status: int = await retrying(logged_attempt)
        except RetryableStatus as exc:
            after = f" after {plural(requests, 'attempt')}" if requests > 1 else ""
            return Answer(exc.status, requests, f"{describe(exc)}{after}", _since(started))
        except httpx.TransportError as exc:
            after = f" after {plural(requests, 'attempt')}" if requests > 1 else ""
            return Answer(None, requests, f"{describe(exc)}{after}", _since(started))
        except httpx.HTTPError as exc:  # an invalid URL and the like: no retry helps
            return Answer(None, requests, describe(exc), _since(started))
        if 200 <= status < 300:
            return Answer(status, requests, None, _since(started))
        phrase = httpx.codes.get_reason_phrase(status)
        return Answer(status, requests, f"HTTP {status} {phrase}".rstrip(), _since(started))


def _since(started: float) -> float:
    return time.monotonic() - started
