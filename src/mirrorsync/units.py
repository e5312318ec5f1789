"""Human units, one form each, for everything people read: tables, progress and log lines.

``human_size`` (decimal, as ``du -h --si`` and rich: ``431.6 kB``, ``30.6 MB``),
``plural`` (``1 stack``, ``2 stacks``) and ``human_duration`` (``35ms``, ``0.4s``, ``12s``,
``3m05s``, ``2h03m``, ``3d04h``). JSON and log fields keep raw numbers.
"""

from __future__ import annotations

import os
from datetime import datetime

from mirrorsync.text import compiled

_SIZE_UNITS = ("kB", "MB", "GB", "TB", "PB")


def human_size(n: int | None) -> str:
    """Bytes in decimal units, as ``du -h --si`` and rich do: ``512 B``, ``30.6 MB``."""
    if n is None:
        return "-"
    if abs(n) < 1000:
        return f"{n} B"
    value = float(n)
    for unit in _SIZE_UNITS:
        value /= 1000
        if abs(value) < 999.95 or unit == _SIZE_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """``1 stack``, ``2 stacks``, ``0 stacks``; ``plural(3, 'entry', 'entries')``."""
    word = singular if n == 1 else (plural_form or f"{singular}s")
    return f"{n:,} {word}" if n >= 10_000 else f"{n} {word}"


def human_duration(seconds: float) -> str:
    """``35ms``, ``0.4s``, ``12s``, ``3m05s``, ``2h03m``, ``3d04h``."""
    if seconds < 0.1:  # one HTTP request, a quick stack: "0.0s" would say nothing
        return f"{max(seconds, 0) * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def parse_time(stored: str) -> datetime:
    """A stored timestamp (``2026-11-20T08:00:12.123456Z``) as an aware datetime."""
    return datetime.fromisoformat(stored.replace("Z", "+00:00"))


def human_time(stored: str | None) -> str:
    """``2026-11-20 08:00Z``: a stored UTC timestamp to the minute."""
    if not stored:
        return ""
    return f"{stored[:10]} {stored[11:16]}Z"


#: Where a figure may start: at the start, after a space or an opening bracket; not inside
#: a word, a path, a URL, a version or a quoted value (``e4s-2026-12-06T08:00:00Z``,
#: ``/1.25s/``, ``@1.25s``, ``'1 stacks'``): those are names, whoever wrote them.
_STARTS = r"(?<![^\s(\[])"
#: Where a figure may end: at the end, before a space, a closing bracket or a comma; a
#: full stop, colon or semicolon only as punctuation (before a space or the end).
_ENDS = r"(?=$|[\s)\],]|[.:;](?:\s|$))"
#: A raw stored timestamp (seconds, maybe fractions; UTC) inside a human line.
_RAW_TIME = _STARTS + r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d):\d\d(?:\.\d+)?(?:Z|[+-]00:?00)?" + _ENDS
#: A duration printed from a float with two or more decimals (``in 0.00s``): not a
#: form ``human_duration`` writes (it writes ``35ms``, ``0.4s``, ``12s``).
_RAW_SECONDS = _STARTS + r"(\d+\.\d{2,})s" + _ENDS


#: Plural nouns the output counts, and their singular: ``1 attempts`` cannot be printed.
_SINGULAR = {
    "attempts": "attempt",
    "binaries": "binary",
    "blobs": "blob",
    "copies": "copy",
    "deliveries": "delivery",
    "dependencies": "dependency",
    "events": "event",
    "files": "file",
    "manifests": "manifest",
    "memberships": "membership",
    "pages": "page",
    "problems": "problem",
    "releases": "release",
    "requests": "request",
    "rows": "row",
    "specs": "spec",
    "stacks": "stack",
    "tables": "table",
    "versions": "version",
    "webhooks": "webhook",
}
#: A count of one before a plural noun, a compound one too (``1 spec manifests``); not
#: inside a number (``0.1``, ``11``, ``v1``) or a word.
_ONE_PLURAL = _STARTS + r"1 ((?:spec |distinct |dead |pending )?)(" + "|".join(_SINGULAR) + r")\b"

