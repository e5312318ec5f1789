"""PGP clear-signed text (RFC 4880 §7): cut out the signed body without gpg."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mirrorsync.errors import FormatError

BEGIN_MESSAGE = b"-----BEGIN PGP SIGNED MESSAGE-----"
BEGIN_SIGNATURE = b"-----BEGIN PGP SIGNATURE-----"
END_SIGNATURE = b"-----END PGP SIGNATURE-----"
_BARE_CR = re.compile(rb"\r(?!\n)")


@dataclass(frozen=True, slots=True)
class ClearSigned:
    body: bytes  # dash-escaping undone, line endings as in the document
    signature: bytes  # the armoured signature block, BEGIN and END lines included


def is_clearsigned(data: bytes) -> bool:
    return data.lstrip().startswith(BEGIN_MESSAGE)


def split_clearsigned(data: bytes, what: str = "clear-signed document") -> ClearSigned:
    """Return the signed body and the signature armour; FormatError if the armour is broken.

    gpg and this parser must read the same text: gpg treats lines it cannot place
    (a block whose lines end in a bare CR, for one) as garbage and verifies a
    later block, while ``bytes.splitlines`` would break on those CRs and read the
    first. So a document is refused unless it is exactly one armoured block:
    no bare CR anywhere, nothing but whitespace around the block, and one
    BEGIN/END pair of each kind.
    """
    fast = _canonical(data)
    if fast is not None:
        return fast
    if b"\r" in data and _BARE_CR.search(data):
        raise FormatError(what, "has a bare CR (a carriage return not followed by a line feed)")
    for marker in (BEGIN_MESSAGE, BEGIN_SIGNATURE, END_SIGNATURE):
        if data.count(marker) > 1:
            raise FormatError(what, f"has more than one {marker.decode()} line")
    if END_SIGNATURE in data:
        end = data.index(END_SIGNATURE) + len(END_SIGNATURE)
        if data[end:].strip():
            raise FormatError(what, "has bytes after -----END PGP SIGNATURE-----")
    if data[: data.find(BEGIN_MESSAGE)].strip():
        raise FormatError(what, "has bytes before -----BEGIN PGP SIGNED MESSAGE-----")
    lines = data.lstrip().splitlines(keepends=True)
    if not lines or lines[0].rstrip() != BEGIN_MESSAGE:
        raise FormatError(what, "does not start with -----BEGIN PGP SIGNED MESSAGE-----")
    i = 1
    while i < len(lines) and lines[i].strip():  # armour headers (Hash: ...) up to a blank line
        if b":" not in lines[i]:
            raise FormatError(what, f"bad armour header line {lines[i].strip()[:60]!r}")
        i += 1
    if i >= len(lines):
        raise FormatError(what, "no blank line after the armour headers")
    body_start = i + 1
    # Each line without its trailing whitespace, once: the markers are looked up in C.
    stripped = [line.rstrip() for line in lines]
    try:
        sig_start = stripped.index(BEGIN_SIGNATURE, body_start)
    except ValueError:
        raise FormatError(what, "no -----BEGIN PGP SIGNATURE----- line") from None
    if END_SIGNATURE not in stripped[sig_start + 1 :]:
        raise FormatError(what, "no -----END PGP SIGNATURE----- line")
    body = b"".join(lines[body_start:sig_start])
    # Dash-escaped lines ("- " at a line's start: after a LF, there being no bare CR)
    # are undone line by line; a body without any is taken whole.
    if body.startswith(b"- ") or b"\n- " in body:
        body = b"".join([_undash(line) for line in lines[body_start:sig_start]])
    # The line break before the signature belongs to the armour, not the message.
    if body.endswith(b"\r\n"):
        body = body[:-2]
    elif body.endswith(b"\n"):
        body = body[:-1]
    signature = b"".join(lines[sig_start:])
    return ClearSigned(body=body, signature=signature)


_SIGNATURE_LINE = b"\n" + BEGIN_SIGNATURE + b"\n"
_END_LINE = b"\n" + END_SIGNATURE


def _canonical(data: bytes) -> ClearSigned | None:
    """What :func:`split_clearsigned` gives for a document laid out as gpg and Spack
    write one (LF line ends, the armour's lines exact, no dash-escaped line),
    found with a few searches instead of line by line; None for any other
    document, which the general reading then takes (and accepts or refuses)."""
    if (
        b"\r" in data
        or not data.startswith(BEGIN_MESSAGE + b"\n")
        or data.count(BEGIN_MESSAGE) != 1
        or data.count(BEGIN_SIGNATURE) != 1
        or data.count(END_SIGNATURE) != 1
        or not data.rstrip().endswith(_END_LINE)
    ):
        return None
    blank = data.find(b"\n\n", len(BEGIN_MESSAGE))
    if blank < 0:
        return None
    for header in data[len(BEGIN_MESSAGE) + 1 : blank].split(b"\n"):  # e.g. "Hash: SHA256"
        if not header.strip() or b":" not in header:
            return None
    body_start = blank + 2
    mark = data.find(_SIGNATURE_LINE, body_start - 1)
    if mark < 0:
        return None
    body = data[body_start : mark + 1]
    if body.startswith(b"- ") or b"\n- " in body:  # dash-escaped lines: read line by line
        return None
    # The line break before the signature belongs to the armour, not the message.
    return ClearSigned(body=body[:-1] if body else body, signature=data[mark + 1 :])


def _undash(line: bytes) -> bytes:
    return line[2:] if line.startswith(b"- ") else line
