"""The bundle manifest: what a bundle of a copy holds and which versions it joins.

A pure format (no I/O): :func:`parse` reads untrusted bytes, bounded in size and in
every field, into a :class:`BundleManifest`; :meth:`BundleManifest.render` writes one.

A bundle is a tar (or a directory, ``--dir``) whose first member is ``bundle.json``
(this manifest), then optionally ``bundle.json.sig`` (a detached, armoured gpg
signature of it) and ``bundle.key.asc`` (the signer's public key), then one member
per distinct content, named ``files/<sha256>`` by its digest. The manifest lists
every file the bundle carries: its path in the copy, size, sha256, and the volume
that holds it (``--split``: numbered tar volumes, each a whole tar by itself).
Nothing else may be in a bundle.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from mirrorsync.errors import BundleError
from mirrorsync.mirrors.layout import INDEX_MANIFEST

FORMAT = "mirrorsync-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "bundle.json"
SIGNATURE_NAME = "bundle.json.sig"
KEY_NAME = "bundle.key.asc"
MEMBER_DIR = "files"

#: Bounds on what a bundle may declare (a manifest of a million files is ~200 MB).
MAX_MANIFEST_BYTES = 256 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_KEY_BYTES = 1 << 20
MAX_FILES = 2_000_000
MAX_FILE_BYTES = 1 << 44  # 16 TiB: no blob of a build cache is near it
MAX_VOLUMES = 100_000
MAX_VERSION = 1 << 62

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH = re.compile(r"^[a-z0-9]{32}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_PART = re.compile(r"^[A-Za-z0-9_+@][A-Za-z0-9_+@.-]{0,254}$")
_BLOB = re.compile(r"^blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})$")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
_VERSION_TEXT = re.compile(r"^[A-Za-z0-9 ._+-]{1,100}$")
_SPEC_MANIFEST = re.compile(r"^v3/manifests/spec/[^/]+/[^/]+-([a-z0-9]{32})\.spec\.manifest\.json$")


def member_name(sha256: str) -> str:
    """The tar member (or file under a ``--dir`` bundle) holding content ``sha256``."""
    return f"{MEMBER_DIR}/{sha256}"


def publish_order(path: str, to_index: str) -> tuple[int, str]:
    """Where a file of a copy goes in a bundle and in its import: blobs first, then spec
    manifests, other files, the index blob, the index manifest last (what it names is
    in place before it is)."""
    if path == INDEX_MANIFEST:
        return (4, path)
    if path.endswith(to_index):
        return (3, path)
    if path.startswith("blobs/"):
        return (0, path)
    return (1 if path.startswith("v3/manifests/spec/") else 2, path)


def safe_path(path: str) -> bool:
    """Whether ``path`` is a file a copy holds: under ``blobs/`` by digest or under
    ``v3/``, plain names only (never absolute, never ``..`` or a hidden name)."""
    if len(path) > 1024:
        return False
    if path.startswith("blobs/"):
        return bool(_BLOB.match(path))
    parts = path.split("/")
    return len(parts) >= 2 and parts[0] == "v3" and all(_PART.match(p) for p in parts[1:])


def spec_hash_of(path: str) -> str | None:
    """The spec hash a spec manifest's path names (None: not a spec manifest)."""
    found = _SPEC_MANIFEST.match(path)
    return found.group(1) if found else None


