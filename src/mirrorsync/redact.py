"""Keeping secrets out of everything mirrorsync writes: errors, logs, status, the database.

Credentials reach mirrorsync inside URLs (``https://user:token@host/...``, or
signed query strings such as ``?X-Amz-Signature=...``). They are needed on the
wire and nowhere else, so every URL or message that is shown or stored passes
through :func:`redact_url` or :func:`scrub` first.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://userinfo@ : the whole userinfo goes (a lone "user" is often a token).
_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#@]+)@")
# ?name=value / &name=value where the name looks like it carries a secret.
_SECRET_QUERY_RE = re.compile(
    r"(?P<name>[?&;][^=&#\s]*(?:token|key|pass|secret|sig|auth|cred|session)[^=&#\s]*=)"
    r"(?P<value>[^&#\s]*)",
    re.IGNORECASE,
)


def scrub(text: str) -> str:
    """``text`` with the credentials of every URL in it masked."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_QUERY_RE.sub(lambda m: f"{m['name']}{MASK}" if m["value"] else m[0], text)


def redact_url(url: str) -> str:
    """A URL fit to show or store: userinfo and secret-looking query values masked."""
    return scrub(url)


def one_line(text: str) -> str:
    """``text`` on one line: error reports are one line each, whatever a library said."""
    if "\n" not in text and "\r" not in text:
        return text
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class ScrubFilter(logging.Filter):
    """A logging filter that masks credentials in every record, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
