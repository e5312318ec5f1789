"""cache.spack.io page parser: the two real seeds, malformed input, the variant rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorsync.errors import FormatError
from mirrorsync.formats.index import variants_from_parameters
from mirrorsync.formats.pages import (
    parameters_to_variants,
    parse_page,
    split_compiler,
    variants_to_parameters,
)

DATA = Path(__file__).parents[1] / "src" / "mirrorsync" / "fixture" / "data"
SEED_000 = next(DATA.glob("000_*.txt")).read_bytes()
SEED_001 = next(DATA.glob("001_*.txt")).read_bytes()


@pytest.mark.parametrize(
    ("data", "count", "stacks"),
    [(SEED_000, 93, 6), (SEED_001, 58, 7)],
    ids=["seed000", "seed001"],
)
def test_seed_pages_parse_and_agree_with_their_meta(data: bytes, count: int, stacks: int) -> None:
    page = parse_page(data, "https://cache.spack.io/package/develop/py-pyproject-hooks/")
    assert (page.package, page.release) == ("py-pyproject-hooks", "develop")
    assert len(page.specs) == count == page.meta.num_specs
    assert len({s.hash for s in page.specs}) == count
    by_stack: dict[str, int] = {}
    for spec in page.specs:
        for label in spec.stacks:
            by_stack[label] = by_stack.get(label, 0) + 1
    assert by_stack == page.meta.num_specs_by_stack
    assert len(page.meta.stacks) == stacks and sorted(by_stack) == list(page.meta.stacks)
    assert {s.version for s in page.specs} == set(page.meta.versions)
    assert {s.target for s in page.specs} == set(page.meta.targets)
    assert {s.os for s in page.specs} == set(page.meta.oss)
    assert all(s.size is None and s.tarball is None and s.compiler == "none" for s in page.specs)
    assert all(s.variants == ("build_system=python_pip",) for s in page.specs)


def test_seed_difference_is_the_documented_one() -> None:
    old, new = parse_page(SEED_000), parse_page(SEED_001)
    old_hashes, new_hashes = {s.hash for s in old.specs}, {s.hash for s in new.specs}
    assert len(old_hashes - new_hashes) == 35 and not new_hashes - old_hashes
    gained_e4s = {s.hash for s in new.specs if "e4s" in s.stacks}
    assert len(gained_e4s) == 20


def _page(spec_details: str, meta: str = "{}", categories: str = "[package, v0.23.1]") -> bytes:
    return (
        f"---\ntitle: zlib\nlayout: cache\ncategories: {categories}\n"
        f"meta: {meta}\nspec_details: {spec_details}\n---\n"
    ).encode()


GOOD_SPEC = (
    '{"hash": "abcdefghijklmnopqrstuvwxyz234567", "compiler": "gcc@11.4.0", "versions": ["1.3"],'
    ' "os": "ubuntu22.04", "platform": "linux", "target": "x86_64_v3", "size": "%s",'
    ' "variants": ["+shared", "~pic", "build_type=Release"], "stacks": ["root", "e4s"],'
    ' "tarball": "https://mirror/build_cache/x.spack"}'
)


def _spec_with(old: str, new: str) -> str:
    """spec_details holding GOOD_SPEC with one piece of text replaced."""
    return "[" + (GOOD_SPEC % "-").replace(old, new) + "]"


def test_older_page_fields_and_sizes() -> None:
    page = parse_page(_page(f"[{GOOD_SPEC % '1234'}]"))
    (spec,) = page.specs
    assert page.release == "v0.23.1" and page.meta.num_specs is None
    assert spec.size == 1234 and spec.tarball == "https://mirror/build_cache/x.spack"
    assert spec.stacks == ("root", "e4s") and split_compiler(spec.compiler) == ("gcc", "11.4.0")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xff\xfe---", "not UTF-8"),
        (b"title: x\n", "no front matter"),
        (b"---\ntitle: x\n", "not closed"),
        (b"---\n- a\n---\n", "not a mapping"),
        (b"---\ntitle: [unclosed\n---\n", "invalid YAML"),
        (b"---\nx: &a [1]\ny: *a\n---\n", "aliases"),
        (b"---\nx: " + b"[" * 33 + b"]" * 33 + b"\n---\n", "nested deeper than 32 levels"),
        (b"---\ntitle: x\ncategories: [package, develop]\nmeta: {}\n---\n", "spec_details"),
        (_page("[]", categories="[package]"), "categories"),
        (_page("[]", meta='{"num_specs": "93"}'), "num_specs"),
        (_page(f"[{GOOD_SPEC % 'big'}]"), "size"),
        (_page(f"[{GOOD_SPEC % (2**63)}]"), "size 9223372036854775808 is out of range"),
        (_page(f"[{GOOD_SPEC % ('9' * 40)}]"), "is out of range (0 to 2**53)"),
        (_page("[]", meta='{"num_specs": 9223372036854775808}'), "meta.num_specs 92233720"),
        (_page("[]", meta='{"num_specs_by_stack": {"root": -1}}'), "num_specs_by_stack['root']"),
        (_page(_spec_with("abcdefghij", "ABCDEFGHIJ")), "hash"),
        (_page(f"[{GOOD_SPEC % '-'}, {GOOD_SPEC % '-'}]"), "twice"),
        (_page(_spec_with("gcc@11.4.0", "gcc 11")), "compiler"),
        (_page(_spec_with("~pic", "pic")), "variant"),
        (_page(_spec_with('["1.3"]', "[]")), "versions"),
        (b"---\ntitle: 2001-13-45\n---\n", "invalid YAML"),
    ],
)
def test_malformed_pages_raise_format_error(data: bytes, problem: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_page(data, "https://cache.spack.io/x")
    assert problem in info.value.problem
    assert info.value.url == "https://cache.spack.io/x"
    assert str(info.value).startswith("malformed cache page at https://cache.spack.io/x: ")


def test_nesting_far_too_deep_is_refused() -> None:
    """100,000 levels: the depth check refuses it, or PyYAML's own limit (1,000 levels
    since 6.0.4) does first; either way a one-line FormatError in mirrorsync's words."""
    data = b"---\nx: " + b"[" * 100_000 + b"\n---\n"
    with pytest.raises(FormatError) as info:
        parse_page(data, "https://cache.spack.io/x")
    problem = info.value.problem
    assert problem == "nested deeper than 32 levels" or problem.startswith("invalid YAML: ")
    assert str(info.value).startswith("malformed cache page at https://cache.spack.io/x: ")


