"""The cheap check of a published copy on disk (``status``, ``status --check``).

Apart from the copy machinery (``check``, ``run``): ``status`` reads a copy's
index manifest, its blob's length and ``layout.json`` without importing the
fetch, sync and delivery chain.
"""

from __future__ import annotations

from pathlib import Path

from mirrorsync.errors import CopyError, FormatError
from mirrorsync.formats.manifest import parse_index_manifest
from mirrorsync.mirrors import files
from mirrorsync.mirrors.files import INDEX_MANIFEST, LAYOUT, blob_relpath


def disk_problem(root: Path, index_checksum: str | None) -> str | None:
    """What is wrong with a published copy on disk, cheaply (no blob is read): None if
    its index manifest names the published index blob, there with its length, and
    ``layout.json`` is there."""
    if index_checksum is None:
        return None
    try:
        manifest = files.read_if_present(root / INDEX_MANIFEST)
        if manifest is None:
            return f"copy missing on disk: {root / INDEX_MANIFEST} is gone"
        try:
            record = parse_index_manifest(manifest, str(root / INDEX_MANIFEST))
        except FormatError as exc:
            return f"copy damaged on disk: {exc}"
        if record.checksum != index_checksum:
            return (
                f"copy damaged on disk: {root / INDEX_MANIFEST} names index "
                f"{record.checksum[:12]}, the published one is {index_checksum[:12]}"
            )
        blob = root / blob_relpath("sha256", index_checksum)
        size = files.file_size(blob)
        if size is None:
            return f"copy missing on disk: its index blob {blob} is gone"
        if size != record.content_length:
            return (
                f"copy damaged on disk: its index blob {blob} is {size} bytes, "
                f"the index manifest says {record.content_length}"
            )
        if files.file_size(root / LAYOUT) is None:
            return f"copy damaged on disk: {root / LAYOUT} is gone"
    except CopyError as exc:  # cannot read (permissions)
        return f"copy unreadable on disk: {exc}"
    return None