#: What marks a name inside a human line (:func:`verbatim`): a random token drawn per
#: process, between two unit separators (whitespace to ``redact``'s URL patterns, so
#: masking a secret in a marked URL never takes a mark with it). Names from upstream
#: are text like any other (a control in one is shown escaped); no one outside this
#: process can write this token, so no name can end its own mark or mark other words.
_MARK = f"\x1f{os.urandom(8).hex()}\x1f"


def verbatim(name: object) -> str:
    """``name`` marked for :func:`humane` to leave as it is: a stack, release, package,
    version, hash, URL, path, mirror or webhook name is shown as upstream or the user
    wrote it, even when it looks like a figure (``e4s-2026-12-06T08:00:00Z``, ``1 stacks``,
    ``12.50s``). Only for text bound for :func:`humane` (a line for ``render.say`` or
    ``logs.print_line``, a table cell), which takes the marks out; never for a stored
    value, JSON, an error or a log record (every handler reads its message: a log
    message's name is a :class:`Verbatim` argument)."""
    return f"{_MARK}{str(name).replace(_MARK, '')}{_MARK}"  # a name in a name: one name


class Verbatim(str):
    """A name as a log message's argument (``log.info("mirror %s: ...", Verbatim(name))``):
    a ``str`` holding the name itself, so a record's message is the plain text to every
    handler and in JSON; the plain log format (``logs.PlainFormatter``) shows it as
    :func:`verbatim` does, and so does a table cell."""

    __slots__ = ()


def plain(text: str) -> str:
    """``text`` without the marks of :func:`verbatim` and nothing rewritten (JSON logs)."""
    return text.replace(_MARK, "") if _MARK in text else text


def humane(text: str) -> str:
    """The one gate of human output (``cli.render.say``, every table cell, the plain
    log lines): a raw timestamp becomes UTC to the minute (``2026-11-20 08:00Z``), a
    float of seconds ``human_duration``'s form, one of a plural noun its singular
    (``1 attempt``). Whatever a command formats by hand, what people read keeps the
    README's rules; JSON never passes here. Names marked by :func:`verbatim` pass as
    they are, their marks taken out."""
    if _MARK not in text:
        return _humane(text)
    parts = text.split(_MARK)  # even: mirrorsync's words; odd: names
    return "".join(part if i % 2 else _humane(part) for i, part in enumerate(parts))


def _humane(text: str) -> str:
    # Each pattern is compiled when a text first may hold what it finds (text.compiled):
    # a start-up whose lines hold no figure pays for none of them.
    if "-" in text and ":" in text:
        text = compiled(_RAW_TIME).sub(r"\1 \2Z", text)
    if "s" in text and "." in text:
        text = compiled(_RAW_SECONDS).sub(lambda m: human_duration(float(m.group(1))), text)
    if "1 " in text:
        text = compiled(_ONE_PLURAL).sub(lambda m: f"1 {m.group(1)}{_SINGULAR[m.group(2)]}", text)
    return text


# -- numbers from outside ----------------------------------------------------------

#: Largest byte count or count accepted from upstream (manifests, pages, headers):
#: 2**53, exact in every JSON reader and far inside the databases' 64-bit integers
#: (a 2**63 would end every write of the crawl with an OverflowError).
MAX_SIZE = 2**53


def size_problem(value: int, what: str) -> str | None:
    """Why ``value`` is not a byte count or count mirrorsync keeps (0 to 2**53), or None."""
    if 0 <= value <= MAX_SIZE:
        return None
    shown = str(value) if value.bit_length() <= 128 else f"a {value.bit_length()}-bit number"
    return f"{what} {shown} is out of range (0 to 2**53)"


def header_count(value: str | None) -> int | None:
    """A header's decimal count (``Content-Length``): ASCII digits only (``²`` and other
    Unicode digits are not a number to HTTP), or None when there is none."""
    if not value or not (value.isascii() and value.isdigit()):
        return None
    return int(value) if len(value) <= 20 else MAX_SIZE + 1
