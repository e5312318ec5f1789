"""``split_clearsigned``'s fast path (``_canonical``, issue 31) reads exactly what the
line-by-line reading does: for every document it takes, the same body and signature;
every other document goes to the line-by-line reading (which accepts or refuses it)."""

from __future__ import annotations

import random

import pytest

from mirrorsync.errors import FormatError
from mirrorsync.formats import clearsign
from mirrorsync.formats.clearsign import ClearSigned

BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
SIG = b"-----BEGIN PGP SIGNATURE-----"
END = b"-----END PGP SIGNATURE-----"


def _line_by_line(data: bytes, monkeypatch: pytest.MonkeyPatch) -> ClearSigned | str:
    with monkeypatch.context() as patch:
        patch.setattr(clearsign, "_canonical", lambda data: None)
        try:
            return clearsign.split_clearsigned(data)
        except FormatError as exc:
            return f"refused: {exc}"


def _agrees(data: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    """True if the fast path took ``data`` (and read it as the line-by-line reading)."""
    fast = clearsign._canonical(data)
    if fast is None:
        return False
    assert _line_by_line(data, monkeypatch) == fast, data
    return True


GOOD = BEGIN + b'\nHash: SHA256\n\n{"a": 1}\n' + SIG + b"\nabc\n" + END + b"\n"

# Each a document gpg could read otherwise than a few searches would: the fast path
# must pass it on (None), or read it as the line-by-line reading does.
HOSTILE = [
    GOOD.replace(b"{", b"- {"),  # dash-escaped
    GOOD.replace(b"1}\n", b"1}\n- -x\n"),
    GOOD.replace(b"1}", b"1}  \t"),  # trailing whitespace
    GOOD.replace(b"\n", b"\r\n"),  # CRLF
    GOOD.replace(b"1}\n", b"1}\r"),  # a bare CR
    GOOD + GOOD,  # several signed blocks
    b"junk\n" + GOOD,  # text before the armour
    GOOD + b"junk\n",  # text after it
    b"\n  " + GOOD,
    GOOD.replace(b"Hash: SHA256\n", b""),  # no header
    GOOD.replace(b"Hash: SHA256\n", b"Hash: SHA256\n \n"),  # a blank-looking header line
    GOOD.replace(b"Hash: SHA256\n", b"Hash SHA256\n"),
    GOOD.replace(b"Hash: SHA256\n", b"Hash: SHA256\nHash: SHA1\n"),
    GOOD.replace(b"1}", b"1\x00}"),  # NUL
    GOOD.replace(b"1}\n", b"1}\n" + BEGIN + b"\n"),  # a BEGIN line inside the body
    GOOD.replace(b"1}\n", b"1}\n" + SIG + b"\n"),
    GOOD.replace(b"1}\n", b"1}\n" + END + b"\n"),
    GOOD.replace(SIG + b"\n", SIG + b" \n"),  # armour lines not exact
    GOOD.replace(BEGIN + b"\n", BEGIN + b" \n"),
    GOOD.replace(END, END + b"x"),
    GOOD.replace(b'{"a": 1}\n', b""),  # an empty body
    GOOD.replace(b"1}\n", b"1}\n\x0b\x0c\x1c\x85\n"),
]


@pytest.mark.parametrize("data", [*HOSTILE, GOOD])
def test_the_fast_path_reads_a_hostile_document_as_the_line_by_line_reading(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _agrees(data, monkeypatch)


def test_the_fast_path_takes_a_canonical_document(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _agrees(GOOD, monkeypatch)


def test_the_fast_path_agrees_on_documents_made_of_random_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seeded: 20,000 documents of armour lines, whitespace, dashes, CRs and other
    line breaks; every one the fast path takes, read the same line by line."""
    pieces = [BEGIN, SIG, END, b"Hash: SHA256", b"\n", b"\n", b"\n", b" ", b"\t", b"- "]
    pieces += [b"-", b'{"a": 1}', b"\x00", b"\x0c", b"\x0b", b"\r", b"x", b":", b"\x85"]
    rng = random.Random(31)
    taken = 0
    for _ in range(20_000):
        parts = [BEGIN + b"\n", *rng.choices(pieces, k=rng.randint(0, 8))]
        parts += [b"\n" + SIG + b"\n"] if rng.random() < 0.8 else []
        parts += [*rng.choices(pieces, k=rng.randint(0, 3)), b"\n" + END]
        parts += rng.choices(pieces, k=rng.randint(0, 2))
        taken += _agrees(b"".join(parts), monkeypatch)
    assert taken > 50  # the fast path was exercised
