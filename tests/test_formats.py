"""Pure parsers: catalogue, index, manifests, clear-signed text. Bytes in, records or FormatError out."""

from __future__ import annotations

import contextlib
import gc
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorsync.errors import FormatError
from mirrorsync.fixture.specs import fake_hash, synthetic_specs
from mirrorsync.formats.catalog import (
    locate_index,
    parse_catalog,
    parse_catalog_document,
    resolve_url,
)
from mirrorsync.formats.clearsign import split_clearsigned
from mirrorsync.formats.index import parse_index, paused_gc, variants_from_parameters
from mirrorsync.formats.manifest import (
    hash_from_manifest_name,
    parse_index_manifest,
    parse_manifest,
)

REALDATA = Path(__file__).parent / "data" / "realdata"  # copied from ../shared/realdata
H1 = "2lo2i7w7ijqlkydoeuimi4u5hfplepcc"
H2 = "2owbnqfae5o7z36jalkszocp6y3xmhe3"
SHA = "4f0c" + "a" * 60
BUCKETS = {"spack-binaries": "https://binaries.spack.io/"}


def node(h: str, **extra: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": "py-pyproject-hooks",
        "version": "1.2.0",
        "arch": {
            "platform": "linux",
            "platform_os": "ubuntu24.04",
            "target": {"name": "x86_64_v3", "vendor": "GenuineIntel", "features": ["avx2"]},
        },
        "namespace": "builtin",
        "parameters": {"build_system": "python_pip", "cflags": [], "shared": True, "debug": False},
        "package_hash": "x",
        "dependencies": [{"name": "python", "hash": H2, "parameters": {"deptypes": ["run"]}}],
        "hash": h,
    }
    spec.update(extra)
    return spec


def index_bytes(installs: dict[str, object], version: str = "8") -> bytes:
    return json.dumps({"database": {"version": version, "installs": installs}}).encode()


def test_index_keeps_only_cached_specs_and_the_fields_we_use() -> None:
    data = index_bytes(
        {
            H1: {"spec": node(H1), "ref_count": 1, "in_buildcache": True},
            H2: {"spec": node(H2, name="python"), "ref_count": 3, "in_buildcache": False},
        }
    )
    index = parse_index(data)
    assert index.db_version == 8 and index.hashes == {H1}
    info = index.info(H1)
    assert (info.name, info.version, info.platform, info.os, info.target) == (
        "py-pyproject-hooks",
        "1.2.0",
        "linux",
        "ubuntu24.04",
        "x86_64_v3",
    )
    assert info.compiler is None
    assert info.variants == ("build_system=python_pip", "~debug", "+shared")


def test_index_v7_compiler_and_plain_string_target() -> None:
    spec = node(H1, compiler={"name": "gcc", "version": "11.4.0"})
    spec["arch"] = {"platform": "linux", "platform_os": "ubuntu22.04", "target": "x86_64"}
    index = parse_index(index_bytes({H1: {"spec": spec, "in_buildcache": True}}, "7"))
    info = index.info(H1)
    assert (info.compiler, info.target, index.db_version) == ("gcc@11.4.0", "x86_64", 7)


REAL_V8_INDEX = REALDATA / "spack-test-mirrors/v2_layout/signed/build_cache/index.json"
#: What Spack's own v2 test mirror names its files after (FORMATS.md sections 3 and 4).
REAL_V8_COMPILERS = {
    "rqh2vuf6fqwkmipzgi2wjx352mq7y7ez": "gcc@10.2.1",  # libelf, annotations.compiler gcc@=10.2.1
    "sk2gqqz4n5njmvktycnd25wq25jxiqkr": "gcc@10.2.1",  # libdwarf, the same
    "jr3yipyxyjulcdvckwwwjrrumis7glpa": "gcc@10.2.1",  # libelf: gcc provides c (uncached external)
    "u5uz3dcch5if4eve4sef67o2rf2lbfgh": "gcc@10.2.1",  # libdwarf: gcc provides c and cxx
    "qeehcxyvluwnihsc2qxstmpomtxo3lrc": None,  # compiler-wrapper: no dependencies
    "izgzpzeljwairalfjm3k6fntbb64nt6n": None,  # gcc-runtime: gcc is a build dependency, no virtuals
}


