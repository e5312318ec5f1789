"""``format: email``: a rendered message sent over SMTP, retried within the run.

The webhook's ``url`` is ``smtp://[user@]host[:port]`` (port 25; STARTTLS when the
server offers it, so meant for a local or trusted relay) or ``smtps://...``
(port 465, TLS from the first byte, certificate verified). The password, if
any, is the webhook's token (``token_env`` / ``token_file``). Proxies do not
apply. A 4xx reply, a refused or broken connection and a timeout are tried
again (``http.retries``); a 5xx reply ends the attempt. Either way the outbox
schedules the batch as for any other webhook.
"""

from __future__ import annotations

import logging
import time
import urllib.parse

import aiosmtplib
import anyio

from mirrorsync.config import RetryConfig, WebhookConfig
from mirrorsync.delivery.formats import Request
from mirrorsync.delivery.signing import Credentials
from mirrorsync.units import Verbatim, human_duration, plural

log = logging.getLogger("mirrorsync.delivery")


class _Transient(Exception):
    """An attempt that may succeed if tried again."""

    def __init__(self, text: str, code: int | None = None) -> None:
        super().__init__(text)
        self.code = code


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    message = " ".join(str(exc.message).split())[:200]
    return f"SMTP {exc.code} {message}".rstrip()


async def _attempt(hook: WebhookConfig, credentials: Credentials, body: bytes) -> int:
    """Send once: the final reply's code, _Transient, or a permanent SMTPException."""
    url = urllib.parse.urlsplit(hook.url)
    implicit = url.scheme == "smtps"
    assert hook.to and hook.from_ and url.hostname, "checked by the configuration"
    try:
        with anyio.fail_after(hook.timeout):  # the whole conversation, not each reply
            await aiosmtplib.send(
                body,
                sender=hook.from_,
                recipients=hook.to,
                hostname=url.hostname,
                port=url.port or (465 if implicit else 25),
                username=urllib.parse.unquote(url.username) if url.username else None,
                password=credentials.token,
                timeout=hook.timeout,
                use_tls=implicit,
                start_tls=False if implicit else None,
            )
    except TimeoutError:
        raise _Transient(f"timed out after {hook.timeout:g}s") from None
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        text = f"every recipient refused ({', '.join(_reply(r) for r in exc.recipients[:3])})"
        if all(400 <= c < 500 for c in codes):
            raise _Transient(text, codes[0]) from None
        raise aiosmtplib.SMTPException(text) from None
    except aiosmtplib.SMTPResponseException as exc:
        if 400 <= exc.code < 500:
            raise _Transient(_reply(exc), exc.code) from None
        raise aiosmtplib.SMTPException(_reply(exc)) from None
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
        raise _Transient(f"connection failed: {' '.join(str(exc).split())[:200]}") from None
    except aiosmtplib.SMTPTimeoutError:
        raise _Transient(f"timed out after {hook.timeout:g}s") from None
    except OSError as exc:
        raise _Transient(f"connection failed: {exc.strerror or exc}") from None
    return 250


async def send_mail(
    hook: WebhookConfig, credentials: Credentials, request: Request, retries: RetryConfig
) -> tuple[int | None, int, str | None, float]:
    """(last SMTP code or None, attempts, problem or None when accepted, seconds)."""
    started = time.monotonic()
    attempts = max(1, retries.attempts)
    code: int | None = None
    for number in range(1, attempts + 1):
        try:
            code = await _attempt(hook, credentials, request.body)
        except _Transient as exc:
            code = exc.code
            if number == attempts:
                after = f" after {plural(number, 'attempt')}" if number > 1 else ""
                return code, number, f"{exc}{after}", time.monotonic() - started
            wait = min(retries.backoff_max, retries.backoff_initial * 2 ** (number - 1))
            log.warning(
                "webhook %s: retrying the mail in %s (attempt %d failed: %s)",
                Verbatim(hook.name),
                human_duration(wait),
                number,
                exc,
            )
            await anyio.sleep(wait)
        except aiosmtplib.SMTPException as exc:
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            return code, number, text, time.monotonic() - started
        else:
            return code, number, None, time.monotonic() - started
    raise AssertionError("unreachable")
