"""``kind: pages`` sources: cache.spack.io pages synced like indexes, over real HTTP and SQLite."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from conftest import database_value, json_lines, run_cli, sync
from dbstate import SEED_NET_CHANGE, net_by_stack
from mirrorsync.config import Config, PagesSource, parse_config
from mirrorsync.errors import EXIT_USAGE, ConfigError
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash
from mirrorsync.formats.index import SpecInfo
from mirrorsync.formats.pages import Page, parse_page
from mirrorsync.store import Store, names, overview, queries, specs
from mirrorsync.store.location import Location
from mirrorsync.sync import pages as pages_sync
from test_sync import all_events

DATA = Path(__file__).parents[1] / "src" / "mirrorsync" / "fixture" / "data"
SEED_000 = next(DATA.glob("000_*.txt"))
SEED_001 = next(DATA.glob("001_*.txt"))
SEED_PATH = "/package/develop/py-pyproject-hooks/specs.md"

HTTP = """
http:
  concurrency: 8
  per_host_rate: 1000
  timeout: 5
  retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.05}
"""


def pages_yaml(tmp_path: Path, urls: list[str], name: str = "pages") -> str:
    listed = "".join(f"      - {url}\n" for url in urls)
    return (
        f"database: {tmp_path / 'state.db'}\n"
        f"sources:\n  - name: {name}\n    kind: pages\n    urls:\n{listed}{HTTP}"
    )


def pages_config(tmp_path: Path, urls: list[str]) -> Config:
    return parse_config(pages_yaml(tmp_path, urls), str(tmp_path / "mirrorsync.yaml"))


Entry = tuple[str, str, list[str]]  # hash, version, stacks


def page_bytes(
    package: str,
    release: str,
    entries: list[Entry],
    *,
    compiler: str = "none",
    note: str = "",
    size: int | str = "-",
) -> bytes:
    """A page in the generator's shape (FORMATS.md section 5); ``note`` changes only meta."""
    details = [
        {
            "compiler": compiler,
            "hash": spec_hash,
            "os": "ubuntu24.04",
            "platform": "linux",
            "size": size,
            "stacks": sorted(stacks),
            "target": "x86_64_v3",
            "variants": ["+shared", "build_type=Release"],
            "versions": [version],
        }
        for spec_hash, version, stacks in sorted(entries)
    ]
    meta: dict[str, object] = {"num_specs": len(entries)}
    if note:
        meta["compilers"] = [note]
    return (
        f'---\ntitle: "{package}"\nlayout: cache\ncategories: [package, {release}]\n'
        f"meta: {json.dumps(meta)}\nspec_details: {json.dumps(details)}\n---\n"
    ).encode()


def put(docroot: Path, path: str, data: bytes) -> None:
    target = docroot / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def h(seed: str) -> str:
    return fake_hash(seed)


def stacks_state(db: Location) -> dict[tuple[str, str], tuple[int, int, bool]]:
    """(release, stack) -> (version, spec_count, present)."""

    async def read() -> list[overview.StackStatus]:
        async with await Store.open(db, create=False) as store:
            return await overview.status(store)

    return {(s.release, s.stack): (s.version, s.spec_count, s.present) for s in anyio.run(read)}


def members(db: Location, release: str, stack: str) -> set[str]:
    async def read() -> set[str]:
        async with await Store.open(db, create=False) as store:
            stack_id = await names.find_stack(store, release, stack)
            versions = await queries.history(store, stack_id)
            latest = max(v.version for v in versions)
            return {s.hash for s in await queries.members_at(store, stack_id, latest)}

    return anyio.run(read)


def spec_row(db: Location, spec_hash: str) -> SpecInfo | None:
    async def read() -> SpecInfo | None:
        async with await Store.open(db, create=False) as store:
            return await specs.spec(store, spec_hash)

    return anyio.run(read)


# -- configuration -------------------------------------------------------------