def _parse_or_format_error(data: bytes) -> None:
    try:
        parse_page(data, "u")
    except FormatError as exc:
        assert exc.what == "cache page" and exc.url == "u"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_format_error(data: bytes) -> None:
    _parse_or_format_error(data)
    _parse_or_format_error(b"---\n" + data + b"\n---\n")


_edit = st.tuples(
    st.integers(min_value=0, max_value=len(SEED_001)),
    st.integers(min_value=0, max_value=8),
    st.sampled_from([b"", b"-", b"\n", b'"', b"[", b"]", b"{", b",", b":", b"1", b"z", b"\xe9"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_edit, min_size=1, max_size=6))
def test_mutated_seed_only_raises_format_error(edits: list[tuple[int, int, bytes]]) -> None:
    data = SEED_001
    for pos, cut, insert in edits:
        pos = min(pos, len(data))
        data = data[:pos] + insert + data[pos + cut :]
    _parse_or_format_error(data)


@pytest.mark.parametrize(
    ("variants", "parameters"),
    [
        (["+shared", "~pic"], {"shared": True, "pic": False}),
        (["build_type=Release"], {"build_type": "Release"}),
        (["build_system=python_pip"], {"build_system": "python_pip"}),
        # Current pages (Spack 1.x): multi-valued variants with :=, even with one value.
        (["amdgpu_target:=gfx90a"], {"amdgpu_target": ["gfx90a"]}),
        (["cuda_arch:=80,90", "patches:=299b958,ae9077a"],
         {"cuda_arch": ["80", "90"], "patches": ["299b958", "ae9077a"]}),
        # Older pages (Spack 0.2x): with =, a single value cannot be told from a string.
        (["cuda_arch=80,90", "patches=299b958"], {"cuda_arch": ["80", "90"], "patches": "299b958"}),
        (["libs=shared,static"], {"libs": ["shared", "static"]}),
    ],
)  # fmt: skip
def test_variants_to_parameters_reads_both_generators(
    variants: list[str], parameters: dict[str, object]
) -> None:
    assert variants_to_parameters(variants) == parameters


def test_parameters_to_variants_writes_the_current_notation() -> None:
    sha = ("299b958" + "0" * 57, "ae9077a" + "f" * 57)
    params = {
        "cflags": ["-O2"], "zlib": True, "api": "v2", "ldlibs": [], "mpi": False,
        "amdgpu_target": ["gfx90a"], "cuda_arch": ["80", "90"], "patches": list(sha),
    }  # fmt: skip
    assert parameters_to_variants(params) == (
        "amdgpu_target:=gfx90a", "api=v2", "cuda_arch:=80,90", "~mpi",
        "patches:=299b958,ae9077a", "+zlib",
    )  # fmt: skip
    assert parameters_to_variants is variants_from_parameters  # one renderer


_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_values = st.one_of(
    st.booleans(),
    st.from_regex(r"[A-Za-z0-9_.]{0,6}", fullmatch=True),
    st.lists(st.from_regex(r"[A-Za-z0-9_.]{1,5}", fullmatch=True), min_size=1, max_size=4),
)


@given(st.dictionaries(_names, _values, max_size=6))
def test_variant_rule_round_trips(parameters: dict[str, object]) -> None:
    parameters = {k: v for k, v in parameters.items() if k not in ("cflags", "ldflags")}
    assert variants_to_parameters(parameters_to_variants(parameters)) == parameters
