"""A build cache index read for copying (FORMATS.md section 4): install records kept verbatim.

A local copy publishes an index whose install records are upstream's, byte for
byte; only which records it holds differs. So each record stays raw JSON, and
only what selecting and walking the dependency graph needs is decoded beside it:
name, version, architecture, ``in_buildcache`` and each dependency's hash and
types (``parameters.deptypes`` in databases v7 to v9, ``type`` in v6).
:meth:`RawInstall.listing` is the one change a copy makes to a record: a spec it
lists without holding its binary says ``in_buildcache: false``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import msgspec

from mirrorsync.errors import FormatError
from mirrorsync.formats._common import decode_problem, is_spec_hash

#: Dependency types a binary needs at run time: a copy brings these, never ``build`` only.
RUNTIME_DEPTYPES = frozenset({"link", "run"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_+.-]")


class _DepParameters(msgspec.Struct):
    deptypes: list[str] = []


class _Dependency(msgspec.Struct):
    hash: str = ""
    parameters: _DepParameters | None = None
    type: list[str] | None = None  # database v6


class _Target(msgspec.Struct):
    name: str = ""


class _Arch(msgspec.Struct):
    platform: str = ""
    platform_os: str = ""
    target: str | _Target = ""


class _Node(msgspec.Struct):
    name: str = ""
    version: str = ""
    arch: _Arch | None = None
    dependencies: list[_Dependency] = []


class _Install(msgspec.Struct):
    spec: _Node
    in_buildcache: bool = False


class _Database(msgspec.Struct):
    installs: dict[str, msgspec.Raw]
    version: str | int = ""


class _Document(msgspec.Struct):
    database: _Database


_DOC = msgspec.json.Decoder(_Document)
_INSTALL = msgspec.json.Decoder(_Install)


@dataclass(frozen=True, slots=True)
class RawInstall:
    """One install record of an index: upstream's JSON, and what selection needs of it."""

    hash: str
    raw: bytes  # the record's JSON exactly as upstream wrote it
    name: str
    version: str
    platform: str
    os: str
    target: str
    in_buildcache: bool
    runtime_deps: tuple[str, ...]  # hashes of link and run dependencies
    other_deps: tuple[str, ...] = ()  # hashes of every other dependency (build-only, test)

    def listing(self) -> RawInstall:
        """This record as a copy lists a spec whose binary it does not hold: upstream's
        record with ``in_buildcache: false`` (unchanged when it already says so)."""
        if not self.in_buildcache:
            return self
        record = msgspec.json.decode(self.raw)
        record["in_buildcache"] = False
        return replace(self, raw=msgspec.json.encode(record), in_buildcache=False)

    @property
    def manifest_path(self) -> str:
        """Where Spack keeps this spec's manifest, with Spack's safe file names."""
        name = polite_filename(self.name)
        stem = f"{name}-{polite_filename(self.version)}-{self.hash}"
        return f"v3/manifests/spec/{name}/{stem}.spec.manifest.json"


@dataclass(frozen=True, slots=True)
class RawIndex:
    db_version: str  # as the document spells it ("8")
    installs: dict[str, RawInstall]


def polite_filename(text: str) -> str:
    """Spack's ``polite_filename``: every character outside ``[A-Za-z0-9_+.-]`` becomes ``_``."""
    return _UNSAFE.sub("_", text)


def parse_raw_index(data: bytes | memoryview, url: str | None = None) -> RawIndex:
    """Every install record of an index, raw, with its selection fields decoded.

    FormatError for invalid JSON or malformed hashes. A name or version that
    would not make a file name inside a copy (``..``, ``a/b``, empty) is kept as
    it is: the copy leaves that one spec out (``mirrors.admit.path_safe``), never
    building a path from it.
    """
    try:
        document = _DOC.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise FormatError("build cache index", decode_problem(exc, data), url) from None
    version = str(document.database.version)
    if not version.isdigit():
        raise FormatError("build cache index", f"database version {version[:20]!r}", url)
    installs: dict[str, RawInstall] = {}
    for spec_hash, raw in document.database.installs.items():
        if not is_spec_hash(spec_hash):
            raise FormatError(
                "build cache index", f"install key {spec_hash[:40]!r} is not a spec hash", url
            )
        try:
            install = _INSTALL.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            problem = f"install {spec_hash}: {decode_problem(exc, raw)}"
            raise FormatError("build cache index", problem, url) from None
        node = install.spec  # an unusable name is the copy's to leave out (mirrors/admit.py)
        arch = node.arch or _Arch()
        target = arch.target if isinstance(arch.target, str) else arch.target.name
        deps: list[str] = []
        other: list[str] = []
        for d in node.dependencies:
            types = d.parameters.deptypes if d.parameters is not None else d.type or ()
            (deps if RUNTIME_DEPTYPES.intersection(types) else other).append(d.hash)
        installs[spec_hash] = RawInstall(
            spec_hash,
            bytes(raw),
            node.name,
            node.version,
            arch.platform,
            arch.platform_os,
            target,
            install.in_buildcache,
            tuple(deps),
            tuple(other),
        )
    return RawIndex(version, installs)


def render_index(db_version: str, records: list[RawInstall]) -> bytes:
    """An index document holding exactly ``records``, each one's JSON unchanged, by hash."""
    parts = [
        b'{"database":{"version":',
        msgspec.json.encode(db_version),
        b',"installs":{',
        b",".join(
            msgspec.json.encode(r.hash) + b":" + r.raw
            for r in sorted(records, key=lambda r: r.hash)
        ),
        b"}}}",
    ]
    return b"".join(parts)