@pytest.mark.usefixtures("backend")
def test_specs_of_a_pages_source_shows_the_pages_sizes_and_no_crawl_to_wait_for(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """A pages source is never crawled: ``specs`` shows the size its page gives and says
    so, instead of ``-`` and ``not yet`` (issue 30, misleading)."""
    entries: list[Entry] = [(h("s1"), "1.3", ["root"]), (h("s2"), "1.2", ["root"])]
    put(docroot, "/zlib.md", page_bytes("zlib", "develop", entries, size=2_345_678))
    config = tmp_path / "mirrorsync.yaml"
    text = pages_yaml(tmp_path, [f"{server.url}/zlib.md"])
    config.write_text(text.replace(str(tmp_path / "state.db"), database_value(tmp_path)))
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    shown = run_cli(
        "-c", str(config), "specs", "--release", "develop", "--stack", "root", cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if line.startswith(h("s1"))]
    assert len(rows) == 1 and "2.3 MB" in rows[0] and "not crawled" in rows[0], shown.stdout
    assert "not yet" not in shown.stdout
    as_json = run_cli(
        "-c",
        str(config),
        "specs",
        "--release",
        "develop",
        "--stack",
        "root",
        "--json",
        cwd=tmp_path,
    )
    sizes = {json.loads(line)["tarball_size"] for line in as_json.stdout.splitlines()}
    assert sizes == {2_345_678}


def test_pages_source_parses() -> None:
    config = parse_config(
        "sources:\n  - name: cache\n    kind: pages\n    urls:\n"
        "      - https://cache.spack.io/package/develop/zlib/specs.md\n"
        "      - http://mirror.example.org/pages/cmake.md\n"
    )
    (source,) = config.sources
    assert isinstance(source, PagesSource) and source.kind == "pages"
    assert source.urls == [
        "https://cache.spack.io/package/develop/zlib/specs.md",
        "http://mirror.example.org/pages/cmake.md",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources: [{name: a, kind: pages}]", "f.yaml: sources[0].urls: required key is missing"),
        (
            "sources: [{name: a, kind: pages, urls: []}]",
            "f.yaml: sources[0].urls: expected at least one page URL",
        ),
        (
            "sources: [{name: a, kind: pages, urls: 'http://x/p'}]",
            "f.yaml: sources[0].urls: expected a list of URLs, got str",
        ),
        (
            "sources: [{name: a, kind: pages, urls: ['http://x/p', 'file:///p']}]",
            "f.yaml: sources[0].urls[1]: expected an http:// or https:// URL, got 'file:///p'",
        ),
        (
            "sources: [{name: a, kind: pages, urls: ['http://x/p', 'http://x/p']}]",
            "f.yaml: sources[0].urls[1]: duplicate URL 'http://x/p'",
        ),
        (
            "sources: [{name: a, kind: pages, urls: ['http://x/p'], url: 'http://x/p'}]",
            "f.yaml: sources[0].url: unknown key; did you mean 'urls'?",
        ),
        (
            "sources: [{name: a, kind: pages, urls: ['http://x/p'], manifests: all}]",
            "f.yaml: sources[0].manifests: unknown key",
        ),
    ],
)
def test_bad_pages_source_is_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.yaml")
    assert str(caught.value) == message
    assert caught.value.exit_code == EXIT_USAGE


# -- syncing -------------------------------------------------------------------


