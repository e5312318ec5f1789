"""Per-spec files of a build cache: v2 names and spec files, and public-key indexes.

v2 (FORMATS.md section 3) names every file after the spec's architecture,
compiler, name, version and hash; its ``.spec.json(.sig)`` carries the sha256
of the ``.spack`` binary. Both layouts publish their signing keys with a small
JSON index ``{"keys": {"<fingerprint>": {}}}``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import msgspec

from mirrorsync.errors import FormatError
from mirrorsync.formats._common import (
    decode_problem,
    parser,
    polite_filename,
    refuse_repeated_keys,
)
from mirrorsync.formats.clearsign import is_clearsigned, split_clearsigned

V2_CACHE = "build_cache"
V2_KEY_INDEX = "build_cache/_pgp/index.json"
V3_KEY_INDEX_MANIFEST = "v3/manifests/key/keys.manifest.json"
KEY_INDEX_MEDIA_PREFIX = "application/vnd.spack.keyindex"
PUBLIC_KEY_MEDIA_TYPE = "application/pgp-keys"

_FINGERPRINT_RE = re.compile(r"^[0-9A-Fa-f]{16,40}$")
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True, slots=True)
class V2Paths:
    """Where a v2 mirror keeps one spec, relative to the mirror root."""

    spec_signed: str  # build_cache/<stem>.spec.json.sig
    spec_plain: str  # build_cache/<stem>.spec.json
    tarball: str  # build_cache/<arch>/<compiler>-<version>/<name>-<version>/<stem>.spack


def v2_paths(
    *,
    platform: str,
    os: str,
    target: str,
    compiler: tuple[str, str] | None,
    name: str,
    version: str,
    spec_hash: str,
) -> V2Paths:
    """The file names of FORMATS.md section 3; a spec without a compiler uses ``none-none``.

    Every part is made safe as Spack makes it (``polite_filename``)."""
    arch = "-".join(polite_filename(p) for p in (platform, os, target))
    comp = "-".join(polite_filename(p) for p in compiler) if compiler else "none-none"
    nv = f"{polite_filename(name)}-{polite_filename(version)}"
    stem = f"{arch}-{comp}-{nv}-{spec_hash}"
    return V2Paths(
        spec_signed=f"{V2_CACHE}/{stem}.spec.json.sig",
        spec_plain=f"{V2_CACHE}/{stem}.spec.json",
        tarball=f"{V2_CACHE}/{arch}/{comp}/{nv}/{stem}.spack",
    )


class _Checksum(msgspec.Struct):
    hash_algorithm: str
    hash: str


class _SpecFile(msgspec.Struct):
    binary_cache_checksum: _Checksum


_SPECFILE = msgspec.json.Decoder(_SpecFile)


@dataclass(frozen=True, slots=True)
class BinaryChecksum:
    algorithm: str
    checksum: str


@parser("v2 spec file")
def parse_v2_specfile(data: bytes, url: str | None = None) -> BinaryChecksum:
    """The ``binary_cache_checksum`` of a plain or clear-signed v2 spec file."""
    what = "v2 spec file"
    try:
        body = split_clearsigned(data, what).body if is_clearsigned(data) else data
        doc = _SPECFILE.decode(body)
    except FormatError as exc:
        raise exc.at(url) if url else exc from None
    except msgspec.DecodeError as exc:
        raise FormatError(what, decode_problem(exc, body), url) from None
    refuse_repeated_keys(what, body, url)
    algorithm, checksum = doc.binary_cache_checksum.hash_algorithm, doc.binary_cache_checksum.hash
    expected = _DIGEST_LENGTHS.get(algorithm)
    if expected is None:
        raise FormatError(what, f"unknown checksum algorithm {algorithm!r}", url)
    if len(checksum) != expected or any(c not in "0123456789abcdef" for c in checksum):
        raise FormatError(
            what, f"checksum {checksum[:80]!r} is not {expected} lowercase hex digits", url
        )
    return BinaryChecksum(algorithm, checksum)


class _KeyIndex(msgspec.Struct):
    keys: dict[str, msgspec.Raw]


_KEY_INDEX = msgspec.json.Decoder(_KeyIndex)


@parser("key index")
def parse_key_index(data: bytes, url: str | None = None) -> list[str]:
    """Fingerprints listed by a key index, in the order given."""
    what = "key index"
    try:
        doc = _KEY_INDEX.decode(data)
    except msgspec.DecodeError as exc:
        raise FormatError(what, decode_problem(exc, data), url) from None
    refuse_repeated_keys(what, data, url)
    for fingerprint in doc.keys:
        if not _FINGERPRINT_RE.match(fingerprint):
            raise FormatError(what, f"{fingerprint[:60]!r} is not a key fingerprint", url)
    return list(doc.keys)


def v3_key_manifest(fingerprint: str) -> str:
    return f"v3/manifests/key/{fingerprint}.key.manifest.json"


def v2_public_key(fingerprint: str) -> str:
    return f"build_cache/_pgp/{fingerprint}.pub"


#: A spec metadata blob is a few kB; this much unpacked is far beyond any real one.
SPEC_BLOB_MAX = 64 * 1024**2


class _Node(msgspec.Struct):
    name: str
    hash: str


class _Spec(msgspec.Struct):
    nodes: list[_Node]


class _SpecDoc(msgspec.Struct):
    spec: _Spec


_SPEC_DOC = msgspec.json.Decoder(_SpecDoc)


@dataclass(frozen=True, slots=True)
class SpecIdentity:
    name: str
    hash: str


@parser("spec metadata")
def spec_blob_identity(data: bytes, url: str | None = None) -> SpecIdentity:
    """The root spec (first node) a spec metadata blob (``spec.json``, maybe gzipped) is of.

    Binds a spec manifest to its spec: a genuine manifest of another spec names
    that spec's metadata, whose root hash is not the one at this path."""
    what = "spec metadata"
    if data[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data, SPEC_BLOB_MAX + 1)
        except zlib.error as exc:
            raise FormatError(what, f"not valid gzip data ({exc})", url) from None
        if len(data) > SPEC_BLOB_MAX or not inflater.eof:
            raise FormatError(what, "gzip data truncated or over 64 MiB unpacked", url)
    try:
        doc = _SPEC_DOC.decode(data)
    except msgspec.DecodeError as exc:
        raise FormatError(what, decode_problem(exc, data), url) from None
    refuse_repeated_keys(what, data, url)
    if not doc.spec.nodes:
        raise FormatError(what, "lists no spec nodes", url)
    root = doc.spec.nodes[0]
    return SpecIdentity(root.name, root.hash)
