"""The one sanitiser for text from outside: names, reason phrases, error messages.

Values from upstream servers and webhook receivers are stored as received, cut to
a bound (:func:`bounded`), and escaped whenever they are shown (:func:`escape`):
a terminal must never receive an escape sequence (``ESC ]`` can set the window
title or write a hyperlink; ``ESC [`` can move the cursor and hide lines), and a
reader must see every character that changes how a line reads: bidi overrides
(U+202E turns ``txt.exe`` into ``exe.txt``), line and paragraph separators
(U+2028 splits one event into two lines in many viewers), zero-width characters
and the byte-order mark (two names that look the same but are not).

Such characters are shown escaped, ``\\x1b``, ``\\u202e``: visible, one line,
and the same on every terminal. HTML pages escape ``&<>"'`` besides
(``export pages``, with :func:`html.escape`).

The CLI wraps stdout and stderr in :class:`EscapedStream` (``cli.main``), which
escapes every such character the program writes except its own newlines and
tabs; tables and log lines escape newlines and tabs inside values as well.
"""

from __future__ import annotations

import functools
import io
import re

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import TextIO

#: Longest error message, reason phrase or problem stored (characters).
MAX_STORED = 2000

_SPECIAL = (
    "\x7f-\x9f"  # DEL and the C1 controls (U+009B is a one-character CSI)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides, isolates
    "\u2028\u2029"  # line and paragraph separators
    "\u200b-\u200d\u2060\ufeff"  # zero-width space, non-joiner, joiner, word joiner, BOM
)
#: In a value, every C0 control is shown escaped, newline and tab too. Both patterns
#: are compiled when a text first needs them (:func:`compiled`): most text a command
#: writes has none of these characters.
_IN_VALUE = f"[\x00-\x1f{_SPECIAL}]"
#: In a stream, the program's own newlines and tabs pass.
_IN_STREAM = f"[\x00-\x08\x0b-\x1f{_SPECIAL}]"


@functools.cache
def compiled(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``re.compile(pattern, flags)``, done at its first use and kept for the process
    (``re``'s own cache may drop it). A pattern compiled at import is paid by every
    start-up, ``status`` and ``--help`` too, whether the text needs it or not."""
    return re.compile(pattern, flags)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: str) -> str:
    """``value`` fit to show on one line: controls, bidi, separators, zero-width escaped."""
    if value.isprintable():  # in C; false for every character escaped (and a few more)
        return value
    return compiled(_IN_VALUE).sub(_escaped, value)


def escape_output(text: str) -> str:
    """``text`` the program writes: as :func:`escape`, but newlines and tabs pass."""
    # Most writes are one line and its newline: the line alone takes the fast path. A
    # table, a help text: their lines without the newlines and tabs (every character
    # escaped is one that is not printable).
    if (text[:-1] if text.endswith("\n") else text).isprintable():
        return text
    if text.replace("\n", "").replace("\t", "").isprintable():
        return text
    if compiled(_IN_STREAM).search(text) is None:
        return text
    return compiled(_IN_STREAM).sub(_escaped, text)


def bounded(value: str, limit: int = MAX_STORED) -> str:
    """``value`` cut to at most ``limit`` characters (``...`` marks a cut) for storing."""
    if len(value) <= limit:
        return value
    return value[: limit - 3] + "..."


class EscapedStream(io.TextIOBase):
    """A text stream that writes to ``raw`` with :func:`escape_output` applied.

    Everything else (``isatty``, ``fileno``, ``flush``, ``encoding``) is the raw
    stream's. Closing it leaves the raw stream open.
    """

    def __init__(self, raw: TextIO) -> None:
        super().__init__()
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(escape_output(text))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.raw.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.raw.errors


def unescaped(stream: TextIO) -> TextIO:
    """The stream under an :class:`EscapedStream` (for rich's live displays, which
    write their own escape sequences and show values they escaped), else ``stream``."""
    return stream.raw if isinstance(stream, EscapedStream) else stream