@pytest.mark.parametrize("lazy", [False, True], ids=["first sync", "resync"])
def test_database_v8_compilers_of_spacks_own_test_mirror(lazy: bool) -> None:
    index = parse_index(REAL_V8_INDEX.read_bytes(), str(REAL_V8_INDEX), lazy=lazy)
    assert index.db_version == 8
    assert {h: index.info(h).compiler for h in index.hashes} == REAL_V8_COMPILERS
    assert set(index.uncached) == {"vd7v4ssgnoqdplgxyig3orum67n4vmhq"}  # the external gcc


def test_database_v8_compiler_preference_and_a_dependency_not_in_the_index() -> None:
    def dep(name: str, h: str, *virtuals: str) -> dict[str, object]:
        return {
            "name": name,
            "hash": h,
            "parameters": {"deptypes": ["build"], "virtuals": virtuals},
        }

    llvm, gcc, nvhpc, gone = (fake_hash(n) for n in ("llvm", "gcc", "nvhpc", "gone"))
    nodes = {
        llvm: node(llvm, name="llvm", version="18.1.8"),
        gcc: node(gcc, name="gcc", version="13.2.0"),
        nvhpc: node(nvhpc, name="nvhpc", version="24.7"),
    }
    cases = {  # dependencies (in index order) -> compiler
        H1: (
            [dep("nvhpc", nvhpc, "fortran"), dep("gcc", gcc, "cxx"), dep("llvm", llvm, "c")],
            "llvm@18.1.8",
        ),
        H2: ([dep("nvhpc", nvhpc, "fortran"), dep("gcc", gcc, "cxx")], "gcc@13.2.0"),
        fake_hash("f"): ([dep("nvhpc", nvhpc, "fortran")], "nvhpc@24.7"),
        fake_hash("g"): ([dep("gcc", gone, "c")], None),  # Spack skips a missing dependency
    }
    installs: dict[str, object] = {
        h: {"spec": n, "in_buildcache": h != nvhpc} for h, n in nodes.items()
    }
    for h, (deps, _) in cases.items():
        installs[h] = {"spec": node(h, dependencies=deps), "in_buildcache": True}
    for lazy in (False, True):
        index = parse_index(index_bytes(installs), lazy=lazy)
        assert {h: index.info(h).compiler for h in cases} == {h: c for h, (_, c) in cases.items()}


def test_variants_follow_the_cache_page_rules() -> None:
    params = {
        "build_type": "Release",
        "tensile": True,
        "asan": False,
        "amdgpu_target": ["gfx90a", "gfx942"],
        "ldflags": [],
    }
    assert variants_from_parameters(params) == (
        "amdgpu_target:=gfx90a,gfx942",
        "~asan",
        "build_type=Release",
        "+tensile",
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{", "malformed build cache index"),
        (b'{"database": {"version": "8", "installs": []}}', "installs"),
        (
            index_bytes({"NOTAHASH": {"spec": node(H1), "in_buildcache": True}}),
            "is not a spec hash",
        ),
        (index_bytes({H1: {"spec": node(H2), "in_buildcache": True}}), "holds a spec whose hash"),
        (
            index_bytes({H1: {"spec": {"hash": H1}, "in_buildcache": True}}),
            "`name`",
        ),
    ],
)
@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_index_refuses_bad_documents_naming_the_url(data: bytes, problem: str, lazy: bool) -> None:
    """Eagerly at parse time; lazily when the bad spec is asked for (as a sync does)."""
    with pytest.raises(FormatError, match="https://m/index") as caught:
        index = parse_index(data, "https://m/index", lazy=lazy)
        list(index.infos(index.hashes))
    assert problem in str(caught.value)


def test_lazy_parse_checks_every_install_and_only_the_nodes_asked_for() -> None:
    bad_node = {"spec": {"hash": H1, "version": "1"}, "in_buildcache": True}  # no name
    data = index_bytes({H1: bad_node, H2: {"spec": node(H2), "in_buildcache": True}})
    index = parse_index(data, "https://m/index", lazy=True)
    assert index.info(H2).name == "py-pyproject-hooks"
    with pytest.raises(FormatError, match="`name`"):
        index.info(H1)  # a resync asks only about new hashes: stored ones are not read
    for spec in (42, None, [1]):
        not_an_object = index_bytes({H1: {"spec": spec, "in_buildcache": True}})
        with pytest.raises(FormatError, match="https://m/index"):
            parse_index(not_an_object, "https://m/index", lazy=True).info(H1)
    with pytest.raises(FormatError, match="`spec`"):
        parse_index(index_bytes({H1: {"in_buildcache": True}}), lazy=True)


