"""A circuit breaker per host: once a host stops answering, stop asking it.

A request whose retries all ended in a connection failure (refused,
unreachable, no DNS answer, connect timeout) trips the breaker of its host
(scheme, name and port) for the rest of the run: that request and every later
one to that host, queued or retrying, fail with :class:`HostDownError`, the
later ones at once, instead of waiting out their own timeouts and retries. The host is logged as down once.
Slow answers, deadlines and HTTP errors do not trip it: they concern one URL,
and the host's other URLs may be fine.

Clients of one run share one :class:`Breakers` (through their shared
``Throttle``), so the index sync, the manifest crawl and ``verify`` all see it.
"""

from __future__ import annotations

import logging

from mirrorsync.errors import FetchError
from mirrorsync.logs import fields
from mirrorsync.redact import Url

log = logging.getLogger("mirrorsync.fetch")


class HostDownError(FetchError):
    """A request not sent: its host stopped answering earlier in this run."""

    def __init__(self, url: Url, host: str, reason: str, *, asked: bool = False) -> None:
        if asked:  # the request that found it down
            problem = f"{reason}; host {host} is down, not asked again this run"
        else:
            problem = f"not asked: host {host} is down ({reason})"
        super().__init__(url, problem)
        self.host = host
        self.reason = reason


class Breakers:
    """Which hosts are down for this run, and why."""

    def __init__(self) -> None:
        self._down: dict[str, str] = {}

    def check(self, host: str, url: Url) -> None:
        reason = self._down.get(host)
        if reason is not None:
            raise HostDownError(url, host, reason)

    def trip(self, host: str, url: Url, reason: str) -> HostDownError:
        """Mark ``host`` down (logged the first time); the error for ``url``'s request."""
        error = HostDownError(url, host, reason, asked=True)
        if host in self._down:
            return error
        self._down[host] = reason
        log.error(
            "host %s is down (%s); no more requests to it this run",
            host,
            reason,
            extra=fields(event="host_down", host=host, reason=reason),
        )
        return error

    @property
    def down(self) -> dict[str, str]:
        """Hosts found down, with the failure that showed it."""
        return dict(self._down)
