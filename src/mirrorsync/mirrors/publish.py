"""Publishing a copy's index last, and deleting last and late.

The index blob is written first, then the index manifest replaces the old one
in one rename: before it, readers see the old index (whose files are all still
there, since nothing is deleted before a publish); after it, the new one, whose
files were all put in place before. Deletions come after, and only for files
the published index does not reference, once ``delete_after`` has passed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

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
from mirrorsync.mirrors import files
from mirrorsync.mirrors.admit import path_safe
from mirrorsync.mirrors.download import manifest_bytes
from mirrorsync.mirrors.files import INDEX_MANIFEST, KEY_INDEX_MANIFEST, LAYOUT, blob_relpath

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


def published_checksum(root: Path) -> str | None:
    """The index blob checksum the copy's index manifest names now (None: no index yet)."""
    data = files.read_if_present(root / INDEX_MANIFEST)
    if data is None:
        return None
    try:
        return parse_index_manifest(data, str(root / INDEX_MANIFEST)).checksum
    except FormatError:
        return None


def publish(root: Path, index: IndexFile, modes: files.Modes) -> None:
    """Write the index blob, then atomically replace the index manifest naming it."""
    blob = root / blob_relpath("sha256", index.checksum)
    if files.size_of(blob) != len(index.data):
        files.write_atomic(blob, index.data, modes)
    files.write_atomic(root / INDEX_MANIFEST, index.manifest, modes)


@dataclass
class Referenced:
    """Every file the published index references, with its size."""

    sizes: dict[str, int] = field(default_factory=dict)
    binaries: set[str] = field(default_factory=set)

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


def referenced(root: Path, index_checksum: str | None = None) -> Referenced:
    """Read the published state back from the copy: index, manifests, blobs, keys, layout.

    CopyError if the published index names a file that is not there (never
    the case for a copy only mirrorsync writes). ``index_checksum``: the state of
    that index blob instead (its index manifest not counted): one being imported
    before its manifest is put in place, or an earlier version's still on disk.
    """
    out = Referenced()

    def need(rel: str) -> bytes:
        data = files.read_if_present(root / rel)
        if data is None:
            raise CopyError(f"{root / rel}: missing, yet the published index references it")
        out.sizes[rel] = len(data)
        return data

    def blob(rel: str, length: int) -> None:
        if files.size_of(root / rel) != length:
            raise CopyError(f"{root / rel}: missing or of the wrong size, yet referenced")
        out.sizes[rel] = length

    for rel in (LAYOUT,):
        if (root / rel).exists():
            need(rel)
    if index_checksum is not None:
        index_rel = blob_relpath("sha256", index_checksum)
    else:
        manifest = files.read_if_present(root / INDEX_MANIFEST)
        if manifest is None:
            return out
        out.sizes[INDEX_MANIFEST] = len(manifest)
        record = parse_index_manifest(manifest, str(root / INDEX_MANIFEST))
        index_rel = blob_relpath(record.checksum_algorithm, record.checksum)
    index = parse_raw_index(need(index_rel), str(root / index_rel))
    for install in index.installs.values():
        if not install.in_buildcache:
            continue
        if not path_safe(install):  # never ours: the directory was written by another
            raise CopyError(f"{root / index_rel}: names a spec no copy would list")
        out.binaries.add(install.hash)
        data = need(install.manifest_path)
        _, _, spec_manifest = spec_manifest_records(data, str(root / install.manifest_path))
        for r in spec_manifest.data:
            blob(blob_relpath(r.checksum_algorithm, r.checksum), r.content_length)
    keys = files.read_if_present(root / KEY_INDEX_MANIFEST)
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


def unreferenced(root: Path, keep: Referenced) -> dict[str, int]:
    """Files under the copy's own parts that the published index does not reference."""
    out: dict[str, int] = {}
    for rel, path in files.walk(root):
        if rel in keep.sizes or path.name.endswith(files.TEMP_SUFFIX):
            continue
        size = files.size_of(path)
        if size is not None:
            out[rel] = size
    return out


def due(since: dict[str, str], now: datetime, delete_after: float) -> list[str]:
    """The orphans whose grace period is over."""
    out = []
    for rel, when in since.items():
        then = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=now.tzinfo)
        if (now - then).total_seconds() >= delete_after:
            out.append(rel)
    return out


def delete(root: Path, rels: list[str]) -> int:
    """Delete files of the copy (never outside it); returns the count deleted."""
    count = 0
    for rel in rels:
        path = root / rel
        try:
            path.unlink()
            count += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CopyError(f"{path}: cannot delete: {exc.strerror or exc}") from None
        parent = path.parent
        while parent != root and parent.name not in files.OWNED:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent
    return count
