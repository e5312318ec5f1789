"""The build cache index: a Spack database in JSON (FORMATS.md section 4).

Real indexes hold ~100,000 installs in ~150 MB. They are decoded straight into
small typed structs with msgspec; every field mirrorsync does not use (dependency
lists, target feature lists, package hashes...) is skipped by the decoder rather
than materialised. Variant parameters stay as raw JSON until a spec is new to
the database, so unchanged specs cost nothing beyond their hash.

A resync, where few specs are new, parses with ``lazy=True``: each spec node
stays raw JSON until :meth:`Index.info` asks for it, which halves the decoding
of a 100,000-spec index (0.28 s instead of 0.55 s). A first sync decodes every
node at once, which is faster than one at a time (0.55 s against 0.85 s).
"""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

import msgspec

from mirrorsync.errors import FormatError, UnsupportedFormatError
from mirrorsync.formats._common import (
    MAX_LABEL,
    MAX_VARIANT,
    as_format_error,
    canonical_compiler,
    compiler_text,
    decode_problem,
    is_spec_hash,
    label_problem,
    parser,
    register,
    repeated_key,
    shown,
)

#: Database versions mirrorsync reads (FORMATS.md section 4): Spack 0.17 to 1.3.
DB_VERSIONS = (6, 7, 8, 9)

#: The virtuals a compiler dependency provides, in Spack's order of preference.
COMPILER_LANGUAGES = ("c", "cxx", "fortran")
#: Parameters that are compiler flags, not variants (left out of variant lists).
FLAG_PARAMETERS = frozenset({"cflags", "cppflags", "cxxflags", "fflags", "ldflags", "ldlibs"})


#: A name, version, architecture or compiler: its length is checked by the decoder.
Label = Annotated[str, msgspec.Meta(max_length=MAX_LABEL)]


class Target(msgspec.Struct, gc=False):
    name: Label


class Arch(msgspec.Struct, gc=False):
    platform: Label = ""
    platform_os: Label = ""
    target: Label | Target = ""


class Compiler(msgspec.Struct, gc=False):
    name: Label
    version: Label


class Annotations(msgspec.Struct, gc=False):
    compiler: str | None = None  # database v8/v9 nodes converted from older specs: "gcc@=10.2.1"


class DependencyParameters(msgspec.Struct, gc=False):
    virtuals: tuple[str, ...] = ()


class Dependency(msgspec.Struct, gc=False):
    hash: str = ""  # its name comes from its own node, needed only for a compiler
    parameters: DependencyParameters | None = None


class SpecNode(msgspec.Struct, gc=False):
    name: Label
    version: Label = ""
    arch: Arch | None = None
    compiler: Compiler | None = None  # database v6/v7 only
    parameters: msgspec.Raw = msgspec.Raw(b"{}")
    annotations: Annotations | None = None
    # Raw until a compiler is looked for (``Index._compiler``): decoded up front, the
    # ~6 dependencies of 100,000 nodes held 130 MB more through a first sync.
    dependencies: msgspec.Raw = msgspec.Raw(b"[]")
    hash: str = ""


class _NameVersion(msgspec.Struct, gc=False):
    """Just what a compiler's own node contributes: its name and version."""

    name: str = ""
    version: str = ""


S = TypeVar("S", SpecNode, msgspec.Raw)


class _Decoded(threading.local):
    """Install records decoded by this thread's current parse, duplicates included."""

    installs = 0


_DECODED = _Decoded()


class Install(msgspec.Struct, Generic[S], gc=False):
    spec: S  # decoded, or raw JSON for a lazy parse
    in_buildcache: bool = False

    def __post_init__(self) -> None:
        # JSON decoders keep the last of two equal keys: counting every record
        # decoded finds a hash listed twice at no measurable cost (~10 ms per
        # 100,000 installs), without a second pass over the document.
        _DECODED.installs += 1


class _Database(msgspec.Struct, Generic[S]):
    installs: dict[str, Install[S]]
    version: str | int = ""


class _IndexDocument(msgspec.Struct, Generic[S]):
    database: _Database[S]


_DECODER = msgspec.json.Decoder(_IndexDocument[SpecNode])
_RAW_DECODER = msgspec.json.Decoder(_IndexDocument[msgspec.Raw])
_NODE_DECODER = msgspec.json.Decoder(SpecNode)
_NAME_VERSION_DECODER = msgspec.json.Decoder(_NameVersion)
# A list since spec format v2; the older name-keyed form names no virtuals.
_DEPENDENCIES_DECODER = msgspec.json.Decoder(tuple[Dependency, ...] | dict[str, msgspec.Raw])
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


