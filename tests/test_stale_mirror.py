"""Stale or inconsistent mirrors: refused, reported, state kept, retried next run.

Each case syncs a good mirror, then breaks one stack while every stack
changes, then repairs it: the broken stack keeps its version and gets no
events until the run after the repair, which catches up exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import catalog_config, sync
from dbstate import errors, event_counts, versions
from mirrorsync.config import parse_config
from mirrorsync.fixture.build import (
    INDEX_MANIFEST,
    MirrorInfo,
    build_catalog_from_specs,
    write_v3_mirror,
)
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node

STACKS = ("root", "e4s", "ml")


def nodes(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


def build(docroot: Path, generation: int, layout: str = "v3") -> dict[str, MirrorInfo]:
    infos = build_catalog_from_specs(
        docroot, {"develop": {s: nodes(s, 3 + generation) for s in STACKS}}, layout=layout
    )
    return infos["develop"]


def break_blob_404(docroot: Path, info: MirrorInfo) -> str:
    # Catalogue and index manifest both name this blob; the mirror lost it.
    (docroot / info.index_blob_relpath).unlink()
    return f"{info.index_blob_relpath}: HTTP 404 Not Found"


def break_blob_checksum(docroot: Path, info: MirrorInfo) -> str:
    blob = docroot / info.index_blob_relpath
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0x01  # same length, other bytes
    blob.write_bytes(bytes(data))
    return f"the manifest says {info.index_checksum}"


def break_manifest_length(docroot: Path, info: MirrorInfo) -> str:
    manifest = docroot / "develop/e4s" / INDEX_MANIFEST
    document = json.loads(manifest.read_text())
    document["data"][0]["contentLength"] += 7
    manifest.write_text(json.dumps(document))
    return f"got {info.index_size} bytes, the manifest says {info.index_size + 7}"


def break_v2_hash(docroot: Path, info: MirrorInfo) -> str:
    stale = hashlib.sha256(b"some other index").hexdigest()
    (docroot / info.index_blob_relpath).with_name("index.json.hash").write_text(stale)
    return f"but build_cache/index.json.hash says {stale}"


CASES: list[tuple[str, Callable[[Path, MirrorInfo], str]]] = [
    ("v3", break_blob_404),
    ("v3", break_blob_checksum),
    ("v3", break_manifest_length),
    ("v2", break_v2_hash),
]


@pytest.mark.parametrize(
    ("layout", "breaks"), CASES, ids=["blob-404", "blob-checksum", "manifest-length", "v2-hash"]
)
def test_inconsistent_mirror_is_refused_then_retried_next_run(
    tmp_path: Path,
    docroot: Path,
    server: FixtureServer,
    layout: str,
    breaks: Callable[[Path, MirrorInfo], str],
) -> None:
    build(docroot, 0, layout)
    config = catalog_config(tmp_path, server)
    db = config.database_path
    assert sync(config).exit_code == 0
    before = event_counts(db)

    info = build(docroot, 1, layout)["e4s"]
    says = breaks(docroot, info)
    report = sync(config)
    assert report.exit_code == 1
    (line,) = report.failures
    assert line.startswith("test:develop/e4s: http://") and says in line, line
    assert versions(db) == {("develop", "root"): 2, ("develop", "e4s"): 1, ("develop", "ml"): 2}
    assert ("spec.added", "develop", "e4s") not in event_counts(db) - before
    assert says in (errors(db)[("develop", "e4s")] or "")

    # Nothing about it was remembered as seen: the same breakage fails again...
    assert sync(config).exit_code == 1
    assert versions(db)[("develop", "e4s")] == 1

    # ...and once the mirror is whole, the next run catches up exactly once.
    build(docroot, 1, layout)
    if breaks is break_blob_checksum:  # the writer keeps blobs that exist; put it back
        (docroot / info.index_blob_relpath).unlink()
        build(docroot, 1, layout)
    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert versions(db) == {("develop", "root"): 2, ("develop", "e4s"): 2, ("develop", "ml"): 2}
    assert event_counts(db) - before == {("spec.added", "develop", s): 1 for s in STACKS}
    assert errors(db)[("develop", "e4s")] is None


def test_missing_blob_of_a_mirror_source_is_not_mistaken_for_layout_v2(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    # A mirror source detects its layout: a missing v3 *manifest* means "try v2",
    # but a v3 manifest naming a missing blob is a broken v3 mirror.
    info = write_v3_mirror(docroot / "site", nodes("s", 3))
    (docroot / "site" / info.index_blob_relpath).unlink()
    config = parse_config(
        f"database: {tmp_path / 'm.db'}\n"
        f"sources: [{{name: site, kind: mirror, url: '{server.url}/site'}}]\n"
        "http: {retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}\n"
    )
    report = sync(config)
    (line,) = report.failures
    assert f"/site/{info.index_blob_relpath}: HTTP 404" in line
    assert server.count("/site/build_cache/*") == 0