def test_lazy_and_eager_parsing_agree_on_every_spec() -> None:
    specs = synthetic_specs(300, seed=3)
    installs: dict[str, object] = {
        str(n["hash"]): {"spec": n, "in_buildcache": i % 7 != 0} for i, n in enumerate(specs)
    }
    data = index_bytes(installs)
    eager, lazy = parse_index(data), parse_index(data, lazy=True)
    assert eager.hashes == lazy.hashes and len(eager) == 300 - 43
    hashes = sorted(eager.hashes)
    assert list(eager.infos(hashes)) == list(lazy.infos(hashes))


def test_catalog_entries_and_locations() -> None:
    data = json.dumps(
        {
            "develop": [
                {
                    "label": "root",
                    "url": f"s3://spack-binaries/develop/blobs/sha256/{SHA[:2]}/{SHA}",
                },
                {"label": "e4s", "url": "s3://spack-binaries/develop/e4s/build_cache/index.json"},
            ],
            "v1.0.0": [],
        }
    ).encode()
    entries = parse_catalog(data)
    assert [(e.release, e.stack) for e in entries] == [("develop", "root"), ("develop", "e4s")]
    root = locate_index(entries[0].url, BUCKETS)
    assert (root.mirror_root, root.layout, root.index_checksum) == (
        "https://binaries.spack.io/develop",
        "v3",
        SHA,
    )
    e4s = locate_index(entries[1].url, BUCKETS)
    assert (e4s.mirror_root, e4s.layout, e4s.index_checksum) == (
        "https://binaries.spack.io/develop/e4s",
        "v2",
        None,
    )


def test_a_repeated_label_keeps_the_first_entry_and_reports_the_others() -> None:
    data = b'{"develop": [{"label": "e4s", "url": "x"}, {"label": "e4s", "url": "y"}]}'
    document = parse_catalog_document(data)
    assert [(e.stack, e.url) for e in document.stacks] == [("e4s", "x")]
    assert [(e.release, e.stack, e.url) for e in document.repeated] == [("develop", "e4s", "y")]
    assert parse_catalog(data) == document.stacks


def test_catalog_errors() -> None:
    with pytest.raises(FormatError, match="no bucket_urls entry for s3 bucket 'other'"):
        resolve_url("s3://other/develop/build_cache/index.json", BUCKETS)
    with pytest.raises(FormatError, match="neither a v3 index blob"):
        locate_index("https://h/develop/index.json", BUCKETS)
    with pytest.raises(FormatError, match="wrong prefix directory"):
        locate_index(f"https://h/develop/blobs/sha256/00/{SHA}", BUCKETS)


MANIFEST: dict[str, Any] = {
    "version": 3,
    "data": [
        {
            "contentLength": 18342,
            "mediaType": "application/vnd.spack.install.v2.tar+gzip",
            "compression": "gzip",
            "checksumAlgorithm": "sha256",
            "checksum": SHA,
        },
        {
            "contentLength": 1211,
            "mediaType": "application/vnd.spack.db.v8+json",
            "compression": "none",
            "checksumAlgorithm": "sha256",
            "checksum": "b" * 64,
        },
    ],
}


def clearsign(body: bytes) -> bytes:
    escaped = b"".join(
        (b"- " + line if line.startswith(b"-") else line) for line in body.splitlines(keepends=True)
    )
    return (
        b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
        + escaped
        + b"\n-----BEGIN PGP SIGNATURE-----\n\niQEzBAEBCgAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n"
    )


