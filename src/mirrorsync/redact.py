"""Keeping secrets out of everything mirrorsync writes: errors, logs, status, the database.

Credentials reach mirrorsync inside URLs (``https://user:token@host/...``, or
signed query strings such as ``?X-Amz-Signature=...``). They are needed on the
wire and nowhere else, so every URL or message that is shown or stored passes
through :func:`redact_url` or :func:`scrub` first.

Addresses travel as :class:`Url`, which holds both forms: the fetch layer sends
``address``; everything else (messages, logs, the database, JSON) gets the
display form, which is also what ``str()`` and f-strings give.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mirrorsync.records import field, record
from mirrorsync.text import compiled

MASK = "***"

# scheme://userinfo@ : the whole userinfo goes (a lone "user" is often a token). Both
# patterns are compiled at their first use (text.compiled): most messages (every error
# is scrubbed) hold no URL, and a start-up that prints one need not pay for them.
_USERINFO_RE = r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#@]+)@"
# ?name=value / &name=value where the name looks like it carries a secret.
_SECRET_QUERY_RE = (
    r"(?P<name>[?&;][^=&#\s]*(?:token|key|pass|secret|sig|auth|cred|session)[^=&#\s]*=)"
    r"(?P<value>[^&#\s]*)"
)


def scrub(text: str) -> str:
    """``text`` with the credentials of every URL in it masked."""
    if "=" not in text and ("@" not in text or "://" not in text):  # nothing either regex finds
        return text
    text = compiled(_USERINFO_RE).sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return compiled(_SECRET_QUERY_RE, re.IGNORECASE).sub(
        lambda m: f"{m['name']}{MASK}" if m["value"] else m[0], text
    )


def redact_url(url: str) -> str:
    """A URL fit to show or store: userinfo and secret-looking query values masked."""
    return scrub(url)


@record(frozen=True, slots=True)
class Url:
    """A URL to send requests to (``address``) and its ``display`` form, credentials masked.

    ``str(url)``, f-strings and ``repr`` give the display form, so a Url that
    lands in a message, a log line, a database row or JSON never shows its
    secrets; only the HTTP client reads ``address``. Derive new URLs with
    :meth:`join` or :meth:`map`, which work on the address and mask again.
    """

    address: str
    display: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "display", redact_url(self.address))

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"Url({self.display!r})"

    def join(self, path: str) -> Url:
        """``<this>/<path>``, one slash between them; this URL's query stays at the end."""
        return Url(join_url(self.address, path))

    def map(self, derive: Callable[[str], str]) -> Url:
        """The URL ``derive`` makes of this address (e.g. a blob address from a mirror root)."""
        return Url(derive(self.address))

    def rstrip(self, chars: str = "/") -> Url:
        """The path's end stripped of ``chars``; the query is kept."""
        base, suffix = split_query(self.address)
        return Url(base.rstrip(chars) + suffix)


def split_query(url: str) -> tuple[str, str]:
    """``url`` as (everything before its query or fragment, the query and fragment)."""
    cut = len(url)
    for mark in "?#":
        at = url.find(mark, 0, cut)
        if at >= 0:
            cut = at
    return url[:cut], url[cut:]


def join_url(url: str, path: str) -> str:
    """``<url>/<path>``, one slash between them, ``url``'s query (``?token=T``) kept
    at the end: every URL derived from a configured one is made here (or by
    :meth:`Url.join`, which calls this), so a signed or token query reaches
    every request, not only the first."""
    base, suffix = split_query(url)
    return f"{base.rstrip('/')}/{path.lstrip('/')}{suffix}"


def unmask(display: str, base: Url) -> str | None:
    """The address behind ``display`` (a stored, masked URL) when it is ``base`` or a
    URL made from it by :func:`join_url`: ``base``'s address (credentials, query)
    with the rest of the path. None when ``display`` was not made from ``base``."""
    shown_path, shown_suffix = split_query(display)
    base_path, base_suffix = split_query(base.display)
    base_path = base_path.rstrip("/")
    if shown_suffix != base_suffix:
        return None
    if shown_path.rstrip("/") != base_path and not shown_path.startswith(base_path + "/"):
        return None
    address_path, address_suffix = split_query(base.address)
    return address_path.rstrip("/") + shown_path[len(base_path) :] + address_suffix


def one_line(text: str) -> str:
    """``text`` on one line: error reports are one line each, whatever a library said."""
    if "\n" not in text and "\r" not in text:
        return text
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
