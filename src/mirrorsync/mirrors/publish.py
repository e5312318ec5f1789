"""Publishing a copy's index last, and deleting last and late.

The index blob is written first, then the index manifest replaces the old one
as a whole (a rename in a directory, one PUT in an object store): before it, readers see the old index (whose files are all still
there, since nothing is deleted before a publish); after it, the new one, whose
files were all put in place before. Deletions come after, and only for files
the published index does not reference, once ``delete_after`` has passed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

from mirrorsync.errors import CopyError, FormatError
from mirrorsync.formats.manifest import (
    DB_MEDIA_PREFIX,
    parse_index_manifest,
    parse_manifest,
    spec_manifest_records,
)
from mirrorsync.formats.rawindex import RawInstall, parse_raw_index, render_index
from mirrorsync.formats.specfile import (
    KEY_INDEX_MEDIA_PREFIX,
    PUBLIC_KEY_MEDIA_TYPE,
    parse_key_index,
    v3_key_manifest,
)
from mirrorsync.mirrors.admit import path_safe
from mirrorsync.mirrors.download import manifest_bytes
from mirrorsync.mirrors.layout import INDEX_MANIFEST, KEY_INDEX_MANIFEST, LAYOUT, blob_relpath
from mirrorsync.mirrors.target import CopyTarget, TargetView

log = logging.getLogger("mirrorsync.mirror")


@dataclass(frozen=True, slots=True)
class IndexFile:
    checksum: str
    data: bytes
    manifest: bytes


def build_index(db_version: str, records: list[RawInstall]) -> IndexFile:
    return index_file(db_version, render_index(db_version, records))


def index_file(db_version: str, data: bytes) -> IndexFile:
    """An index blob and the manifest that names it, as Spack writes them."""
    checksum = hashlib.sha256(data).hexdigest()
    media_type = f"{DB_MEDIA_PREFIX}.v{db_version}+json"
    return IndexFile(checksum, data, manifest_bytes(len(data), media_type, "sha256", checksum))


def published_checksum(view: TargetView) -> str | None:
    """The index blob checksum the copy's index manifest names now (None: no index yet)."""
    data = view.read(INDEX_MANIFEST)
    if data is None:
        return None
    try:
        return parse_index_manifest(data, view.where(INDEX_MANIFEST)).checksum
    except FormatError:
        return None


async def publish(target: CopyTarget, index: IndexFile) -> None:
    """Write the index blob, then replace the index manifest naming it: LAST."""
    await target.publish_index(blob_relpath("sha256", index.checksum), index.data, index.manifest)


@dataclass
class Referenced:
    """Every file the published index references, with its size."""

    sizes: dict[str, int] = field(default_factory=dict)
    binaries: set[str] = field(default_factory=set)

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


def referenced(view: TargetView, index_checksum: str | None = None) -> Referenced:
    """Read the published state back from the copy: index, manifests, blobs, keys, layout.

    CopyError if the published index names a file that is not there (never
    the case for a copy only mirrorsync writes). ``index_checksum``: the state of
    that index blob instead (its index manifest not counted): one being imported
    before its manifest is put in place, or an earlier version's still on disk.
    """
    out = Referenced()

    def need(rel: str) -> bytes:
        data = view.read(rel)
        if data is None:
            raise CopyError(f"{view.where(rel)}: missing, yet the published index references it")
        out.sizes[rel] = len(data)
        return data

    def blob(rel: str, length: int) -> None:
        if view.size(rel) != length:
            raise CopyError(f"{view.where(rel)}: missing or of the wrong size, yet referenced")
        out.sizes[rel] = length

    if view.size(LAYOUT) is not None:
        need(LAYOUT)
    if index_checksum is not None:  # bundle import: the state about to be published
        index_rel = blob_relpath("sha256", index_checksum)
    else:
        manifest = view.read(INDEX_MANIFEST)
        if manifest is None:
            return out
        out.sizes[INDEX_MANIFEST] = len(manifest)
        record = parse_index_manifest(manifest, view.where(INDEX_MANIFEST))
        index_rel = blob_relpath(record.checksum_algorithm, record.checksum)
    index = parse_raw_index(need(index_rel), view.where(index_rel))
    for install in index.installs.values():
        if not install.in_buildcache:
            continue
        if not path_safe(install):  # never ours: the directory was written by another
            raise CopyError(f"{view.where(index_rel)}: names a spec no copy would list")
        out.binaries.add(install.hash)
        data = need(install.manifest_path)
        _, _, spec_manifest = spec_manifest_records(data, view.where(install.manifest_path))
        for r in spec_manifest.data:
            blob(blob_relpath(r.checksum_algorithm, r.checksum), r.content_length)
    keys = view.read(KEY_INDEX_MANIFEST)
    if keys is not None:
        out.sizes[KEY_INDEX_MANIFEST] = len(keys)
        key_index = parse_manifest(keys, KEY_INDEX_MANIFEST, "key index manifest")
        for r in key_index.data:
            if r.media_type.startswith(KEY_INDEX_MEDIA_PREFIX):
                rel = blob_relpath(r.checksum_algorithm, r.checksum)
                for fingerprint in parse_key_index(need(rel), rel):
                    key_rel = v3_key_manifest(fingerprint)
                    key_manifest = parse_manifest(need(key_rel), key_rel, "key manifest")
                    for k in key_manifest.data:
                        if k.media_type == PUBLIC_KEY_MEDIA_TYPE:
                            blob(blob_relpath(k.checksum_algorithm, k.checksum), k.content_length)
    return out


@dataclass
class Pruned:
    deleted: int = 0
    deleted_bytes: int = 0
    waiting: int = 0  # unreferenced, kept until delete_after has passed
    waiting_bytes: int = 0


def unreferenced(present: dict[str, int], keep: Referenced) -> dict[str, int]:
    """Objects under the copy's own parts (``present``: ``target.inventory()``) that the
    published index does not reference."""
    return {rel: size for rel, size in present.items() if rel not in keep.sizes}


def due(since: dict[str, str], now: datetime, delete_after: float) -> list[str]:
    """The orphans whose grace period is over."""
    out = []
    for rel, when in since.items():
        then = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=now.tzinfo)
        if (now - then).total_seconds() >= delete_after:
            out.append(rel)
    return out