def test_manifest_plain_and_clearsigned_agree() -> None:
    plain = json.dumps(MANIFEST, indent=2).encode()
    signed = clearsign(plain)
    assert parse_manifest(plain) == parse_manifest(signed)
    record = parse_index_manifest(signed)
    assert (record.checksum, record.content_length) == ("b" * 64, 1211)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        # The forgery gpg accepts: an unsigned block with bare-CR lines, then a genuine
        # one. gpg verifies the second; splitlines() would parse the first.
        (
            clearsign(b'{"evil": 1}').replace(b"\n", b"\r") + b"\n" + clearsign(b"{}"),
            "bare CR",
        ),
        (clearsign(b"{}") + clearsign(b"{}"), "more than one -----BEGIN PGP SIGNED MESSAGE-----"),
        (b"garbage\n" + clearsign(b"{}"), "bytes before -----BEGIN PGP SIGNED MESSAGE-----"),
        (clearsign(b"{}") + b"trailer\n", "bytes after -----END PGP SIGNATURE-----"),
        (clearsign(b"{\r}"), "bare CR"),
    ],
)
def test_clearsign_reads_one_armoured_block_only(data: bytes, problem: str) -> None:
    with pytest.raises(FormatError, match=problem):
        split_clearsigned(data)
    assert split_clearsigned(b"\n  " + clearsign(b"{}") + b"\r\n\n").body == b"{}"


def test_clearsign_undoes_dash_escaping_exactly() -> None:
    body = b"-leading dash\nplain\n--- more\nlast"
    assert split_clearsigned(clearsign(body)).body == body


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            clearsign(b"{}").replace(b"-----END PGP SIGNATURE-----", b""),
            "no -----END PGP SIGNATURE-----",
        ),
        (
            clearsign(b"{}").split(b"-----BEGIN PGP SIGNATURE-----")[0],
            "no -----BEGIN PGP SIGNATURE-----",
        ),
        (
            json.dumps({"data": [{**MANIFEST["data"][0], "checksum": "XYZ"}]}).encode(),
            "is not 64 lowercase hex",
        ),
        (
            json.dumps({"data": [{**MANIFEST["data"][0], "checksumAlgorithm": "crc"}]}).encode(),
            "unknown checksum algorithm",
        ),
    ],
)
def test_manifest_refusals(data: bytes, problem: str) -> None:
    with pytest.raises(FormatError, match=r"https://m/x\.json") as caught:
        parse_manifest(data, "https://m/x.json")
    assert problem in str(caught.value)


def test_index_manifest_without_db_record() -> None:
    only_tarball = json.dumps({"data": [MANIFEST["data"][0]]}).encode()
    with pytest.raises(FormatError, match=r"no application/vnd\.spack\.db\* record"):
        parse_index_manifest(only_tarball)


def test_hash_from_manifest_name() -> None:
    assert hash_from_manifest_name(f"py-a-b-1.2.0-{H1}.spec.manifest.json") == H1
    with pytest.raises(FormatError):
        hash_from_manifest_name("py-a-1.2.0-nothash.spec.manifest.json")


# -- properties: any bytes give a record or a FormatError, never anything else ----


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parsers_only_raise_format_error_on_random_bytes(data: bytes) -> None:
    for parse in (parse_index, parse_catalog, parse_manifest, parse_index_manifest):
        with contextlib.suppress(FormatError):
            parse(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parsers_only_raise_format_error_on_random_json(value: object) -> None:
    data = json.dumps(value).encode()
    for parse in (parse_index, parse_catalog, parse_manifest):
        with contextlib.suppress(FormatError):
            parse(data)
    with contextlib.suppress(FormatError):
        split_clearsigned(clearsign(data))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["installs", "spec", "hash", "name", "in_buildcache", "arch", "target"]),
    json_values,
)
def test_index_with_one_field_replaced_only_raises_format_error(field: str, value: object) -> None:
    spec = node(H1)
    install: dict[str, object] = {"spec": spec, "in_buildcache": True}
    document: dict[str, object] = {"database": {"version": "8", "installs": {H1: install}}}
    if field == "installs":
        document["database"] = {"version": "8", "installs": value}
    elif field in ("spec", "in_buildcache"):
        install[field] = value
    elif field == "target":
        spec["arch"] = {"platform": "linux", "target": value}
    else:
        spec[field] = value
    with contextlib.suppress(FormatError):
        parse_index(json.dumps(document).encode())


def test_gc_stays_paused_until_the_last_of_overlapping_pauses_ends() -> None:
    """Two stacks decode in two threads: the first to finish must not turn the
    collector back on under the other (it is one switch for the whole process)."""
    assert gc.isenabled()
    first, second = paused_gc(), paused_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()
