"""cache.spack.io package pages: Jekyll front matter in, typed records out.

A page is a YAML block between two ``---`` lines whose ``meta`` and
``spec_details`` values are JSON written in YAML flow style (FORMATS.md,
section 5). Pages come from the network, so the YAML is screened before it is
built: aliases are refused (no "billion laughs") and nesting is capped (libyaml
builds nested nodes recursively in C and would crash the process).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import msgspec
import yaml

from mirrorsync.errors import FormatError
from mirrorsync.formats._common import (
    MAX_VARIANT,
    is_spec_hash,
    label_problem,
    parser,
    shown,
    utf8_problem,
)
from mirrorsync.formats.index import variants_from_parameters
from mirrorsync.units import MAX_SIZE, size_problem

#: The page rule, spec-node ``parameters`` -> variant strings: the one renderer, the index's.
parameters_to_variants = variants_from_parameters

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

WHAT = "cache page"
MAX_DEPTH = 32

_COMPILER_RE = re.compile(r"^([A-Za-z0-9_.+-]+)@=?([A-Za-z0-9_.+-]+)$")
_VARIANT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

VariantValue = bool | str | list[str]


class _UniqueKeyLoader(_Loader):
    """The safe loader, refusing a mapping that names a key twice (YAML forbids it;
    PyYAML would keep the last, so a second ``spec_details`` could hide the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise FormatError(WHAT, f"key {shown(key_node.value)} is named twice")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class PageMeta(msgspec.Struct, frozen=True):
    """The page's ``meta`` summary; lists are sorted on real pages."""

    compilers: tuple[str, ...] = ()
    oss: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    stacks: tuple[str, ...] = ()
    num_specs: int | None = None
    num_specs_by_stack: dict[str, int] = msgspec.field(default_factory=dict)


class PageSpec(msgspec.Struct, frozen=True):
    """One ``spec_details`` entry: one hash of the package in the release."""

    hash: str
    version: str
    compiler: str
    os: str
    platform: str
    target: str
    variants: tuple[str, ...]
    stacks: tuple[str, ...]
    size: int | None
    tarball: str | None


class Page(msgspec.Struct, frozen=True):
    package: str
    release: str
    meta: PageMeta
    specs: tuple[PageSpec, ...]


class _RawSpec(msgspec.Struct):
    hash: str
    compiler: str
    versions: list[str]
    os: str
    platform: str
    target: str
    variants: list[str]
    stacks: list[str]
    size: int | str = "-"
    tarball: str | None = None


class _FrontMatter(msgspec.Struct):
    title: str
    categories: list[str]
    meta: PageMeta
    spec_details: list[_RawSpec]


@parser(WHAT)
def parse_page(data: bytes, url: str | None = None) -> Page:
    """Parse one page; any malformation raises :class:`FormatError` naming ``url``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(WHAT, utf8_problem(data) or "not UTF-8", url) from None
    doc = _load_front_matter(text, url)
    try:
        fm = msgspec.convert(doc, _FrontMatter)
    except msgspec.ValidationError as exc:
        raise FormatError(WHAT, str(exc), url) from None
    if len(fm.categories) != 2 or fm.categories[0] != "package" or not fm.categories[1]:
        raise FormatError(
            WHAT, f"categories must be [package, <release>], not {fm.categories}", url
        )
    if not fm.title:
        raise FormatError(WHAT, "empty title", url)
    counts = [("num_specs", fm.meta.num_specs)] + [
        (f"num_specs_by_stack[{shown(k)}]", v) for k, v in fm.meta.num_specs_by_stack.items()
    ]
    for name, count in counts:
        problem = None if count is None else size_problem(count, f"meta.{name}")
        if problem is not None:
            raise FormatError(WHAT, problem, url)
    problem = label_problem(fm.title) or label_problem(fm.categories[1])
    if problem is not None:
        raise FormatError(WHAT, f"package or release name {problem}", url)
    specs = tuple(_spec(raw, i, url) for i, raw in enumerate(fm.spec_details))
    seen: set[str] = set()
    for spec in specs:
        if spec.hash in seen:
            raise FormatError(WHAT, f"hash {spec.hash} listed twice", url)
        seen.add(spec.hash)
    return Page(package=fm.title, release=fm.categories[1], meta=fm.meta, specs=specs)


def _load_front_matter(text: str, url: str | None) -> Any:
    lines = text.removeprefix("\ufeff").split("\n")
    if not lines or lines[0].rstrip() != "---":
        raise FormatError(WHAT, "no front matter (first line is not ---)", url)
    end = next((i for i, line in enumerate(lines[1:], 1) if line.rstrip() == "---"), None)
    if end is None:
        raise FormatError(WHAT, "front matter is not closed by ---", url)
    block = "\n".join(lines[1:end])
    try:
        depth = 0
        for event in yaml.parse(block, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                raise FormatError(WHAT, "YAML aliases are not allowed", url)
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise FormatError(WHAT, f"nested deeper than {MAX_DEPTH} levels", url)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        doc = yaml.load(block, Loader=_UniqueKeyLoader)
    except FormatError:
        raise
    except Exception as exc:  # PyYAML raises ValueError etc. besides YAMLError
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise FormatError(WHAT, f"invalid YAML: {problem}", url) from None
    if not isinstance(doc, dict):
        raise FormatError(WHAT, "front matter is not a mapping", url)
    return doc


def _spec(raw: _RawSpec, index: int, url: str | None) -> PageSpec:
    where = f"spec_details[{index}]"
    if not is_spec_hash(raw.hash):
        raise FormatError(WHAT, f"{where}: hash {raw.hash!r} is not 32 of [a-z0-9]", url)
    if len(raw.versions) != 1 or not raw.versions[0]:
        raise FormatError(WHAT, f"{where}: versions must hold one version", url)
    # Stored and printed: no control characters (forged lines, escapes), no megabytes.
    for value in (raw.versions[0], raw.compiler, raw.os, raw.platform, raw.target, *raw.stacks):
        problem = label_problem(value)
        if problem is not None:
            raise FormatError(WHAT, f"{where}: {shown(value)} {problem}", url)
    for value in raw.variants:
        problem = label_problem(value, MAX_VARIANT)
        if problem is not None:
            raise FormatError(WHAT, f"{where}: variant {shown(value)} {problem}", url)
    try:
        split_compiler(raw.compiler)
        variants_to_parameters(raw.variants)
    except FormatError as exc:
        raise FormatError(WHAT, f"{where}: {exc.problem}", url) from None
    size: int | None
    if raw.size == "-":
        size = None
    elif isinstance(raw.size, int) and raw.size >= 0:
        size = raw.size
    elif isinstance(raw.size, str) and raw.size.isascii() and raw.size.isdigit():
        size = int(raw.size) if len(raw.size) <= 20 else MAX_SIZE + 1
    else:
        raise FormatError(
            WHAT, f"{where}: size {shown(str(raw.size))} is neither '-' nor a byte count", url
        )
    problem = None if size is None else size_problem(size, "size")
    if problem is not None:
        raise FormatError(WHAT, f"{where}: {problem}", url)
    return PageSpec(
        hash=raw.hash,
        version=raw.versions[0],
        compiler=raw.compiler,
        os=raw.os,
        platform=raw.platform,
        target=raw.target,
        variants=tuple(raw.variants),
        stacks=tuple(raw.stacks),
        size=size,
        tarball=raw.tarball,
    )


def split_compiler(compiler: str) -> tuple[str, str] | None:
    """``"none"`` -> None; ``"gcc@=11.4.0"`` or ``"gcc@11.4.0"`` -> ``("gcc", "11.4.0")``."""
    if compiler == "none":
        return None
    m = _COMPILER_RE.match(compiler)
    if m is None:
        raise FormatError(WHAT, f"compiler {compiler!r} is not 'none' or name@=version")
    return m.group(1), m.group(2)


def variants_to_parameters(variants: Iterable[str]) -> dict[str, VariantValue]:
    """Invert the page rule, in both generators' notations (FORMATS.md section 5):
    ``+x`` -> True, ``~x`` -> False, ``a=b`` -> "b", ``a:=b`` (current pages) -> [b],
    ``a:=b,c`` or ``a=b,c`` (older pages) -> [b, c].

    On an older page a single value stays a string: a one-element multi-valued
    variant cannot be told apart from a single-valued one there. ``patches``
    values are the 7-digit prefixes the page prints.
    """
    params: dict[str, VariantValue] = {}
    for variant in variants:
        value: VariantValue
        if variant[:1] in ("+", "~"):
            name, value = variant[1:], variant[0] == "+"
        elif "=" in variant:
            name, _, text = variant.partition("=")
            if name.endswith(":"):  # name:=values, a multi-valued variant
                name, value = name[:-1], text.split(",")
            else:
                value = text.split(",") if "," in text else text
        else:
            raise FormatError(
                WHAT, f"variant {variant!r} is not +name, ~name, name=value or name:=values"
            )
        if not _VARIANT_NAME_RE.match(name):
            raise FormatError(WHAT, f"variant {variant!r} has a bad name")
        params[name] = value
    return params


# -- writing pages -------------------------------------------------------------


def summarise(specs: Iterable[PageSpec]) -> PageMeta:
    """The ``meta`` block the generator derives from a page's ``spec_details``."""
    compilers: set[str] = set()
    oss: set[str] = set()
    platforms: set[str] = set()
    targets: set[str] = set()
    versions: set[str] = set()
    by_stack: dict[str, int] = {}
    count = 0
    for spec in specs:
        count += 1
        compilers.add(spec.compiler)
        oss.add(spec.os)
        platforms.add(spec.platform)
        targets.add(spec.target)
        versions.add(spec.version)
        for label in set(spec.stacks):
            by_stack[label] = by_stack.get(label, 0) + 1
    return PageMeta(
        compilers=tuple(sorted(compilers)),
        oss=tuple(sorted(oss)),
        platforms=tuple(sorted(platforms)),
        targets=tuple(sorted(targets)),
        versions=tuple(sorted(versions)),
        stacks=tuple(sorted(by_stack)),
        num_specs=count,
        num_specs_by_stack=dict(sorted(by_stack.items())),
    )


def render_page(page: Page) -> bytes:
    """A page in the generator's format: the inverse of :func:`parse_page`.

    Front matter only, keys in the generator's order; ``meta`` and
    ``spec_details`` are JSON with sorted keys, entries sorted by hash and their
    stacks by name; ``size`` is ``"-"`` when unknown; ``tarball`` only when known.
    """
    meta: dict[str, object] = {
        "compilers": list(page.meta.compilers),
        "num_specs_by_stack": dict(page.meta.num_specs_by_stack),
        "oss": list(page.meta.oss),
        "platforms": list(page.meta.platforms),
        "stacks": list(page.meta.stacks),
        "targets": list(page.meta.targets),
        "versions": list(page.meta.versions),
    }
    if page.meta.num_specs is not None:
        meta["num_specs"] = page.meta.num_specs
    details = []
    for spec in sorted(page.specs, key=lambda s: s.hash):
        entry: dict[str, object] = {
            "compiler": spec.compiler,
            "hash": spec.hash,
            "os": spec.os,
            "platform": spec.platform,
            "size": "-" if spec.size is None else spec.size,
            "stacks": sorted(spec.stacks),
            "target": spec.target,
            "variants": list(spec.variants),
            "versions": [spec.version],
        }
        if spec.tarball is not None:
            entry["tarball"] = spec.tarball
        details.append(entry)
    lines = [
        "---",
        f"title: {json.dumps(page.package)}",
        "layout: cache",
        f"categories: [package, {_flow_scalar(page.release)}]",
        f"meta: {json.dumps(meta, sort_keys=True)}",
        f"spec_details: {json.dumps(details, sort_keys=True)}",
        "---",
    ]
    return "\n".join(lines).encode("utf-8")


def _flow_scalar(value: str) -> str:
    """``value`` bare when YAML reads it back as that same string, else JSON-quoted."""
    try:
        plain = yaml.load(f"[{value}]", Loader=_Loader) == [value]
    except yaml.YAMLError:
        plain = False
    return value if plain else json.dumps(value)
