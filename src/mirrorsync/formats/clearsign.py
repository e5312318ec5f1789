"""PGP clear-signed text (RFC 4880 §7): cut out the signed body without gpg."""

from __future__ import annotations

from dataclasses import dataclass

from mirrorsync.errors import FormatError

BEGIN_MESSAGE = b"-----BEGIN PGP SIGNED MESSAGE-----"
BEGIN_SIGNATURE = b"-----BEGIN PGP SIGNATURE-----"
END_SIGNATURE = b"-----END PGP SIGNATURE-----"


@dataclass(frozen=True, slots=True)
class ClearSigned:
    body: bytes  # dash-escaping undone, line endings as in the document
    signature: bytes  # the armoured signature block, BEGIN and END lines included


def is_clearsigned(data: bytes) -> bool:
    return data.lstrip().startswith(BEGIN_MESSAGE)


def split_clearsigned(data: bytes, what: str = "clear-signed document") -> ClearSigned:
    """Return the signed body and the signature armour; FormatError if the armour is broken."""
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
    try:
        sig_start = next(
            j for j in range(body_start, len(lines)) if lines[j].rstrip() == BEGIN_SIGNATURE
        )
    except StopIteration:
        raise FormatError(what, "no -----BEGIN PGP SIGNATURE----- line") from None
    if not any(line.rstrip() == END_SIGNATURE for line in lines[sig_start + 1 :]):
        raise FormatError(what, "no -----END PGP SIGNATURE----- line")
    body_lines = [_undash(line) for line in lines[body_start:sig_start]]
    body = b"".join(body_lines)
    # The line break before the signature belongs to the armour, not the message.
    if body.endswith(b"\r\n"):
        body = body[:-2]
    elif body.endswith(b"\n"):
        body = body[:-1]
    signature = b"".join(lines[sig_start:])
    return ClearSigned(body=body, signature=signature)


def _undash(line: bytes) -> bytes:
    return line[2:] if line.startswith(b"- ") else line
