"""Core sync against the fixture server: exactly the right events, and no needless downloads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest

from conftest import catalog_config, database_value, sync
from dbstate import select
from mirrorsync.config import parse_config
from mirrorsync.fixture.build import build_catalog_from_specs, write_v2_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store import Store, eventlog
from mirrorsync.store.location import Location


def nodes(prefix: str, n: int, name: str = "zlib") -> list[dict[str, object]]:
    return [spec_node(f"{name}-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


def all_events(db: Location) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        async with await Store.open(db, create=False) as store:
            return [e.to_dict() async for e in eventlog.events(store)]

    return anyio.run(read)


def per_stack(events: list[dict[str, object]]) -> Counter[tuple[object, ...]]:
    return Counter((e["type"], e["release"], e["stack"]) for e in events)


@pytest.mark.usefixtures("backend")
def test_catalog_changes_give_exactly_the_right_events(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    root, e4s, ml, v1 = nodes("r", 6), nodes("e", 5), nodes("m", 4), nodes("v", 3)
    build_catalog_from_specs(
        docroot, {"develop": {"root": root, "e4s": e4s, "ml-cpu": ml}, "v1.0.0": {"root": v1}}
    )
    config = catalog_config(tmp_path, server)
    db = config.database_path

    first = sync(config)
    assert first.exit_code == 0, first.failures
    events = all_events(db)
    assert per_stack(events) == Counter(
        {
            ("release.added", "develop", None): 1,
            ("release.added", "v1.0.0", None): 1,
            ("stack.added", "develop", "root"): 1,
            ("stack.added", "develop", "e4s"): 1,
            ("stack.added", "develop", "ml-cpu"): 1,
            ("stack.added", "v1.0.0", "root"): 1,
            ("spec.added", "develop", "root"): 6,
            ("spec.added", "develop", "e4s"): 5,
            ("spec.added", "develop", "ml-cpu"): 4,
            ("spec.added", "v1.0.0", "root"): 3,
        }
    )
    last_id = int(events[-1]["id"])  # type: ignore[call-overload]

    # e4s gains 3 and loses 2, ml-cpu leaves the catalogue, release v1.1.0 appears.
    new_e4s = e4s[2:] + nodes("x", 3)
    v11 = nodes("w", 2)
    build_catalog_from_specs(
        docroot,
        {
            "develop": {"root": root, "e4s": new_e4s},
            "v1.0.0": {"root": v1},
            "v1.1.0": {"root": v11},
        },
    )
    second = sync(config)
    assert second.exit_code == 0, second.failures
    changes = [e for e in all_events(db) if int(e["id"]) > last_id]  # type: ignore[call-overload]
    assert per_stack(changes) == Counter(
        {
            ("spec.added", "develop", "e4s"): 3,
            ("spec.removed", "develop", "e4s"): 2,
            ("spec.removed", "develop", "ml-cpu"): 4,
            ("stack.removed", "develop", "ml-cpu"): 1,
            ("release.added", "v1.1.0", None): 1,
            ("stack.added", "v1.1.0", "root"): 1,
            ("spec.added", "v1.1.0", "root"): 2,
        }
    )
    removed = {e["hash"] for e in changes if e["type"] == "spec.removed" and e["stack"] == "e4s"}
    assert removed == {e4s[0]["hash"], e4s[1]["hash"]}
    ids = [int(e["id"]) for e in changes]  # type: ignore[call-overload]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for e in changes:
        assert e["source"] == "test" and e["occurred_at"]
        if str(e["type"]).startswith("spec."):
            assert e["name"] and e["version"]
            assert e["stack_version"] == (1 if e["release"] == "v1.1.0" else 2)

    # Nothing changed: no events, no index blob; each index manifest asked for
    # conditionally and answered 304 (the catalogue may lag behind the stacks).
    server.reset_log()
    third = sync(config)
    assert third.exit_code == 0
    assert len(all_events(db)) == len(events) + len(changes)
    assert server.count("*/blobs/*") == 0
    manifests = [r for r in server.requests if r.path.endswith("/index.manifest.json")]
    assert len(manifests) == len(third.stacks) and {r.status for r in manifests} == {304}
    assert sorted(r.path for r in server.requests if r not in manifests) == [
        "/cache_spack_io_index.json"
    ]
    assert {o.status for o in third.stacks} == {"unchanged"}


@pytest.mark.usefixtures("backend")
def test_release_removed_from_catalog(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    build_catalog_from_specs(
        docroot, {"develop": {"root": nodes("a", 2)}, "v0.23.1": {"e4s": nodes("b", 2)}}
    )
    config = catalog_config(tmp_path, server)
    sync(config)
    before = len(all_events(config.database_path))
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("a", 2)}})
    assert sync(config).exit_code == 0
    after = all_events(config.database_path)[before:]
    assert [(e["type"], e["release"], e["stack"]) for e in after] == [
        ("spec.removed", "v0.23.1", "e4s"),
        ("spec.removed", "v0.23.1", "e4s"),
        ("stack.removed", "v0.23.1", "e4s"),
        ("release.removed", "v0.23.1", None),
    ]


def test_filters_select_releases_and_stacks(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(
        docroot,
        {
            "develop": {"root": nodes("a", 1), "e4s": nodes("b", 1), "ml-cpu": nodes("c", 1)},
            "v0.23.1": {"root": nodes("d", 1)},
            "v1.0.0": {"root": nodes("e", 1)},
        },
    )
    extra = '    releases: ["develop", "v1.*"]\n    exclude_stacks: ["ml-*"]'
    config = catalog_config(tmp_path, server, extra=extra)
    report = sync(config)
    assert sorted((o.release, o.stack) for o in report.stacks) == [
        ("develop", "e4s"),
        ("develop", "root"),
        ("v1.0.0", "root"),
    ]
    assert server.count("/v0.23.1/*") == 0 and server.count("/develop/ml-cpu/*") == 0


@pytest.mark.usefixtures("backend")
def test_v2_mirror_with_unchanged_hash_is_not_downloaded_again(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = nodes("v", 4)
    write_v2_mirror(docroot / "site", specs)
    config = parse_config(
        f"database: {database_value(tmp_path)}\n"
        f"sources: [{{name: site, kind: mirror, url: '{server.url}/site', release: local}}]\n"
    )
    first = sync(config)
    assert first.exit_code == 0, first.failures
    assert server.count("*/build_cache/index.json", method="GET") == 1
    assert [(o.release, o.stack, o.spec_count, o.added) for o in first.stacks] == [
        ("local", "root", 4, 4)
    ]

    server.reset_log()
    second = sync(config)
    assert second.exit_code == 0
    assert server.count("*/build_cache/index.json.hash") >= 1
    assert server.count("*/build_cache/index.json", method="GET") == 0
    assert second.stacks[0].status == "unchanged"

    # A real change is noticed through the hash file and downloaded once.
    write_v2_mirror(docroot / "site", specs[1:] + nodes("n", 2))
    server.reset_log()
    third = sync(config)
    assert (third.stacks[0].added, third.stacks[0].removed) == (2, 1)
    assert server.count("*/build_cache/index.json", method="GET") == 1


def test_conditional_requests_send_validators(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("a", 2)}})
    config = catalog_config(tmp_path, server)
    sync(config)
    server.reset_log()
    sync(config)
    (catalog,) = [r for r in server.requests if r.path == "/cache_spack_io_index.json"]
    assert catalog.status == 304
    assert "if-none-match" in {k.lower() for k in catalog.headers}


@pytest.mark.usefixtures("backend")
def test_index_blob_that_does_not_match_its_manifest_fails_only_that_stack(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    infos = build_catalog_from_specs(
        docroot, {"develop": {"root": nodes("a", 3), "e4s": nodes("b", 2)}}
    )
    blob = docroot / infos["develop"]["e4s"].index_blob_relpath
    blob.write_bytes(blob.read_bytes().replace(b'"1.0"', b'"9.9"'))
    config = catalog_config(tmp_path, server)
    report = sync(config)
    assert report.exit_code == 1
    assert len(report.failures) == 1 and "develop/e4s" in report.failures[0]
    assert "sha256" in report.failures[0]
    rows = dict(select(config.database_path, "SELECT name, version FROM stacks"))
    assert rows == {"root": 1, "e4s": 0}
