"""Validation shared by the format parsers."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import msgspec

from mirrorsync.errors import FormatError

HASH_RE = re.compile(r"^[a-z2-7]{32}$")  # base32, lowercase: Spack's DAG hash alphabet
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 controls, DEL
#: Hex digits of each checksum algorithm a manifest may name.
DIGEST_LENGTHS = {"sha256": 64, "sha512": 128, "sha1": 40, "md5": 32}
_IMPOLITE = re.compile(r"[^A-Za-z0-9_+.-]")


def polite_filename(part: str) -> str:
    """A file name part as Spack makes it (``llnl.util.filesystem.polite_filename``):
    every character outside ``[A-Za-z0-9_+.-]`` becomes ``_``, so a git version
    ``git.abc123=1.0`` is written ``git.abc123_1.0``."""
    return _IMPOLITE.sub("_", part)


def compiler_text(name: str, version: str) -> str:
    """A compiler as mirrorsync stores and writes it: ``gcc@13.2.0``, as Spack 1.x prints it."""
    return f"{name}@{version}"


def canonical_compiler(text: str) -> str:
    """``gcc@=10.2.1`` (Spack 0.2x, and ``annotations.compiler``) -> ``gcc@10.2.1``;
    ``gcc@10.2.1`` stays as it is."""
    name, at, version = text.partition("@")
    return compiler_text(name, version.removeprefix("=")) if at else text


def is_spec_hash(value: str) -> bool:
    """A Spack DAG hash: 32 lowercase base32 characters (a-z, 2-7)."""
    return HASH_RE.fullmatch(value) is not None


def is_sha256(value: str) -> bool:
    return SHA256_RE.fullmatch(value) is not None


_LOWER_HEX = re.compile(r"[0-9a-f]*")


def is_lower_hex(value: str, length: int) -> bool:
    # A compiled fullmatch: a third of what str.strip with a set of characters costs.
    return len(value) == length and _LOWER_HEX.fullmatch(value) is not None


def has_control_chars(value: str) -> bool:
    """Control characters (newlines, escapes...) would forge log lines and table rows."""
    return _UNPRINTABLE.search(value) is not None


def decode_problem(exc: Exception, data: bytes | bytearray | memoryview) -> str:
    """What a JSON decoder's error says, in words fit for a one-line report.

    Bytes that are not UTF-8 are described in mirrorsync's own words, whatever
    the decoder raised (msgspec's exception and wording for them changed
    between releases): the check runs only once decoding has failed.
    """
    return utf8_problem(data) or str(exc)


def utf8_problem(data: bytes | bytearray | memoryview) -> str | None:
    """``not UTF-8 at byte N`` for bytes that are not UTF-8, else None."""
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8 at byte {bad.start}"
    return None


# -- the parser contract ------------------------------------------------------------
#
# Every public parser is declared with ``@parser(...)``: it is listed in ``PARSERS``
# (which the property tests iterate, so a new parser is fuzzed automatically) and
# whatever it raises reaches its caller as a FormatError naming the document kind
# and URL. Nothing else decides how a parser fails.

P = ParamSpec("P")
R = TypeVar("R")

#: Every parser, by the kind of document it reads: ``(data, url) -> records``.
PARSERS: dict[str, Callable[[bytes, str | None], object]] = {}


def parser(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare a parser ``f(data, url=None, ...)`` of ``what`` documents: register it
    in PARSERS and make FormatError the only exception that can come out of it."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                url = kwargs.get("url", args[1] if len(args) > 1 else None)
                kind = kwargs.get("what", args[2] if len(args) > 2 else what)
                data = args[0] if args else b""
                raise as_format_error(
                    kind if isinstance(kind, str) else what,
                    exc,
                    data if isinstance(data, bytes | bytearray | memoryview) else b"",
                    url if isinstance(url, str) else None,
                ) from None

        register(what, wrapper)  # type: ignore[arg-type]
        return wrapper

    return decorate


def register(what: str, function: Callable[[bytes, str | None], object]) -> None:
    """List ``function`` in PARSERS (``@parser`` does it; for variants such as a lazy parse)."""
    if what in PARSERS:
        raise ValueError(f"two parsers for {what!r}")
    PARSERS[what] = function


def as_format_error(
    what: str, exc: Exception, data: bytes | bytearray | memoryview, url: str | None
) -> FormatError:
    """Any exception out of a parser, as the FormatError it stands for.

    A FormatError keeps its words and gains the URL; a decoder's error, bytes
    that are not UTF-8, nesting too deep for the decoder and anything else a
    library raises become one line in mirrorsync's own words.
    """
    if isinstance(exc, FormatError):
        return exc.at(url) if url and exc.url is None else exc
    if isinstance(exc, RecursionError):
        return FormatError(what, "nested too deeply to decode", url)
    if isinstance(exc, UnicodeError):
        return FormatError(what, utf8_problem(data) or "not UTF-8", url)
    if isinstance(exc, msgspec.DecodeError):
        return FormatError(what, decode_problem(exc, data), url)
    problem = " ".join(str(exc).split())[:200]
    return FormatError(
        what, f"cannot be read ({type(exc).__name__}{': ' if problem else ''}{problem})", url
    )


# -- keys named twice ----------------------------------------------------------------


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _refuse_repeats(pairs: list[tuple[str, object]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _Repeated(key)
        seen.add(key)


#: ``json.loads(text, object_pairs_hook=...)`` without making a decoder (and its
#: scanner) at every call: a crawl checks every manifest it reads.
_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_refuse_repeats)


def repeated_key(data: bytes | bytearray | memoryview | str) -> str | None:
    """The first key named twice in one object of a JSON document, else None.

    JSON decoders (msgspec's, Python's, Spack's) keep the last of two equal keys
    without a word, which would let a document hide what it lists: callers
    refuse such documents. Run on documents that already decoded (valid JSON);
    each object is checked as it closes, and nothing is kept.
    """
    text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    try:
        _PAIRS_DECODER.decode(text)
    except _Repeated as found:
        return found.key
    except ValueError:  # not JSON to Python's decoder: the caller's decoder has the say
        return None
    return None


def refuse_repeated_keys(what: str, data: bytes | bytearray | memoryview, url: str | None) -> None:
    """FormatError naming the first key that a (small) JSON document names twice."""
    key = repeated_key(data)
    if key is not None:
        raise FormatError(what, f"key {shown(key)} is named twice in one object", url)


# -- names, versions and other labels ---------------------------------------------------

#: Longest spec name, version, platform, os, target or compiler accepted (characters).
MAX_LABEL = 256
#: Longest rendered variant (``name=value``) accepted: long lists of patches fit.
MAX_VARIANT = 16384


def label_problem(value: str, limit: int = MAX_LABEL) -> str | None:
    """Why ``value`` may not be stored and printed as a name, or None if it may."""
    if len(value) > limit:
        return f"is {len(value)} characters long (at most {limit})"
    if _UNPRINTABLE.search(value) is not None:
        return "holds control characters"
    return None


def shown(value: str, limit: int = 60) -> str:
    """``value`` quoted for an error line, cut to ``limit`` characters."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")
