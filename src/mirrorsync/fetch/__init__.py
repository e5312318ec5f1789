"""HTTP access to build caches: one shared client, throttled and retried.

The public surface is :class:`HttpClient` and its result types; throttling and
the retry policy live in private modules behind it.
"""

from mirrorsync.fetch.client import Downloaded, Fetched, HttpClient, NotModified, Tally
from mirrorsync.fetch.throttle import Throttle, origin

__all__ = ["Downloaded", "Fetched", "HttpClient", "NotModified", "Tally", "Throttle", "origin"]
