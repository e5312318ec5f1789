"""HTTP access to build caches: one shared client, throttled and retried.

The public surface is :class:`HttpClient` and its result types; throttling and
the retry policy live in private modules behind it.
"""

from mirrorsync.fetch.breaker import Breakers, HostDownError
from mirrorsync.fetch.client import HttpClient
from mirrorsync.fetch.deadline import DeadlineError, RunDeadlineError
from mirrorsync.fetch.results import Answered, Downloaded, Fetched, NotModified, Tally
from mirrorsync.fetch.throttle import Throttle, origin
from mirrorsync.redact import Url

__all__ = [
    "Answered",
    "Breakers",
    "DeadlineError",
    "Downloaded",
    "Fetched",
    "HostDownError",
    "HttpClient",
    "NotModified",
    "RunDeadlineError",
    "Tally",
    "Throttle",
    "Url",
    "origin",
]
