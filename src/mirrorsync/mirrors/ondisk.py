"""The cheap check of a published copy on disk (``status``, ``status --check``).

Apart from the copy machinery (``check``, ``run``): it reads a copy's index
manifest, the size of the index blob it names and whether ``layout.json`` is there,
through :mod:`mirrorsync.mirrors.layout` alone (never through a link).

What an index manifest names (its index blob's checksum and length) is read by the
one parser, ``formats.manifest.parse_index_manifest``, whose msgspec costs more to
import than the rest of ``status`` together. Its answer is a function of the
manifest's bytes, so an answer it gave is kept in the user's cache
(:mod:`mirrorsync.usercache`) under the bytes' sha256, with mirrorsync's version
and the parser's files' sizes and times: a manifest whose bytes were parsed before
is not parsed again (issue 31, start-up). Nothing else is kept: the manifest is
read, and the blob and ``layout.json`` looked at, at every check; a manifest the
parser refuses is parsed again each time (its problem names the file).
"""

from __future__ import annotations

import os

from mirrorsync import __version__
from mirrorsync.errors import CopyError, FormatError
from mirrorsync.mirrors.layout import (
    INDEX_MANIFEST,
    LAYOUT,
    blob_relpath,
    file_size,
    read_if_present,
)
from mirrorsync.usercache import code_stamp, entry_file, load, save, sha256_hex

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from pathlib import Path

#: The largest index manifest read: Spack's are a few hundred bytes.
MAX_INDEX_MANIFEST = 1 << 20
#: The cache entry of parsed index manifests, and how many of them it keeps.
ENTRY = "index-manifests"
KEPT = 64


def disk_problem(root: Path | str, index_checksum: str | None) -> str | None:
    """What is wrong with a published copy on disk, cheaply (no blob is read): None if
    its index manifest names the published index blob, there with its length, and
    ``layout.json`` is there."""
    if index_checksum is None:
        return None
    manifest_path = os.path.join(root, INDEX_MANIFEST)
    try:
        manifest = read_if_present(manifest_path, MAX_INDEX_MANIFEST)
        if manifest is None:
            return f"copy missing on disk: {manifest_path} is gone"
        try:
            checksum, length = index_named(manifest, manifest_path)
        except FormatError as exc:
            return f"copy damaged on disk: {exc}"
        if checksum != index_checksum:
            return (
                f"copy damaged on disk: {manifest_path} names index "
                f"{checksum[:12]}, the published one is {index_checksum[:12]}"
            )
        blob = os.path.join(root, blob_relpath("sha256", index_checksum))
        size = file_size(blob)
        if size is None:
            return f"copy missing on disk: its index blob {blob} is gone"
        if size != length:
            return (
                f"copy damaged on disk: its index blob {blob} is {size} bytes, "
                f"the index manifest says {length}"
            )
        if file_size(os.path.join(root, LAYOUT)) is None:
            return f"copy damaged on disk: {os.path.join(root, LAYOUT)} is gone"
    except CopyError as exc:  # cannot read (permissions), a link, not a regular file
        return f"copy unreadable on disk: {exc}"
    return None


def index_named(manifest: bytes, where: str) -> tuple[str, int]:
    """(checksum, length) of the index blob the index manifest ``manifest`` names, as
    ``parse_index_manifest`` reads it (FormatError as it raises): from the cache when
    these bytes were parsed before by this parser."""
    digest = sha256_hex(manifest)
    file = entry_file(ENTRY)  # None: the cache is off
    stamp = _parser_stamp() if file is not None else []
    known = _known(file, stamp)
    if (answer := known.get(digest)) is not None:
        return answer
    from mirrorsync.formats.manifest import parse_index_manifest

    record = parse_index_manifest(manifest, where)
    answer = (record.checksum, record.content_length)
    if file is not None and stamp:  # stamp empty: no formats directory (a zip)
        known[digest] = answer
        kept = list(known.items())[-KEPT:]  # the latest: a copy's index changes, old ones go
        save(file, {"stamp": stamp, "named": {d: [c, n] for d, (c, n) in kept}})
    return answer


def _parser_stamp() -> list[object]:
    """mirrorsync's version and each file of the formats package (name, size, time):
    an answer of another parser is not this one's. Made once a process (a status with
    several copies asks once)."""
    global _stamp
    if _stamp is None:
        _stamp = _stamp_of_formats()
    return _stamp


_stamp: list[object] | None = None


def _stamp_of_formats() -> list[object]:
    mirrorsync = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = code_stamp(mirrorsync, ("formats",))
    return [] if code is None else [__version__, *code]  # []: a zip, nothing is cached


def _known(file: str | None, stamp: list[object]) -> dict[str, tuple[str, int]]:
    """The answers kept in ``file`` for this parser (``stamp``); empty for anything
    else (no file, another parser, a damaged or foreign entry)."""
    entry = load(file) if file is not None and stamp else None
    if not isinstance(entry, dict) or entry.get("stamp") != stamp:
        return {}
    named = entry.get("named")
    if not isinstance(named, dict):
        return {}
    known: dict[str, tuple[str, int]] = {}
    for digest, answer in named.items():
        if not (isinstance(digest, str) and isinstance(answer, list) and len(answer) == 2):
            return {}
        checksum, length = answer
        if not (isinstance(checksum, str) and isinstance(length, int)):
            return {}
        known[digest] = (checksum, length)
    return known