def test_seed_000_then_001_at_one_url_gives_exactly_the_documented_changes(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    shutil.copyfile(SEED_000, docroot / "specs.md")
    config = pages_config(tmp_path, [f"{server.url}/specs.md"])
    db = config.database_path

    first = sync(config)
    assert first.exit_code == 0, first.failures
    expected_counts = parse_page(SEED_000.read_bytes()).meta.num_specs_by_stack
    assert {o.stack: o.spec_count for o in first.stacks} == expected_counts
    assert {o.status for o in first.stacks} == {"changed"}
    events = all_events(db)
    assert Counter(e["type"] for e in events) == Counter(
        {"release.added": 1, "stack.added": 6, "spec.added": sum(expected_counts.values())}
    )
    assert {e["release"] for e in events} == {"develop"}
    # Spec metadata comes from the page, in the notation an index gives.
    row = spec_row(db, "2lo2i7w7ijqlkydoeuimi4u5hfplepcc")
    assert row is not None
    assert (row.name, row.version, row.os, row.platform, row.target, row.compiler) == (
        "py-pyproject-hooks",
        "1.0.0",
        "ubuntu22.04",
        "linux",
        "x86_64_v3",
        None,
    )
    assert row.variants == ("build_system=python_pip",)

    shutil.copyfile(SEED_001, docroot / "specs.md")
    second = sync(config)
    assert second.exit_code == 0, second.failures
    changes = all_events(db)[len(events) :]
    assert net_by_stack(changes) == SEED_NET_CHANGE
    kinds = Counter(e["type"] for e in changes)
    assert kinds == Counter({"stack.added": 1, "spec.added": 20, "spec.removed": 80})
    assert {(r, s): v for (r, s), (v, _, _) in stacks_state(db).items()} == {
        ("develop", stack): 2 for stack in expected_counts
    } | {("develop", "e4s"): 1}

    # Third run: the page is unchanged, so the server answers 304 and nothing is recorded.
    server.reset_log()
    third = sync(config)
    assert third.exit_code == 0, third.failures
    assert [r.status for r in server.requests] == [304]
    assert {o.status for o in third.stacks} == {"unchanged"}
    assert len(all_events(db)) == len(events) + len(changes)


def test_pages_of_two_packages_give_the_union_per_stack(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    put(
        docroot,
        "/zlib.md",
        page_bytes(
            "zlib",
            "develop",
            [(h("z1"), "1.3", ["root", "e4s"]), (h("z2"), "1.2", ["root"])],
            compiler="gcc@11.4.0",
        ),
    )
    put(
        docroot,
        "/cmake.md",
        page_bytes(
            "cmake",
            "develop",
            [(h("c1"), "3.30", ["root", "e4s"]), (h("c2"), "3.27", ["root", "ml"])],
        ),
    )
    config = pages_config(tmp_path, [f"{server.url}/zlib.md", f"{server.url}/cmake.md"])
    db = config.database_path

    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert members(db, "develop", "root") == {h("z1"), h("z2"), h("c1"), h("c2")}
    assert members(db, "develop", "e4s") == {h("z1"), h("c1")}
    assert members(db, "develop", "ml") == {h("c2")}
    assert stacks_state(db) == {
        ("develop", "root"): (1, 4, True),
        ("develop", "e4s"): (1, 2, True),
        ("develop", "ml"): (1, 1, True),
    }
    zlib = spec_row(db, h("z1"))
    assert zlib is not None and (zlib.name, zlib.version, zlib.compiler) == (
        "zlib",
        "1.3",
        "gcc@11.4.0",  # the older page's gcc@=11.4.0, normalised as Spack 1.x prints it
    )
    assert zlib.variants == ("+shared", "build_type=Release")

    # cmake leaves e4s and its ml build is gone: only the e4s members of cmake go,
    # zlib's stay; ml has no page listing it any more and is retired.
    seen = len(all_events(db))
    put(docroot, "/cmake.md", page_bytes("cmake", "develop", [(h("c1"), "3.30", ["root"])]))
    report = sync(config)
    assert report.exit_code == 0, report.failures
    changes = all_events(db)[seen:]
    assert Counter((e["type"], e["stack"], e["hash"]) for e in changes) == Counter(
        {
            ("spec.removed", "e4s", h("c1")): 1,
            ("spec.removed", "root", h("c2")): 1,
            ("spec.removed", "ml", h("c2")): 1,
            ("stack.removed", "ml", None): 1,
        }
    )
    assert members(db, "develop", "e4s") == {h("z1")}
    assert stacks_state(db)[("develop", "ml")] == (2, 0, False)
    assert {o.stack: o.status for o in report.stacks} == {
        "root": "changed",
        "e4s": "changed",
        "ml": "removed",
    }


def test_a_release_no_page_lists_any_more_is_removed(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    put(docroot, "/a.md", page_bytes("zlib", "develop", [(h("d1"), "1.3", ["root"])]))
    put(docroot, "/b.md", page_bytes("zlib", "v1.0", [(h("v1"), "1.2", ["root", "e4s"])]))
    config = pages_config(tmp_path, [f"{server.url}/a.md", f"{server.url}/b.md"])
    db = config.database_path
    assert sync(config).exit_code == 0
    seen = len(all_events(db))

    # The second URL now serves a page of develop: release v1.0 is gone.
    put(docroot, "/b.md", page_bytes("cmake", "develop", [(h("c1"), "3.30", ["root"])]))
    report = sync(config)
    assert report.exit_code == 0, report.failures
    changes = all_events(db)[seen:]
    assert Counter((e["type"], e["release"], e["stack"]) for e in changes) == Counter(
        {
            ("spec.added", "develop", "root"): 1,
            ("spec.removed", "v1.0", "root"): 1,
            ("spec.removed", "v1.0", "e4s"): 1,
            ("stack.removed", "v1.0", "root"): 1,
            ("stack.removed", "v1.0", "e4s"): 1,
            ("release.removed", "v1.0", None): 1,
        }
    )
    assert changes[-1]["type"] == "release.removed"  # after the stacks it held
    assert members(db, "develop", "root") == {h("d1"), h("c1")}


@pytest.mark.parametrize("failure", ["malformed", "http-500", "missing"])
def test_one_failing_page_fails_the_source_and_keeps_every_stack(
    tmp_path: Path, docroot: Path, server: FixtureServer, failure: str
) -> None:
    put(docroot, "/zlib.md", page_bytes("zlib", "develop", [(h("z1"), "1.3", ["root", "e4s"])]))
    put(docroot, "/cmake.md", page_bytes("cmake", "develop", [(h("c1"), "3.30", ["root", "ml"])]))
    bad_url = f"{server.url}/cmake.md"
    config = pages_config(tmp_path, [f"{server.url}/zlib.md", bad_url])
    db = config.database_path
    assert sync(config).exit_code == 0
    before_events, before_stacks = all_events(db), stacks_state(db)

    # zlib changes too, but nothing may be recorded while cmake's page is unknown:
    # without it, ml would look empty and be retired.
    put(docroot, "/zlib.md", page_bytes("zlib", "develop", [(h("z2"), "1.4", ["root", "e4s"])]))
    if failure == "malformed":
        put(docroot, "/cmake.md", b"---\ntitle: cmake\nspec_details: [\n---\n")
        expected = f"source pages: malformed cache page at {bad_url}: invalid YAML"
    elif failure == "http-500":
        server.add_fault("/cmake.md", "status", status=500, times=None)
        expected = f"source pages: {bad_url}: HTTP 500"
    else:
        (docroot / "cmake.md").unlink()
        expected = f"source pages: {bad_url}: HTTP 404"

    report = sync(config)
    assert report.exit_code == 1
    assert len(report.failures) == 1
    (line,) = report.failures
    assert line.startswith(expected) and "\n" not in line
    assert report.stacks == []
    assert all_events(db) == before_events
    assert stacks_state(db) == before_stacks

    # Once the page is back, both pages' changes are recorded together.
    server.clear_faults()
    put(docroot, "/cmake.md", page_bytes("cmake", "develop", [(h("c1"), "3.30", ["root", "ml"])]))
    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert members(db, "develop", "root") == {h("z2"), h("c1")}
    assert members(db, "develop", "e4s") == {h("z2")}
    assert members(db, "develop", "ml") == {h("c1")}


def test_a_page_whose_hashes_did_not_change_makes_no_new_version(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    entries: list[Entry] = [(h("z1"), "1.3", ["root", "e4s"]), (h("z2"), "1.2", ["root"])]
    put(docroot, "/zlib.md", page_bytes("zlib", "develop", entries))
    config = pages_config(tmp_path, [f"{server.url}/zlib.md"])
    db = config.database_path
    assert sync(config).exit_code == 0
    before_events, before_stacks = all_events(db), stacks_state(db)

    put(docroot, "/zlib.md", page_bytes("zlib", "develop", entries, note="gcc@=13.2.0"))
    server.reset_log()
    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert [r.status for r in server.requests] == [200]  # new bytes were fetched...
    assert {o.stack: o.status for o in report.stacks} == {"root": "unchanged", "e4s": "unchanged"}
    assert all_events(db) == before_events  # ...but they hold the same hashes
    assert stacks_state(db) == before_stacks


def test_pages_are_parsed_one_at_a_time(
    tmp_path: Path, docroot: Path, server: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent first use of msgspec.convert crashes the process (msgspec 0.22)."""
    active, most = 0, 0
    lock = threading.Lock()

    def watched(data: bytes, url: str | None = None) -> Page:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.05)  # long enough for every fetched page to be waiting to parse
        try:
            return parse_page(data, url)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(pages_sync, "parse_page", watched)
    urls = []
    for i in range(6):
        put(docroot, f"/p{i}.md", page_bytes(f"pkg{i}", "develop", [(h(f"p{i}"), "1", ["root"])]))
        urls.append(f"{server.url}/p{i}.md")
    report = sync(pages_config(tmp_path, urls))
    assert report.exit_code == 0, report.failures
    assert most == 1
    assert members(pages_config(tmp_path, urls).database_path, "develop", "root") == {
        h(f"p{i}") for i in range(6)
    }


def test_cli_once_with_a_pages_config(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    put(docroot, SEED_PATH, SEED_000.read_bytes())
    put(docroot, "/zlib.md", page_bytes("zlib", "develop", [(h("z1"), "1.3", ["root", "e4s"])]))
    put(docroot, "/cmake.md", page_bytes("cmake", "develop", [(h("c1"), "3.3", ["root", "e4s"])]))
    put(docroot, "/hdf5.md", page_bytes("hdf5", "develop", [(h("d1"), "1.14", ["root"])]))
    urls = [f"{server.url}{path}" for path in (SEED_PATH, "/zlib.md", "/cmake.md", "/hdf5.md")]
    config = tmp_path / "mirrorsync.yaml"
    config.write_text(pages_yaml(tmp_path, urls))

    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ml-linux-x86_64-rocm" in done.stderr and "Traceback" not in done.stderr

    status = json.loads(run_cli("-c", str(config), "status", "--json", cwd=tmp_path).stdout)
    counts = {s["stack"]: s["spec_count"] for s in status}
    assert counts == {
        "root": 96,
        "e4s": 2,
        "ml-linux-aarch64-cpu": 20,
        "ml-linux-aarch64-cuda": 20,
        "ml-linux-x86_64-cpu": 34,
        "ml-linux-x86_64-cuda": 20,
        "ml-linux-x86_64-rocm": 18,
    }
    added = json_lines(
        run_cli("-c", str(config), "events", "--type", "spec.added", "--json", cwd=tmp_path).stdout
    )
    assert len(added) == sum(counts.values())
    assert {r["source"] for r in added} == {"pages"}

    (docroot / "zlib.md").write_bytes(b"not a page")
    failed = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert failed.returncode == 1
    lines = [x for x in failed.stderr.splitlines() if x.startswith("mirrorsync: failed:")]
    assert lines == [
        f"mirrorsync: failed: source pages: malformed cache page at {server.url}/zlib.md:"
        " no front matter (first line is not ---)"
    ]
    assert "Traceback" not in failed.stderr


def test_bundled_example_config_parses() -> None:
    path = Path(__file__).parents[1] / "config" / "cache-pages.yaml"
    (source,) = parse_config(path.read_text(), str(path)).sources
    assert isinstance(source, PagesSource) and len(source.urls) == 2
