"""The ``-vv`` line of every HTTP request: one DEBUG line on ``mirrorsync.http``,
whoever sent the request (the fetches, the webhook deliveries)."""

from __future__ import annotations

import logging

from mirrorsync.logs import fields
from mirrorsync.redact import Url
from mirrorsync.units import human_duration, human_size

#: One DEBUG line per HTTP request, enabled by ``-vv`` (``logs.setup_logging``).
request_log = logging.getLogger("mirrorsync.http")


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
