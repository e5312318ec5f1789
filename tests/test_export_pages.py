"""``export pages``: cache.spack.io pages written back from synced state, checked both ways."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, catalog_config_text, run_cli, write_config
from mirrorsync.fixture.build import (
    INDEX_MANIFEST,
    MirrorInfo,
    build_catalog_from_specs,
    build_from_seed,
    load_seed,
)
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import catalogue_from_page, fake_hash, spec_node
from mirrorsync.formats.pages import Page, PageMeta, PageSpec, parse_page, render_page, summarise

SEEDS = REPO / "src" / "mirrorsync" / "fixture" / "data"


def seed_bytes(name: str) -> bytes:
    return next(SEEDS.glob(f"{name}_*.txt")).read_bytes()


@pytest.mark.parametrize("seed", ["000", "001"])
def test_render_page_writes_the_seed_back_byte_for_byte(seed: str) -> None:
    page = parse_page(seed_bytes(seed))
    assert summarise(page.specs) == page.meta
    shuffled = Page(page.package, page.release, page.meta, tuple(reversed(page.specs)))
    assert render_page(shuffled) == seed_bytes(seed)


def test_render_page_quotes_what_yaml_would_misread() -> None:
    spec = PageSpec("a" * 32, "1.0", "none", "rhel8", "linux", "x86_64", (), ("root",), 12, None)
    for release in ("1.0", "yes", "null", "v1: x", "develop-2025-03-23"):
        page = Page("zlib", release, summarise([spec]), (spec,))
        again = parse_page(render_page(page))
        assert (again.release, again.specs[0].size) == (release, 12)
    text = render_page(Page("zlib", "v0.23.1", PageMeta(), (spec,))).decode()
    assert "categories: [package, v0.23.1]\n" in text


def _config(tmp_path: Path, server: FixtureServer, manifests: str) -> Path:
    text = catalog_config_text(
        tmp_path,
        server,
        extra=f"    manifests: {manifests}",
        http="http: {concurrency: 8, per_host_rate: 1000, timeout: 10}\n",
    )
    return write_config(tmp_path / "c.yaml", text)


def _export(tmp_path: Path, config: Path, release: str, *extra: str) -> Path:
    out = tmp_path / "pages"
    result = run_cli(
        "-c", str(config), "export", "pages", "--release", release, "--out", str(out), *extra,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def _fields(spec: PageSpec) -> tuple[Any, ...]:
    """Everything but the size, stacks as a set."""
    return (
        spec.version, spec.compiler, spec.os, spec.platform, spec.target,
        spec.variants, frozenset(spec.stacks),
    )  # fmt: skip


def test_seed_001_round_trip_with_every_size_filled(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    infos = build_from_seed(docroot, "001")["develop"]
    config = _config(tmp_path, server, "all")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    out = _export(tmp_path, config, "develop")
    written = out / "develop" / "py-pyproject-hooks" / "specs.md"
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == [
        written.relative_to(out)
    ]

    exported, seed = parse_page(written.read_bytes()), load_seed("001")
    assert (exported.package, exported.release) == (seed.package, seed.release)
    assert exported.meta == seed.meta
    assert {s.hash: _fields(s) for s in exported.specs} == {s.hash: _fields(s) for s in seed.specs}
    sizes = {s.hash: s.size for s in exported.specs}
    assert None not in sizes.values()
    assert sizes == {
        h: (docroot / path).stat().st_size for h, path in infos["root"].tarballs.items()
    }
    # Same layout as the generator's: sorted by hash, stacks sorted.
    assert [s.hash for s in exported.specs] == sorted(sizes)
    assert all(list(s.stacks) == sorted(s.stacks) for s in exported.specs)


def test_without_sizes_the_export_is_the_seed_byte_for_byte(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_from_seed(docroot, "001")
    config = _config(tmp_path, server, "none")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    out = _export(tmp_path, config, "develop")
    assert (out / "develop/py-pyproject-hooks/specs.md").read_bytes() == seed_bytes("001")


# A database-v7 release in the v2 layout: compilers, and every kind of variant.
V7_SPECS: list[tuple[str, str, tuple[str, str], dict[str, Any], list[str], list[str]]] = [
    # name, version, compiler, parameters, expected variants, stacks
    (
        "hip", "6.1.2", ("gcc", "11.4.0"),
        {"asan": False, "build_type": "Release", "build_system": "cmake"},
        ["~asan", "build_system=cmake", "build_type=Release"],
        ["root", "e4s", "ml-linux-x86_64-rocm"],
    ),
    (
        "hip", "6.2.0", ("gcc", "12.3.0"),
        {"asan": True, "build_type": "RelWithDebInfo", "build_system": "cmake"},
        ["+asan", "build_system=cmake", "build_type=RelWithDebInfo"],
        ["root", "ml-linux-x86_64-rocm"],
    ),
    (
        "rocblas", "6.1.2", ("gcc", "11.4.0"),
        {"tensile": True, "amdgpu_target": ["gfx90a", "gfx942"], "build_system": "cmake",
         "cflags": ["-O2"]},
        ["amdgpu_target:=gfx90a,gfx942", "build_system=cmake", "+tensile"],
        ["root", "e4s"],
    ),
    (
        "rocblas", "6.2.0", ("gcc", "11.4.0"),
        {"tensile": False, "amdgpu_target": ["gfx90a"], "build_system": "cmake"},
        ["amdgpu_target:=gfx90a", "build_system=cmake", "~tensile"],
        ["root"],
    ),
    (  # only in e4s, not in root: not on the page (a page lists what the root index holds)
        "rocblas", "6.3.0", ("gcc", "13.3.0"),
        {"tensile": True, "build_system": "cmake"},
        ["build_system=cmake", "+tensile"],
        ["e4s"],
    ),
]  # fmt: skip


def test_database_v7_release_in_v2_layout_round_trip(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    stacks: dict[str, list[dict[str, Any]]] = {}
    expected: dict[str, dict[str, tuple[Any, ...]]] = {"hip": {}, "rocblas": {}}
    for i, (name, version, compiler, params, variants, labels) in enumerate(V7_SPECS):
        spec_hash = fake_hash(f"v7-{i}")
        node = spec_node(
            name, version, spec_hash, os="rhel8", target="zen3",
            parameters=params, compiler=compiler, db_version=7,
        )  # fmt: skip
        for label in labels:
            stacks.setdefault(label, []).append(node)
        if "root" in labels:
            expected[name][spec_hash] = (
                version, f"{compiler[0]}@{compiler[1]}", "rhel8", "linux", "zen3",
                tuple(variants), frozenset(labels),
            )  # fmt: skip
    infos = build_catalog_from_specs(docroot, {"v0.23.1": stacks}, layout="v2", db_version=7)
    config = _config(tmp_path, server, "all")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    out = _export(tmp_path, config, "v0.23.1")

    root_tarballs = infos["v0.23.1"]["root"].tarballs
    for package in ("hip", "rocblas"):
        data = (out / "v0.23.1" / package / "specs.md").read_bytes()
        assert data.startswith(
            f'---\ntitle: "{package}"\nlayout: cache\ncategories: [package, v0.23.1]\n'.encode()
        )
        page = parse_page(data)
        assert {s.hash: _fields(s) for s in page.specs} == expected[package]
        assert {s.hash: s.size for s in page.specs} == {
            h: (docroot / root_tarballs[h]).stat().st_size for h in expected[package]
        }
    hip = parse_page((out / "v0.23.1/hip/specs.md").read_bytes()).meta
    assert hip == PageMeta(
        compilers=("gcc@11.4.0", "gcc@12.3.0"),
        oss=("rhel8",),
        platforms=("linux",),
        targets=("zen3",),
        versions=("6.1.2", "6.2.0"),
        stacks=("e4s", "ml-linux-x86_64-rocm", "root"),
        num_specs=2,
        num_specs_by_stack={"e4s": 1, "ml-linux-x86_64-rocm": 2, "root": 2},
    )
    rocblas = parse_page((out / "v0.23.1/rocblas/specs.md").read_bytes()).meta
    assert (rocblas.num_specs, rocblas.num_specs_by_stack) == (2, {"e4s": 1, "root": 2})
    assert rocblas.versions == ("6.1.2", "6.2.0")  # 6.3.0 is only in e4s


def test_export_selected_packages_and_refuse_unknown_ones(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = [spec_node(name, "1.0", fake_hash(f"sel-{name}")) for name in ("zlib", "cmake", "curl")]
    build_catalog_from_specs(docroot, {"develop": {"root": specs}})
    config = _config(tmp_path, server, "none")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    out = _export(tmp_path, config, "develop", "--package", "zlib", "--package", "curl")
    assert sorted(p.name for p in (out / "develop").iterdir()) == ["curl", "zlib"]

    everything = _export(tmp_path, config, "develop")
    assert sorted(p.name for p in (everything / "develop").iterdir()) == ["cmake", "curl", "zlib"]

    def refused(*args: str) -> str:
        result = run_cli(
            "-c", str(config), "export", "pages", "--out", str(tmp_path / "x"), *args,
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert not (tmp_path / "x").exists()
        return result.stderr.strip()

    assert refused("--release", "develop", "--package", "zlib", "nope") == (
        "mirrorsync: error: release develop has no package nope"
    )
    assert refused("--release", "v0.1.0").startswith(
        "mirrorsync: error: no synced release v0.1.0 in "
    )


PAGES = REPO / "tests" / "data" / "pages"
#: A Spack 1.x page: := variants, patches, gcc@13.2.0 compilers and a spec without one.
CURRENT_PAGE = PAGES / "rocblas-develop-current.md"
#: The same package printed by the Spack 0.2x generator: gcc@=, = for multi-valued variants.
OLDER_PAGE = PAGES / "rocblas-develop-2025-03-23-older.md"


def _index(docroot: Path, info: MirrorInfo) -> dict[str, Any]:
    installs: dict[str, Any] = json.loads(info.index_path.read_bytes())["database"]["installs"]
    return installs


def test_current_page_rebuilt_as_a_database_v8_catalogue_comes_back_byte_for_byte(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    data = CURRENT_PAGE.read_bytes()
    page = parse_page(data)
    cached, uncached = catalogue_from_page(page)
    infos = build_catalog_from_specs(
        docroot, {page.release: cached}, uncached={page.release: uncached}, db_version=8
    )[page.release]
    # What the fixture wrote is what Spack 1.x writes: no compiler key; the compiler
    # as annotations.compiler, or as a c/cxx dependency on an uncached external gcc.
    root = _index(docroot, infos["root"])
    rocblas = {h: i["spec"] for h, i in root.items() if i["spec"]["name"] == "rocblas"}
    assert all("compiler" not in n for n in rocblas.values())
    assert any(n["annotations"].get("compiler") == "gcc@=11.4.0" for n in rocblas.values())
    gccs = {h: i for h, i in root.items() if i["spec"]["name"] == "gcc"}
    assert gccs and all(not i["in_buildcache"] and "external" in i["spec"] for i in gccs.values())
    assert any(
        d["hash"] in gccs and d["parameters"]["virtuals"] == ["c", "cxx"]
        for n in rocblas.values()
        for d in n.get("dependencies", [])
    )
    # A stack the page names for a hash its index lists only uncached.
    e4s = _index(docroot, infos["e4s"])
    listed_only = {
        h for h, i in e4s.items() if i["spec"]["name"] == "rocblas" and not i["in_buildcache"]
    }
    assert listed_only and all("e4s" in s.stacks for s in page.specs if s.hash in listed_only)
    manifest = (docroot / "develop" / INDEX_MANIFEST).read_text()
    assert manifest.startswith('{\n"version":3,\n"data":[\n{\n"contentLength":')  # indent=0

    config = _config(tmp_path, server, "none")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    out = _export(tmp_path, config, "develop", "--package", "rocblas")
    assert (out / "develop/rocblas/specs.md").read_bytes() == data
    # ...while events keep their meaning: e4s does not hold what it did not push.
    with sqlite3.connect(tmp_path / "state.db") as conn:
        held = {
            r[0]
            for r in conn.execute(
                "SELECT s.hash FROM events e JOIN specs s ON s.id = e.spec_id"
                " JOIN stacks st ON st.id = e.stack_id WHERE e.type = 'spec.added'"
                " AND st.name = 'e4s'"
            )
        }
    assert held and not held & listed_only


def test_current_and_older_pages_of_a_package_read_back_as_a_pages_source(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    for path in (CURRENT_PAGE, OLDER_PAGE):
        (docroot / path.name).write_bytes(path.read_bytes())
    urls = "".join(f"      - {server.url}/{p.name}\n" for p in (CURRENT_PAGE, OLDER_PAGE))
    config = write_config(
        tmp_path / "p.yaml",
        f"database: {tmp_path / 'p.db'}\nsources:\n  - name: pages\n    kind: pages\n"
        f"    urls:\n{urls}",
    )
    result = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "p.db") as conn:
        rows = conn.execute(
            "SELECT st.release, s.compiler, s.variants FROM memberships m"
            " JOIN specs s ON s.id = m.spec_id JOIN stacks st ON st.id = m.stack_id"
            " WHERE st.name = 'root' AND m.left IS NULL"
        ).fetchall()
    by_release: dict[str, set[str | None]] = {}
    for release, compiler, _ in rows:
        by_release.setdefault(release, set()).add(compiler)
    expected = {"gcc@11.4.0", "gcc@13.2.0", None}  # both notations, stored as one
    assert by_release == {"develop": expected, "develop-2025-03-23": expected}
    variants = {v for _, _, text in rows for v in json.loads(text)}
    assert {"amdgpu_target:=gfx90a", "patches:=299b958,ae9077a", "amdgpu_target=gfx90a"} <= variants


def test_a_stack_that_only_lists_a_hash_is_on_the_page_but_holds_nothing(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    zlib = [spec_node("zlib", f"1.{i}", fake_hash(f"listed-{i}")) for i in range(3)]
    config = _config(tmp_path, server, "none")

    def run(e4s_cached: list[Any], e4s_listed: list[Any]) -> tuple[str, list[tuple[str, str]]]:
        build_catalog_from_specs(
            docroot,
            {"develop": {"root": zlib, "e4s": e4s_cached}},
            uncached={"develop": {"e4s": e4s_listed}},
        )
        assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
        page = parse_page(
            (_export(tmp_path, config, "develop") / "develop/zlib/specs.md").read_bytes()
        )
        with sqlite3.connect(tmp_path / "state.db") as conn:
            events = conn.execute(
                "SELECT e.type, s.hash FROM events e JOIN stacks st ON st.id = e.stack_id"
                " JOIN specs s ON s.id = e.spec_id WHERE st.name = 'e4s' ORDER BY e.id"
            ).fetchall()
        e4s = "".join(str(int("e4s" in s.stacks)) for s in sorted(page.specs, key=lambda s: s.hash))
        return e4s, events

    order = sorted(range(3), key=lambda i: zlib[i]["hash"])

    def marks(*held: int) -> str:
        return "".join(str(int(i in held)) for i in order)

    # e4s pushed zlib 0 and only lists zlib 1: the page names e4s for both, one event.
    assert run([zlib[0]], [zlib[1]]) == (marks(0, 1), [("spec.added", zlib[0]["hash"])])
    # It stops listing zlib 1: the page changes, no event (no binary came or went).
    assert run([zlib[0]], []) == (marks(0), [("spec.added", zlib[0]["hash"])])
    # It lists zlib 2 and pushes zlib 1: one event, for the binary.
    assert run([zlib[0], zlib[1]], [zlib[2]]) == (
        marks(0, 1, 2),
        [("spec.added", zlib[0]["hash"]), ("spec.added", zlib[1]["hash"])],
    )


def test_clean_removes_pages_of_packages_gone_from_the_release(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    def build(names: tuple[str, ...]) -> None:
        specs = [spec_node(name, "1.0", fake_hash(f"clean-{name}")) for name in names]
        build_catalog_from_specs(docroot, {"develop": {"root": specs}})

    build(("zlib", "cmake", "curl"))
    config = _config(tmp_path, server, "none")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    out = _export(tmp_path, config, "develop")
    (out / "develop" / "curl" / "notes.txt").write_text("someone else's file\n")

    build(("zlib",))  # cmake and curl leave the release
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    kept = _export(tmp_path, config, "develop")
    assert sorted(p.name for p in (kept / "develop").iterdir()) == ["cmake", "curl", "zlib"]

    cleaned = run_cli(
        "-c", str(config), "export", "pages", "--release", "develop", "--out", str(out),
        "--clean", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert cleaned.returncode == 0, cleaned.stderr
    report = json.loads(cleaned.stdout)
    assert report["page_count"] == 1
    assert sorted(Path(p).parent.name for p in report["removed"]) == ["cmake", "curl"]
    assert sorted(p.name for p in (out / "develop").iterdir()) == ["curl", "zlib"]
    assert [p.name for p in (out / "develop" / "curl").iterdir()] == ["notes.txt"]
