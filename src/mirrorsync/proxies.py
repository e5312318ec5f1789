"""Which forward proxy a request goes through: ``http.proxy``, else the environment.

``http.proxy: http://proxy.example:3128`` sends every http and https request
through that proxy (https through a ``CONNECT`` tunnel); ``http.proxy: none``
sends none through any, whatever the environment says. Without it, the
environment decides as curl and httpx read it: ``HTTP_PROXY`` for http URLs,
``HTTPS_PROXY`` for https, ``ALL_PROXY`` for either when those are unset (each
also in lower case, which wins). ``NO_PROXY`` (a comma-separated list of host
names, domain suffixes or ``*``) exempts hosts in every case. Only ``http://``
proxies are supported (aiohttp's); a proxy may carry ``user:password@``, sent
as ``Proxy-Authorization``. ``file://`` is never proxied.
"""

from __future__ import annotations

import urllib.parse
import urllib.request

from mirrorsync.errors import UsageError
from mirrorsync.redact import redact_url

#: ``http.proxy`` value that turns proxies off, environment included.
NO_PROXY_SETTING = "none"


class ProxyError(ValueError):
    """A proxy setting mirrorsync cannot use (one line, credentials masked)."""


def check_proxy_url(value: str) -> str:
    """``value`` as a proxy URL (``host:port`` taken as ``http://host:port``); ProxyError if
    it is not an ``http://`` URL with a host."""
    url = value.strip()
    if "://" not in url:
        url = f"http://{url}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "http":
        raise ProxyError(
            f"proxy {redact_url(value)!r}: only http:// proxies are supported "
            "(https URLs go through them in a CONNECT tunnel)"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ProxyError(f"proxy {redact_url(value)!r}: the port is not a number") from None
    if not parts.hostname:
        raise ProxyError(f"proxy {redact_url(value)!r}: no host")
    return url


class Proxies:
    """The proxy for each origin, decided once per origin (a crawl asks ~1,000 times a second)."""

    def __init__(self, configured: str | None) -> None:
        found = urllib.request.getproxies_environment()
        self._no_proxy = {"no": found["no"]} if "no" in found else {}
        self._by_scheme: dict[str, str] = {}
        if configured is not None and configured.strip().lower() == NO_PROXY_SETTING:
            self._no_proxy = {}
        elif configured is not None:
            proxy = check_proxy_url(configured)
            self._by_scheme = {"http": proxy, "https": proxy}
        else:
            for scheme in ("http", "https"):
                value = found.get(scheme) or found.get("all")
                if value:
                    self._by_scheme[scheme] = check_proxy_url(value)
        self._cache: dict[tuple[str, str], str | None] = {}

    @property
    def any(self) -> bool:
        """Whether any request may go through a proxy."""
        return bool(self._by_scheme)

    def for_url(self, scheme: str, host_port: str) -> str | None:
        """The proxy URL for a request to ``scheme://host_port``, or None: straight there."""
        if not self._by_scheme:
            return None
        key = (scheme, host_port)
        try:
            return self._cache[key]
        except KeyError:
            pass
        proxy = self._by_scheme.get(scheme)
        if proxy is not None and self._no_proxy and _bypassed(host_port, self._no_proxy):
            proxy = None
        self._cache[key] = proxy
        return proxy


def _bypassed(host_port: str, no_proxy: dict[str, str]) -> bool:
    """Whether ``NO_PROXY`` exempts ``host:port`` (as curl reads it: ``*``, host names and
    domain suffixes, a leading dot optional, each with or without ``:port``)."""
    host_port = host_port.lower()
    host = host_port.rpartition(":")[0] or host_port
    for entry in no_proxy["no"].split(","):
        name = entry.strip().lower().lstrip(".")
        if name == "*":
            return True
        if not name:
            continue
        for candidate in (host, host_port):
            if candidate == name or candidate.endswith("." + name):
                return True
    return False


def proxies_for(configured: str | None) -> Proxies:
    """:class:`Proxies` for ``http.proxy`` (checked with the configuration) and the
    environment, whose bad values are a usage error naming it (exit 2)."""
    try:
        return Proxies(configured)
    except ProxyError as exc:
        raise UsageError(f"environment: {exc}") from None