@dataclass(frozen=True, slots=True)
class BundleFile:
    path: str  # relative to the copy
    size: int
    sha256: str
    volume: int = 0

    def to_dict(self) -> dict[str, object]:
        """As the manifest lists it (and ``bundle list|show --json`` print it)."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "volume": self.volume}


@dataclass(frozen=True, slots=True)
class BundleManifest:
    copy: str  # the origin copy's name
    from_version: int  # 0: a full bundle, for a receiver holding nothing
    from_index: str | None  # the index checksum of from_version (None for a full bundle)
    to_version: int
    to_index: str  # the index checksum the receiver publishes
    created_by: str  # "mirrorsync X.Y.Z"
    created_at: str
    files: tuple[BundleFile, ...]
    added: tuple[str, ...] = ()  # spec hashes
    removed: tuple[str, ...] = ()
    volumes: int = 1
    state_files: int = 0  # files of to_version's state, carried or not
    state_bytes: int = 0
    members: dict[str, list[BundleFile]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for f in self.files:
            self.members.setdefault(f.sha256, []).append(f)

    @property
    def full(self) -> bool:
        return self.from_version == 0

    @property
    def size(self) -> int:
        """Bytes of content the bundle carries (each distinct content once)."""
        return sum(group[0].size for group in self.members.values())

    def in_volume(self, volume: int) -> Iterator[str]:
        """The member digests volume ``volume`` holds, in the order written."""
        seen: set[str] = set()
        for f in self.files:
            if f.volume == volume and f.sha256 not in seen:
                seen.add(f.sha256)
                yield f.sha256

    def render(self) -> bytes:
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "copy": self.copy,
            "from": {"version": self.from_version, "index": self.from_index},
            "to": {"version": self.to_version, "index": self.to_index},
            "created_by": self.created_by,
            "created_at": self.created_at,
            "volumes": self.volumes,
            "state": {"files": self.state_files, "bytes": self.state_bytes},
            "added": sorted(self.added),
            "removed": sorted(self.removed),
            "files": [f.to_dict() for f in self.files],
        }
        return msgspec.json.encode(document) + b"\n"


class _Version(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    index: str | None


class _State(msgspec.Struct, forbid_unknown_fields=True):
    files: int
    bytes: int


class _File(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    size: int
    sha256: str
    volume: int


class _Document(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    format_version: int
    copy: str
    from_: _Version = msgspec.field(name="from")
    to: _Version
    created_by: str
    created_at: str
    volumes: int
    state: _State
    added: list[str]
    removed: list[str]
    files: list[_File]


def _bad(problem: str) -> BundleError:
    return BundleError(f"{MANIFEST_NAME}: {problem}")


def parse(data: bytes) -> BundleManifest:
    """A bundle manifest from untrusted bytes; BundleError (one line naming the field)
    if it is not one this mirrorsync writes."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise _bad(f"larger than {MAX_MANIFEST_BYTES >> 20} MiB, not a bundle manifest")
    try:
        head = msgspec.json.decode(data, type=dict[str, object])
    except msgspec.DecodeError as exc:
        raise _bad(f"not a bundle manifest: {exc}") from None
    if head.get("format") != FORMAT:
        raise _bad(f"not a mirrorsync bundle (format {str(head.get('format'))[:40]!r})")
    if head.get("format_version") != FORMAT_VERSION:
        raise _bad(
            f"format_version {str(head.get('format_version'))[:20]} is not {FORMAT_VERSION}: "
            "made by another mirrorsync; import it with that version"
        )
    try:
        doc = msgspec.json.decode(data, type=_Document)
    except msgspec.ValidationError as exc:
        raise _bad(str(exc)) from None
    if not _NAME.match(doc.copy):
        raise _bad("copy: not a copy name")
    if not _VERSION_TEXT.match(doc.created_by) or not _TIME.match(doc.created_at):
        raise _bad("created_by or created_at malformed")
    for what, v in (("from", doc.from_), ("to", doc.to)):
        if not 0 <= v.version < MAX_VERSION:
            raise _bad(f"{what}.version out of range")
        if v.index is not None and not _SHA256.match(v.index):
            raise _bad(f"{what}.index: not a sha256")
    if doc.to.index is None or doc.to.version < 1:
        raise _bad("to: a bundle joins a published version (version 1 or later, an index)")
    if doc.from_.version >= doc.to.version:
        raise _bad(f"from.version {doc.from_.version} is not below to.version {doc.to.version}")
    if (doc.from_.version == 0) != (doc.from_.index is None):
        raise _bad("from: a full bundle (version 0) names no index, an incremental one does")
    if not 1 <= doc.volumes <= MAX_VOLUMES:
        raise _bad("volumes out of range")
    if not (0 <= doc.state.files <= MAX_FILES and 0 <= doc.state.bytes < MAX_VERSION):
        raise _bad("state.files or state.bytes out of range")  # printed by 'bundle show'
    if len(doc.files) > MAX_FILES or len(doc.added) > MAX_FILES or len(doc.removed) > MAX_FILES:
        raise _bad(f"more than {MAX_FILES} entries")
    for h in (*doc.added, *doc.removed):
        if not _HASH.match(h):
            raise _bad(f"added/removed: {h[:40]!r} is not a spec hash")
    seen: set[str] = set()
    files: list[BundleFile] = []
    for i, f in enumerate(doc.files):
        where = f"files[{i}]"
        if not safe_path(f.path):
            raise _bad(f"{where}.path {f.path[:200]!r}: not a file of a copy")
        if f.path in seen:
            raise _bad(f"{where}.path {f.path!r} listed twice")
        seen.add(f.path)
        if not _SHA256.match(f.sha256):
            raise _bad(f"{where}.sha256: not a sha256")
        if not 0 <= f.size <= MAX_FILE_BYTES:
            raise _bad(f"{where}.size out of range")
        if not 0 <= f.volume < doc.volumes:
            raise _bad(f"{where}.volume out of range")
        blob = _BLOB.match(f.path)
        if blob and (blob.group(2) != f.sha256 or blob.group(1) != f.sha256[:2]):
            raise _bad(f"{where}: blob {f.path} is named by another digest than its sha256")
        files.append(BundleFile(f.path, f.size, f.sha256, f.volume))
    if INDEX_MANIFEST not in seen:
        raise _bad("the index manifest of the new version is not in the bundle")
    if f"blobs/sha256/{doc.to.index[:2]}/{doc.to.index}" not in seen:
        raise _bad("the index of the new version is not in the bundle")
    manifest = BundleManifest(
        copy=doc.copy,
        from_version=doc.from_.version,
        from_index=doc.from_.index,
        to_version=doc.to.version,
        to_index=doc.to.index,
        created_by=doc.created_by,
        created_at=doc.created_at,
        files=tuple(files),
        added=tuple(doc.added),
        removed=tuple(doc.removed),
        volumes=doc.volumes,
        state_files=doc.state.files,
        state_bytes=doc.state.bytes,
    )
    for digest, group in manifest.members.items():
        if len({f.size for f in group}) != 1 or len({f.volume for f in group}) != 1:
            raise _bad(f"files with sha256 {digest} differ in size or volume")
    return manifest
