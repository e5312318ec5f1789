"""A Spack environment's ``spack.lock`` and a ``buildcache prune --keeplist`` file.

A lockfile (versions 4 to 6, as ``Environment._to_lockfile_dict`` writes them)
is JSON: ``_meta.lockfile-version``, ``roots`` (``[{hash, spec}]``: the
environment's concretized user specs) and ``concrete_specs`` (``{hash: node}``,
every node of the roots' DAGs). Version 5 and later may add
``include_concrete`` (``{env path: {roots, concrete_specs}}``), read the same way.

What a copy wants from an environment is what ``spack buildcache push`` of it
pushes: the roots and every spec they reach through ``link`` or ``run``
dependencies (``parameters.deptypes``; ``type`` in older spec formats);
build-only dependencies and externals (never in a build cache) are not wanted.

A keeplist is what ``spack buildcache prune --keeplist`` reads
(``spack/buildcache_prune.py``): one hash a line, surrounding blanks and a
leading ``/`` stripped, each exactly 32 characters; blank lines are refused
there as here, since Spack refuses them too.

Both parsers are pure and bounded: bytes in, a typed record or a
:class:`FormatError` out, for any input.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from mirrorsync.errors import FormatError
from mirrorsync.formats._common import (
    decode_problem,
    is_spec_hash,
    parser,
    refuse_repeated_keys,
    shown,
)
from mirrorsync.formats.rawindex import RUNTIME_DEPTYPES

#: Lockfile versions read: Spack 0.19 (v4) to Spack 1.1 (v6).
VERSIONS = frozenset({4, 5, 6})
MAX_LOCKFILE = 256 << 20
MAX_KEEPLIST = 64 << 20


class _DepParameters(msgspec.Struct):
    deptypes: list[str] = []


class _Dependency(msgspec.Struct):
    name: str = ""
    hash: str = ""
    parameters: _DepParameters | None = None
    type: list[str] | None = None  # older spec formats


class _Node(msgspec.Struct):
    name: str = ""
    dependencies: list[_Dependency] | dict[str, _Dependency] = []
    external: dict[str, object] | None = None


class _Root(msgspec.Struct):
    hash: str
    spec: str = ""


class _Meta(msgspec.Struct):
    lockfile_version: int = msgspec.field(name="lockfile-version")


class _Included(msgspec.Struct):
    roots: list[_Root] = []
    concrete_specs: dict[str, _Node] = {}


class _Lockfile(msgspec.Struct):
    meta: _Meta = msgspec.field(name="_meta")
    roots: list[_Root]
    concrete_specs: dict[str, _Node]
    include_concrete: dict[str, _Included] = {}


@dataclass(frozen=True, slots=True)
class Lockfile:
    version: int
    roots: tuple[str, ...]  # root hashes, in the lockfile's order
    names: dict[str, str]  # hash -> package name, every concrete spec
    wanted: frozenset[str]  # roots and their link/run closure, externals left out
    missing: tuple[str, ...]  # link/run dependencies the lockfile does not describe


def _deptypes(dep: _Dependency) -> list[str]:
    if dep.parameters is not None:
        return dep.parameters.deptypes
    return dep.type or []


@parser("spack.lock")
def parse_lockfile(data: bytes, where: str | None = None) -> Lockfile:
    """A ``spack.lock`` read; FormatError if it is not one this reads."""
    if len(data) > MAX_LOCKFILE:
        raise FormatError("spack.lock", f"larger than {MAX_LOCKFILE} bytes", where)
    try:
        doc = msgspec.json.decode(data, type=_Lockfile)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise FormatError("spack.lock", decode_problem(exc, data), where) from None
    refuse_repeated_keys("spack.lock", data, where)  # a lockfile could hide what it lists
    version = doc.meta.lockfile_version
    if version not in VERSIONS:
        raise FormatError(
            "spack.lock",
            f"lockfile-version {version} (this reads versions 4 to 6, as Spack 0.19 to 1.1 write)",
            where,
        )
    nodes = dict(doc.concrete_specs)
    roots = [r.hash for r in doc.roots]
    for included in doc.include_concrete.values():
        nodes.update(included.concrete_specs)
        roots.extend(r.hash for r in included.roots)
    for spec_hash in [*nodes, *roots]:
        if not is_spec_hash(spec_hash):
            raise FormatError("spack.lock", f"not a spec hash: {shown(spec_hash)}", where)
    wanted: set[str] = set()
    missing: set[str] = set()
    todo = list(roots)
    while todo:
        spec_hash = todo.pop()
        if spec_hash in wanted or spec_hash in missing:
            continue
        node = nodes.get(spec_hash)
        if node is None:
            missing.add(spec_hash)
            continue
        if node.external is not None:
            continue  # never in a build cache
        wanted.add(spec_hash)
        deps = node.dependencies
        for dep in deps.values() if isinstance(deps, dict) else deps:
            if not is_spec_hash(dep.hash):
                raise FormatError(
                    "spack.lock", f"{node.name}: dependency hash {shown(dep.hash)}", where
                )
            if RUNTIME_DEPTYPES.intersection(_deptypes(dep)):
                todo.append(dep.hash)
    return Lockfile(
        version,
        tuple(roots),
        {h: n.name for h, n in nodes.items()},
        frozenset(wanted),
        tuple(sorted(missing)),
    )


@parser("keeplist")
def parse_keeplist(data: bytes, where: str | None = None) -> frozenset[str]:
    """A keeplist as ``spack buildcache prune --keeplist`` reads it."""
    if len(data) > MAX_KEEPLIST:
        raise FormatError("keeplist", f"larger than {MAX_KEEPLIST} bytes", where)
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise FormatError("keeplist", decode_problem(exc, data), where) from None
    hashes: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        spec_hash = line.strip().lstrip("/")
        if not is_spec_hash(spec_hash):
            raise FormatError("keeplist", f"line {number}: not a spec hash: {shown(line)}", where)
        hashes.add(spec_hash)
    if not hashes:
        raise FormatError("keeplist", "no hashes", where)
    return frozenset(hashes)
