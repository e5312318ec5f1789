"""The catalogue of releases and stacks, ``cache_spack_io_index.json`` (FORMATS.md §1).

Also the pure URL arithmetic that goes with it: mapping ``s3://bucket/key`` to
HTTPS, and finding a stack's mirror root, layout and content address from the
URL the catalogue gives for its index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec

from mirrorsync.errors import FormatError
from mirrorsync.formats._common import (
    DIGEST_LENGTHS,
    decode_problem,
    has_control_chars,
    is_lower_hex,
    parser,
    repeated_key,
    shown,
)
from mirrorsync.redact import join_url

Layout = Literal["v3", "v2"]

_V3_INDEX_RE = re.compile(
    r"^(?P<root>.+?)/blobs/sha256/(?P<prefix>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})$"
)
_V2_INDEX_SUFFIX = "/build_cache/index.json"


class _Entry(msgspec.Struct, forbid_unknown_fields=False):
    label: str
    url: str


_DECODER = msgspec.json.Decoder(dict[str, list[_Entry]])


@dataclass(frozen=True, slots=True)
class CatalogStack:
    release: str
    stack: str
    url: str  # as written in the catalogue (may be s3://)


@dataclass(frozen=True, slots=True)
class Catalog:
    """A decoded catalogue: its stacks, and the entries left out for repeating a label."""

    stacks: list[CatalogStack]
    repeated: list[CatalogStack]  # a label seen before in its release (only the first counts)


def parse_catalog(data: bytes, url: str | None = None) -> list[CatalogStack]:
    """Decode a catalogue into one record per (release, stack), in file order."""
    return parse_catalog_document(data, url).stacks


@parser("catalogue")
def parse_catalog_document(data: bytes, url: str | None = None) -> Catalog:
    """Decode a catalogue. A label repeated within a release (the generator writes one
    for a mirror nested under a stack's path, FORMATS.md section 1) is not an error: the
    first entry counts and the others go to ``repeated``, for the caller to report.

    A key named twice in one object is refused: a release listed twice would
    have its first list of stacks silently dropped (and those stacks retired).
    The generator writes a Python dict, which cannot hold a key twice.
    """
    try:
        document = _DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise FormatError("catalogue", decode_problem(exc, data), url) from None
    twice = repeated_key(data)
    if twice is not None:
        where = "release" if twice in document else "key"
        raise FormatError("catalogue", f"{where} {shown(twice)} is named twice", url)
    out: list[CatalogStack] = []
    repeated: list[CatalogStack] = []
    for release, entries in document.items():
        if not release.strip():
            raise FormatError("catalogue", "a release has an empty name", url)
        _check_name("release", release, url)
        seen: set[str] = set()
        for entry in entries:
            if not entry.label.strip():
                raise FormatError(
                    "catalogue", f"release {release!r} has a stack with no label", url
                )
            _check_name(f"release {release!r}: stack", entry.label, url)
            stack = CatalogStack(release=release, stack=entry.label, url=entry.url)
            if entry.label in seen:
                repeated.append(stack)
                continue
            seen.add(entry.label)
            out.append(stack)
    return Catalog(out, repeated)


def _check_name(what: str, name: str, url: str | None) -> None:
    if len(name) > MAX_NAME or has_control_chars(name) or name != name.strip():
        raise FormatError("catalogue", f"{what} name {name[:80]!r} is not a plain name", url)


MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class IndexLocation:
    """Where a stack's index lives, derived from its catalogue URL."""

    mirror_root: str  # http(s) URL, no trailing slash
    layout: Layout
    index_url: str
    index_checksum: str | None  # v3: the content address in the URL


def resolve_url(url: str, bucket_urls: Mapping[str, str]) -> str:
    """Map ``s3://bucket/key`` through ``bucket_urls``; pass http(s) URLs through."""
    if url.startswith(("http://", "https://")):
        rest = url.partition("://")[2]
        _check_path(url, rest.partition("/")[2])
        return url
    if url.startswith("s3://"):
        bucket, _, key = url[len("s3://") :].partition("/")
        base = bucket_urls.get(bucket)
        if base is None:
            raise FormatError(
                "catalogue",
                f"no bucket_urls entry for s3 bucket {bucket!r} (in {url})",
            )
        _check_path(url, key)
        return join_url(base, key)
    raise FormatError("catalogue", f"unsupported URL scheme in {url[:200]!r}")


def _check_path(url: str, path: str) -> None:
    """Refuse paths that climb out of their bucket or mirror (``..``, encoded dots, ``\\``)."""
    decoded = path.split("?", 1)[0].split("#", 1)[0].lower().replace("%2e", ".")
    segments = decoded.replace("%2f", "/").replace("%5c", "/").replace("\\", "/").split("/")
    if any(segment in (".", "..") for segment in segments) or has_control_chars(path):
        raise FormatError("catalogue", f"URL {url[:200]!r} would escape its mirror root")


def locate_index(url: str, bucket_urls: Mapping[str, str]) -> IndexLocation:
    """Find mirror root and layout from a catalogue URL (v3 blob or v2 index.json)."""
    http_url = resolve_url(url, bucket_urls)
    match = _V3_INDEX_RE.match(http_url)
    if match:
        if match["sha"][:2] != match["prefix"]:
            raise FormatError("catalogue", f"blob URL {url!r} has a wrong prefix directory")
        return IndexLocation(match["root"], "v3", http_url, match["sha"])
    if http_url.endswith(_V2_INDEX_SUFFIX):
        return IndexLocation(http_url[: -len(_V2_INDEX_SUFFIX)], "v2", http_url, None)
    raise FormatError(
        "catalogue",
        f"{url!r} is neither a v3 index blob (.../blobs/sha256/xx/<sha256>) "
        "nor a v2 index (.../build_cache/index.json)",
    )


def blob_url(mirror_root: str, algorithm: str, checksum: str) -> str:
    """``<root>/blobs/<algorithm>/<first two hex>/<checksum>``; nothing else can come out."""
    length = DIGEST_LENGTHS.get(algorithm)
    if length is None or not is_lower_hex(checksum, length):
        raise FormatError(
            "blob address", f"{algorithm[:20]!r}/{checksum[:80]!r} is not a known digest"
        )
    return join_url(mirror_root, f"blobs/{algorithm}/{checksum[:2]}/{checksum}")
