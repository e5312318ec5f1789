"""Validation shared by the format parsers."""

from __future__ import annotations

import re

HASH_RE = re.compile(r"^[a-z2-7]{32}$")  # base32, lowercase: Spack's DAG hash alphabet
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
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


def is_lower_hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in "0123456789abcdef" for c in value)


def has_control_chars(value: str) -> bool:
    """Control characters (newlines, escapes...) would forge log lines and table rows."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value)


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
