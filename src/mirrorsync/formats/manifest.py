"""Build cache manifests (FORMATS.md §2): the index manifest and spec manifests.

A manifest is JSON, plain or PGP clear-signed. Each record names one
content-addressed blob with its media type, length and checksum.
"""

from __future__ import annotations

import re

import msgspec

from mirrorsync.errors import FormatError, UnsupportedFormatError
from mirrorsync.formats._common import (
    DIGEST_LENGTHS,
    decode_problem,
    is_lower_hex,
    is_spec_hash,
    parser,
    polite_filename,
    refuse_repeated_keys,
)
from mirrorsync.formats.clearsign import is_clearsigned, split_clearsigned
from mirrorsync.formats.index import DB_VERSIONS
from mirrorsync.units import size_problem

DB_MEDIA_PREFIX = "application/vnd.spack.db"
TARBALL_MEDIA_PREFIX = "application/vnd.spack.install"
SPEC_MEDIA_PREFIX = "application/vnd.spack.spec"
_DB_MEDIA_RE = re.compile(r"^application/vnd\.spack\.db\.v(?P<version>\d{1,4})\+json$")
#: Index blob compressions mirrorsync can undo (the manifest record's ``compression``).
INDEX_COMPRESSIONS = ("none", "gzip")


class BlobRecord(msgspec.Struct, rename="camel"):
    media_type: str
    checksum_algorithm: str
    checksum: str
    content_length: int
    compression: str = "none"


class Manifest(msgspec.Struct):
    data: list[BlobRecord]
    version: int = 3

    def find(self, media_prefix: str) -> BlobRecord | None:
        return next((r for r in self.data if r.media_type.startswith(media_prefix)), None)


_DECODER = msgspec.json.Decoder(Manifest)


@parser("manifest")
def parse_manifest(data: bytes, url: str | None = None, what: str = "manifest") -> Manifest:
    """Decode a plain or clear-signed manifest and check every record's digest shape.

    A key named twice in one object is refused (a decoder would keep the last)."""
    body = data
    try:
        if is_clearsigned(data):
            body = split_clearsigned(data, what).body
        manifest = _DECODER.decode(body)
    except FormatError as exc:
        raise exc.at(url) if url else exc from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise FormatError(what, decode_problem(exc, body), url) from None
    refuse_repeated_keys(what, body, url)
    for record in manifest.data:
        expected = DIGEST_LENGTHS.get(record.checksum_algorithm)
        if expected is None:
            raise FormatError(
                what, f"unknown checksum algorithm {record.checksum_algorithm[:40]!r}", url
            )
        if not is_lower_hex(record.checksum, expected):
            raise FormatError(
                what,
                f"checksum {record.checksum[:80]!r} is not {expected} lowercase hex digits",
                url,
            )
        if record.content_length < 0:
            raise FormatError(what, "negative contentLength", url)
        problem = size_problem(record.content_length, "contentLength")
        if problem is not None:  # 2**63 would stop the crawl's every write (OverflowError)
            raise FormatError(what, problem, url)
    return manifest


@parser("index manifest")
def parse_index_manifest(data: bytes, url: str | None = None) -> BlobRecord:
    """The index blob's record from ``v3/manifests/index/[<view>/]index.manifest.json``.

    Spack >= 1.3 writes one record per database version, newest first: the one of the
    newest version mirrorsync reads is chosen, whatever the order. Its ``compression``
    must be one mirrorsync can undo (``INDEX_COMPRESSIONS``).
    """
    manifest = parse_manifest(data, url, what="index manifest")
    candidates = [r for r in manifest.data if r.media_type.startswith(DB_MEDIA_PREFIX)]
    if not candidates:
        raise FormatError("index manifest", f"no {DB_MEDIA_PREFIX}* record", url)
    readable: list[tuple[int, BlobRecord]] = []
    for record in candidates:
        match = _DB_MEDIA_RE.match(record.media_type)
        if match is None:
            raise FormatError(
                "index manifest", f"media type {record.media_type[:80]!r} names no version", url
            )
        if int(match["version"]) in DB_VERSIONS:
            readable.append((int(match["version"]), record))
    if not readable:
        listed = ", ".join(r.media_type[:60] for r in candidates)
        raise UnsupportedFormatError(
            "index manifest",
            f"no database version mirrorsync reads ({DB_VERSIONS[0]} to {DB_VERSIONS[-1]}) "
            f"among {listed}",
            url,
        )
    record = max(readable, key=lambda pair: pair[0])[1]
    if record.compression not in INDEX_COMPRESSIONS:
        raise UnsupportedFormatError(
            "index manifest",
            f"index compression {record.compression[:40]!r} (mirrorsync reads "
            f"{', '.join(INDEX_COMPRESSIONS)})",
            url,
        )
    return record


def spec_manifest_path(name: str, version: str, spec_hash: str) -> str:
    """``v3/manifests/spec/<name>/<name>-<version>-<hash>.spec.manifest.json``, each
    part made safe as Spack makes it (``git.abc123=1.0`` -> ``git.abc123_1.0``)."""
    name, version = polite_filename(name), polite_filename(version)
    return f"v3/manifests/spec/{name}/{name}-{version}-{spec_hash}.spec.manifest.json"


def hash_from_manifest_name(filename: str) -> str:
    """The spec hash of a manifest file name: the last ``-``-separated part."""
    stem = filename.removesuffix(".spec.manifest.json")
    candidate = stem.rsplit("-", 1)[-1]
    if not is_spec_hash(candidate):
        raise FormatError("spec manifest name", f"{filename!r} does not end in a spec hash")
    return candidate


@parser("spec manifest")
def spec_manifest_records(
    data: bytes, url: str | None = None
) -> tuple[BlobRecord, BlobRecord, Manifest]:
    """The tarball and spec-metadata records of a spec manifest (and the whole manifest)."""
    manifest = parse_manifest(data, url, what="spec manifest")
    tarball = manifest.find(TARBALL_MEDIA_PREFIX)
    spec = manifest.find(SPEC_MEDIA_PREFIX)
    if tarball is None:
        raise FormatError("spec manifest", f"no {TARBALL_MEDIA_PREFIX}* record", url)
    if spec is None:
        raise FormatError("spec manifest", f"no {SPEC_MEDIA_PREFIX}* record", url)
    return tarball, spec, manifest