class SpecName(msgspec.Struct, frozen=True, gc=False):
    """A spec the database holds already, as an index lists it: its hash, name and
    version, all the store needs to check that it is the spec it stored.

    A msgspec struct, not a frozen dataclass: a first sync of a release makes
    ~420,000 of them, and a frozen dataclass takes ten times as long to make
    (each field set through ``object.__setattr__``; 5% of the sync's GIL time)."""

    hash: str
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class Index:
    """The cached specs of one build cache index: spec nodes by hash, decoded
    or (``parse_index(lazy=True)``) still raw JSON."""

    db_version: int
    nodes: dict[str, SpecNode | msgspec.Raw]
    url: str | None = None
    #: Installs listed with ``in_buildcache: false`` (externals, dependencies not
    #: pushed): not binaries in the cache, but part of the index, e.g. a
    #: compiler whose version names the specs it built.
    uncached: dict[str, SpecNode | msgspec.Raw] = field(default_factory=dict)
    #: Whether any string of the document can hold a control character: if not,
    #: labels need no search for one (``_may_hold_controls``).
    controls: bool = True
    # Many specs share their parameters verbatim: render each distinct set once.
    _variants: dict[bytes, tuple[str, ...]] = field(default_factory=dict, repr=False)
    # ...and each compiler node's text once: compiler hash -> "gcc@13.2.0" (None: not listed).
    _compilers: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def hashes(self) -> frozenset[str]:
        return frozenset(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def info(self, spec_hash: str) -> SpecInfo:
        """What the database keeps of one spec. A raw node is decoded and checked
        now: FormatError (naming the index URL) if it is not a usable spec."""
        try:
            return self._info(spec_hash)
        except Exception as exc:  # the parser contract (formats._common.parser)
            raw = self.nodes.get(spec_hash)
            data = raw if isinstance(raw, msgspec.Raw) else b""
            raise as_format_error("build cache index", exc, memoryview(data), self.url) from None

    def _info(self, spec_hash: str) -> SpecInfo:
        node = self.nodes[spec_hash]
        if isinstance(node, msgspec.Raw):
            raw_node = node
            try:
                node = _NODE_DECODER.decode(raw_node)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                problem = _node_problem(spec_hash, exc, raw_node)
                raise FormatError("build cache index", problem, self.url) from None
            _check_node(spec_hash, node, self.url, self.controls)
        raw = bytes(node.parameters)
        variants = self._variants.get(raw)
        if variants is None:
            variants = variants_from_parameters(_decode_parameters(raw))
            _check_variants(spec_hash, variants, self.url)
            self._variants[raw] = variants
        made = self._compiler(node)  # from annotations or a dependency's name and version
        bad = None if made is None else label_problem(made)
        if bad is not None:
            raise FormatError(
                "build cache index",
                f"install {spec_hash}: compiler {shown(made or '')} {bad}",
                self.url,
            )
        return spec_info(spec_hash, node, variants, made)

    def _compiler(self, node: SpecNode) -> str | None:
        """The node's compiler in canonical text (FORMATS.md section 4): its
        ``compiler`` (database v6/v7), ``annotations.compiler``, or the version of
        the dependency providing ``c``, else ``cxx``, else ``fortran`` (v8/v9)."""
        if node.compiler is not None:
            return compiler_text(node.compiler.name, node.compiler.version)
        if node.annotations is not None and node.annotations.compiler:
            return canonical_compiler(node.annotations.compiler)
        try:
            dependencies = _DEPENDENCIES_DECODER.decode(node.dependencies)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            problem = f"install {node.hash}: dependencies {decode_problem(exc, node.dependencies)}"
            raise FormatError("build cache index", problem, self.url) from None
        if not isinstance(dependencies, tuple):  # the older name-keyed form names no virtuals
            return None
        chosen: Dependency | None = None
        rank = len(COMPILER_LANGUAGES)
        for dep in dependencies:  # one pass: most provide nothing
            params = dep.parameters
            if params is None or not params.virtuals:
                continue
            for i in range(rank):
                if COMPILER_LANGUAGES[i] in params.virtuals:
                    chosen, rank = dep, i
                    break
            if rank == 0:
                break
        if chosen is None:
            return None
        text = self._compilers.get(chosen.hash, "")
        if text == "":
            text = self._compilers[chosen.hash] = self._compiler_node_text(chosen.hash)
        return text

    def _compiler_node_text(self, spec_hash: str) -> str | None:
        """``name@version`` of a compiler's own node; None if the index lacks it
        (Spack skips a dependency missing from the database too)."""
        node: SpecNode | _NameVersion | msgspec.Raw | None
        node = self.nodes.get(spec_hash) or self.uncached.get(spec_hash)
        if isinstance(node, msgspec.Raw):
            try:
                node = _NAME_VERSION_DECODER.decode(node)
            except (msgspec.DecodeError, UnicodeDecodeError):
                return None
        if node is None or not node.name or not node.version:
            return None
        return compiler_text(node.name, node.version)

    def named(self, spec_hash: str) -> SpecName:
        """The name and version a node gives, for a spec the database holds already:
        only those two fields are decoded (its other fields were checked when it
        was first stored, and a hash names its content)."""
        node = self.nodes[spec_hash]
        if isinstance(node, SpecNode):
            return SpecName(spec_hash, node.name, node.version)
        try:
            named = _NAME_VERSION_DECODER.decode(node)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            problem = _node_problem(spec_hash, exc, node)
            raise FormatError("build cache index", problem, self.url) from None
        return SpecName(spec_hash, named.name, named.version)

    def infos(self, hashes: Iterable[str]) -> Iterator[SpecInfo]:
        for h in hashes:
            yield self.info(h)


@parser("build cache index")
def parse_index(
    data: bytes | bytearray | memoryview, url: str | None = None, *, lazy: bool = False
) -> Index:
    """Decode an index document, keeping only installs with ``in_buildcache: true``.

    Raises FormatError for invalid JSON, wrong shapes and malformed hashes; for
    a bad spec node too, unless ``lazy``, when ``Index.info`` raises it for the
    nodes it is asked about. A resync asks only about new hashes, the only
    ones it stores: the nodes of specs already stored (checked when they were
    first seen; a hash names its spec's content) are not read again.

    A hash listed twice (or ``database``/``installs`` named twice) is refused:
    a decoder keeps the last, so a second entry could hide or drop the first.
    """
    decoder = _RAW_DECODER if lazy else _DECODER
    controls = _may_hold_controls(data)
    _DECODED.installs = 0
    try:
        with paused_gc():
            document = decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # ValidationError is a DecodeError
        raise FormatError("build cache index", _problem(exc, data), url) from None
    database = document.database
    if _DECODED.installs != len(database.installs):
        # Rare and refused anyway: a second, slow pass names the key (~5 s at 150 MB).
        repeated = repeated_key(data)
        if repeated is None or repeated in database.installs:
            what = f"install {shown(repeated)}" if repeated else "an install hash"
            raise FormatError("build cache index", f"{what} is listed twice", url)
        raise FormatError("build cache index", f"key {shown(repeated)} is named twice", url)
    if database.version == "":
        raise FormatError("build cache index", "the database has no version", url)
    try:
        db_version = int(database.version)
    except ValueError:
        raise FormatError(
            "build cache index", f"database version {database.version!r} is not a number", url
        ) from None
    if db_version not in DB_VERSIONS:
        raise UnsupportedFormatError(
            "build cache index",
            f"database version {db_version} (mirrorsync reads versions "
            f"{DB_VERSIONS[0]} to {DB_VERSIONS[-1]})",
            url,
        )
    nodes: dict[str, SpecNode | msgspec.Raw] = {}
    uncached: dict[str, SpecNode | msgspec.Raw] = {}
    for spec_hash, install in database.installs.items():
        if not is_spec_hash(spec_hash):
            raise FormatError(
                "build cache index", f"install key {spec_hash[:40]!r} is not a spec hash", url
            )
        if isinstance(install.spec, SpecNode):
            _check_node(spec_hash, install.spec, url, controls)
        if install.in_buildcache:
            nodes[spec_hash] = install.spec
        else:
            uncached[spec_hash] = install.spec
    return Index(db_version=db_version, nodes=nodes, url=url, uncached=uncached, controls=controls)


class _Pauses:
    """How many threads are inside :func:`paused_gc`; the collector runs again when
    the last one leaves (it is one switch for the whole process)."""

    lock = threading.Lock()
    count = 0
    was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding (or, in the fixture, building)
    millions of small acyclic objects: collections that find nothing were half of
    the decoding time (100,000 specs: 0.51 s with it, 0.34 s without). Threads may
    overlap their pauses: the collector is enabled again when the last one ends."""
    with _Pauses.lock:
        if _Pauses.count == 0:
            _Pauses.was_enabled = gc.isenabled()
            gc.disable()
        _Pauses.count += 1
    try:
        yield
    finally:
        with _Pauses.lock:
            _Pauses.count -= 1
            if _Pauses.count == 0 and _Pauses.was_enabled:
                gc.enable()


def _parse_lazily(data: bytes, url: str | None = None) -> Index:
    return parse_index(data, url, lazy=True)


register("build cache index, read lazily", _parse_lazily)


def _check_node(spec_hash: str, node: SpecNode, url: str | None, controls: bool = True) -> None:
    if node.hash and node.hash != spec_hash:
        raise FormatError(
            "build cache index",
            f"install {spec_hash} holds a spec whose hash is {node.hash[:40]!r}",
            url,
        )
    if not node.name:
        raise FormatError("build cache index", f"install {spec_hash} has no name", url)
    # Names and versions are stored, printed and put into URLs: no megabytes (the
    # decoder checks Label lengths) and no control characters (forged log lines,
    # terminal escapes), looked for only where the document can hold any.
    if controls:
        _check_labels(spec_hash, node, url)


def _may_hold_controls(data: bytes | bytearray | memoryview) -> bool:
    """Whether any string of this JSON can hold a control character: only through an
    escape (``\\n``, ``\\u001b``), a raw DEL or a raw C1 character (UTF-8 ``c2 80``
    to ``c2 9f``), as JSON forbids raw C0 characters in strings. Three byte scans of
    ~15 ms at 150 MB, instead of a search through every label of every node."""
    buf = data if isinstance(data, bytes | bytearray) else bytes(data)
    return b"\\" in buf or b"\x7f" in buf or b"\xc2" in buf


_TOO_LONG_RE = re.compile(r"^Expected `str` of length <= (\d+) - at `(.*)`$")


def _node_problem(spec_hash: str, exc: Exception, node: msgspec.Raw) -> str:
    """A spec node's decoding error, decoded on its own (a lazy parse): a label over
    its length is named at its place in the document, as a whole decode names it."""
    if _TOO_LONG_RE.match(str(exc)) is not None:
        return _problem(exc, node, at="$.database.installs[...].spec")
    return f"install {spec_hash}: spec {_problem(exc, node)}"


def _problem(exc: Exception, data: bytes | bytearray | memoryview, at: str = "$") -> str:
    """The decoder's error in mirrorsync's words (a Label over its length in particular;
    ``at``: the path of the decoded value in the whole document)."""
    too_long = _TOO_LONG_RE.match(str(exc))
    if too_long is not None:
        where = at + too_long[2][1:]
        field = where.rsplit(".", 1)[-1]
        return f"{field} is longer than {too_long[1]} characters (at {where})"
    return decode_problem(exc, data)


def _check_labels(spec_hash: str, node: SpecNode, url: str | None) -> None:
    for what, value in (("name", node.name), ("version", node.version)):
        problem = label_problem(value)
        if problem is not None:
            raise FormatError(
                "build cache index", f"install {spec_hash}: {what} {shown(value)} {problem}", url
            )
    arch, compiler = node.arch, node.compiler
    labels: list[str] = []
    if arch is not None:
        target = arch.target
        labels += [
            arch.platform,
            arch.platform_os,
            target if isinstance(target, str) else target.name,
        ]
    if compiler is not None:
        labels += [compiler.name, compiler.version]
    for label in labels:
        problem = label_problem(label)
        if problem is not None:
            raise FormatError(
                "build cache index",
                f"install {spec_hash}: architecture or compiler {shown(label)} {problem}",
                url,
            )


def _check_variants(spec_hash: str, variants: tuple[str, ...], url: str | None) -> None:
    for variant in variants:
        problem = label_problem(variant, MAX_VARIANT)
        if problem is not None:
            raise FormatError(
                "build cache index", f"install {spec_hash}: variant {shown(variant)} {problem}", url
            )


def spec_info(
    spec_hash: str, node: SpecNode, variants: tuple[str, ...], compiler: str | None
) -> SpecInfo:
    arch = node.arch or _NO_ARCH
    target = arch.target
    # Positional: this runs once per new spec, 100,000 times on a first sync.
    return SpecInfo(
        spec_hash,
        node.name,
        node.version,
        arch.platform,
        arch.platform_os,
        target if isinstance(target, str) else target.name,
        compiler,
        variants,
    )


_NO_ARCH = Arch()


def _decode_parameters(raw: bytes) -> dict[str, Any]:
    try:
        return _PARAMS_DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return {}


def variants_from_parameters(parameters: Mapping[str, object]) -> tuple[str, ...]:
    """Render parameters as Spack 1.x prints a spec's variants, and so the current
    cache.spack.io pages (FORMATS.md section 5): sorted by name, flags left out.

    ``True`` -> ``+name``, ``False`` -> ``~name``, a string -> ``name=value``, a
    list (a multi-valued variant) -> ``name:=v1,v2``; ``patches`` (sha256 values)
    -> ``patches:=`` the first 7 hex digits of each. The one renderer: pages
    written by ``export pages`` and by the fixture come from it too.
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
        elif isinstance(value, list | tuple):
            if name == "patches":
                out.append(f"{name}:={','.join(str(v)[:7] for v in value)}")
            else:
                out.append(f"{name}:={','.join(str(v) for v in value)}")
        else:
            out.append(f"{name}={value}")
    return tuple(out)
