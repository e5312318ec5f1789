"""Build cache manifests (FORMATS.md §2): the index manifest and spec manifests.

A manifest is JSON, plain or PGP clear-signed. Each record names one
content-addressed blob with its media type, length and checksum.
"""

from __future__ import annotations

import msgspec

from mirrorsync.errors import FormatError
from mirrorsync.formats._common import (
    DIGEST_LENGTHS,
    decode_problem,
    is_lower_hex,
    is_spec_hash,
    parser,
    refuse_repeated_keys,
)
from mirrorsync.formats.clearsign import is_clearsigned, split_clearsigned

DB_MEDIA_PREFIX = "application/vnd.spack.db"
TARBALL_MEDIA_PREFIX = "application/vnd.spack.install"
SPEC_MEDIA_PREFIX = "application/vnd.spack.spec"


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
    return manifest


@parser("index manifest")
def parse_index_manifest(data: bytes, url: str | None = None) -> BlobRecord:
    """Return the index blob's record from ``v3/manifests/index/index.manifest.json``."""
    manifest = parse_manifest(data, url, what="index manifest")
    record = manifest.find(DB_MEDIA_PREFIX)
    if record is None:
        raise FormatError("index manifest", f"no {DB_MEDIA_PREFIX}* record", url)
    return record


def spec_manifest_path(name: str, version: str, spec_hash: str) -> str:
    """``v3/manifests/spec/<name>/<name>-<version>-<hash>.spec.manifest.json``."""
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
