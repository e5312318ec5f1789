"""The build cache index: a Spack database in JSON (FORMATS.md section 4).

Real indexes hold ~100,000 installs in ~150 MB. They are decoded straight into
small typed structs with msgspec; every field mirrorsync does not use (dependency
lists, target feature lists, package hashes...) is skipped by the decoder rather
than materialised. Variant parameters stay as raw JSON until a spec is new to
the database, so unchanged specs cost nothing beyond their hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from mirrorsync.errors import FormatError
from mirrorsync.formats._common import decode_problem, is_spec_hash

#: Parameters that are compiler flags, not variants (left out of variant lists).
FLAG_PARAMETERS = frozenset({"cflags", "cppflags", "cxxflags", "fflags", "ldflags", "ldlibs"})


class Target(msgspec.Struct):
    name: str


class Arch(msgspec.Struct):
    platform: str = ""
    platform_os: str = ""
    target: str | Target = ""


class Compiler(msgspec.Struct):
    name: str
    version: str


class SpecNode(msgspec.Struct):
    name: str
    version: str = ""
    arch: Arch | None = None
    compiler: Compiler | None = None
    parameters: msgspec.Raw = msgspec.Raw(b"{}")
    hash: str = ""


class Install(msgspec.Struct):
    spec: SpecNode
    in_buildcache: bool = False


class _Database(msgspec.Struct):
    installs: dict[str, Install]
    version: str | int = ""


class _IndexDocument(msgspec.Struct):
    database: _Database


_DECODER = msgspec.json.Decoder(_IndexDocument)
_PARAMS_DECODER = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class SpecInfo:
    """What mirrorsync keeps about one spec: the columns of the ``specs`` table."""

    hash: str
    name: str
    version: str
    platform: str
    os: str
    target: str
    compiler: str | None
    variants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Index:
    """The cached specs of one build cache index, by hash."""

    db_version: int
    installs: dict[str, Install]
    # Many specs share their parameters verbatim: render each distinct set once.
    _variants: dict[bytes, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @property
    def hashes(self) -> frozenset[str]:
        return frozenset(self.installs)

    def __len__(self) -> int:
        return len(self.installs)

    def info(self, spec_hash: str) -> SpecInfo:
        node = self.installs[spec_hash].spec
        raw = bytes(node.parameters)
        variants = self._variants.get(raw)
        if variants is None:
            variants = self._variants[raw] = variants_from_parameters(_decode_parameters(raw))
        return spec_info(spec_hash, node, variants)

    def infos(self, hashes: Iterable[str]) -> Iterator[SpecInfo]:
        for h in hashes:
            yield self.info(h)


def parse_index(data: bytes | bytearray | memoryview, url: str | None = None) -> Index:
    """Decode an index document, keeping only installs with ``in_buildcache: true``.

    Raises FormatError for invalid JSON, wrong shapes and malformed hashes.
    """
    try:
        document = _DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # ValidationError is a DecodeError
        raise FormatError("build cache index", decode_problem(exc), url) from None
    database = document.database
    try:
        db_version = int(database.version) if database.version != "" else 0
    except ValueError:
        raise FormatError(
            "build cache index", f"database version {database.version!r} is not a number", url
        ) from None
    cached: dict[str, Install] = {}
    for spec_hash, install in database.installs.items():
        if not is_spec_hash(spec_hash):
            raise FormatError(
                "build cache index", f"install key {spec_hash[:40]!r} is not a spec hash", url
            )
        if install.spec.hash and install.spec.hash != spec_hash:
            raise FormatError(
                "build cache index",
                f"install {spec_hash} holds a spec whose hash is {install.spec.hash[:40]!r}",
                url,
            )
        if not install.spec.name:
            raise FormatError("build cache index", f"install {spec_hash} has no name", url)
        if install.in_buildcache:
            cached[spec_hash] = install
    return Index(db_version=db_version, installs=cached)


def spec_info(spec_hash: str, node: SpecNode, variants: tuple[str, ...]) -> SpecInfo:
    arch = node.arch or _NO_ARCH
    target = arch.target
    compiler = node.compiler
    # Positional: this runs once per new spec, 100,000 times on a first sync.
    return SpecInfo(
        spec_hash,
        node.name,
        node.version,
        arch.platform,
        arch.platform_os,
        target if isinstance(target, str) else target.name,
        None if compiler is None else f"{compiler.name}@={compiler.version}",
        variants,
    )


_NO_ARCH = Arch()


def _decode_parameters(raw: bytes) -> dict[str, Any]:
    try:
        return _PARAMS_DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return {}


def variants_from_parameters(parameters: dict[str, Any]) -> tuple[str, ...]:
    """Render parameters as cache.spack.io does: sorted by name, flags left out.

    ``True`` -> ``+name``, ``False`` -> ``~name``, a string -> ``name=value``,
    a list -> ``name=v1,v2``.
    """
    out: list[str] = []
    for name in sorted(parameters):
        if name in FLAG_PARAMETERS:
            continue
        value = parameters[name]
        if value is True:
            out.append(f"+{name}")
        elif value is False:
            out.append(f"~{name}")
        elif isinstance(value, list):
            out.append(f"{name}={','.join(str(v) for v in value)}")
        else:
            out.append(f"{name}={value}")
    return tuple(out)
