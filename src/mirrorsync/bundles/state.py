"""A published state of a copy as a list of files: path -> (size, sha256).

What a bundle carries is the difference of two such states: every file of the new
one that the older one did not hold with the same content. Blobs are named by
their digest, so their sha256 is their name (the export checks it as it reads
them); every other file (manifests, ``layout.json``) is small and read to hash it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import msgspec

from mirrorsync.bundles.manifest import spec_hash_of
from mirrorsync.errors import BundleError, CopyError
from mirrorsync.mirrors import files
from mirrorsync.mirrors.publish import referenced
from mirrorsync.mirrors.target import DirView

#: path -> (size, sha256)
State = dict[str, tuple[int, str]]


def _sha256(root: Path, rel: str) -> str:
    if rel.startswith("blobs/sha256/"):
        return rel.rsplit("/", 1)[1]
    digest = files.sha256_if_present(root / rel)
    if digest is None:
        raise CopyError(f"{root / rel}: missing, yet the published index references it")
    return digest


def read_state(root: Path, index_checksum: str | None = None) -> State:
    """The copy's published state (or that of the index blob ``index_checksum``, whose
    index manifest is not part of it), read from the disk."""
    found = referenced(DirView(root), index_checksum)
    return {rel: (size, _sha256(root, rel)) for rel, size in sorted(found.sizes.items())}


def binaries(state: State) -> set[str]:
    """The spec hashes whose manifests the state holds."""
    return {h for rel in state if (h := spec_hash_of(rel)) is not None}


def changed(new: State, old: State) -> State:
    """The files of ``new`` that ``old`` does not hold with the same size and content."""
    return {rel: v for rel, v in new.items() if old.get(rel) != v}


def pack(state: State) -> bytes:
    """The state as recorded with an export (compressed JSON)."""
    return zlib.compress(msgspec.json.encode({k: list(v) for k, v in state.items()}), 6)


def unpack(data: bytes) -> State:
    try:
        raw = msgspec.json.decode(zlib.decompress(data), type=dict[str, tuple[int, str]])
    except (zlib.error, msgspec.DecodeError) as exc:
        raise BundleError(f"the recorded state of an earlier export is unreadable: {exc}") from None
    return dict(raw)
