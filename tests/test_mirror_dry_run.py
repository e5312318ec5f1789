"""``mirror --dry-run`` says what the copy would hold and do, in words that fit a dry run
(issue 30, misleading): how many binaries the filters chose and how many came in as
their dependencies, the tarballs apart from the whole copy, and a log line that says
``would fetch``, never ``fetched``. Real processes, a real fixture server."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import QUICK_RETRIES, database_value, run_cli, write_config
from mirrorsync.fixture.build import write_catalog, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import Node, fake_hash, spec_node
from mirrorsync.units import human_size


def _nodes() -> list[Node]:
    zlib = spec_node("zlib", "1.3", fake_hash("dry:zlib"))
    libxml = spec_node(
        "libxml2", "2.9", fake_hash("dry:libxml2"), dependencies=[("zlib", zlib["hash"])]
    )
    app = spec_node(
        "app",
        "1.0",
        fake_hash("dry:app"),
        dependencies=[("libxml2", libxml["hash"]), ("zlib", zlib["hash"])],
    )
    other = spec_node("other", "2.0", fake_hash("dry:other"))
    return [zlib, libxml, app, other]


def test_mirror_dry_run_names_matches_dependencies_and_tarballs(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    info = write_v3_mirror(docroot / "develop", _nodes())
    write_catalog(docroot, {"develop": {"root": "develop"}})
    base = (
        f"database: {database_value(tmp_path)}\nsources:\n  - name: test\n    kind: catalog\n"
        f"    url: {server.url}/cache_spack_io_index.json\n"
        f"    bucket_urls: {{spack-binaries: {server.url}/}}\n{QUICK_RETRIES}"
    )
    config = write_config(tmp_path / "c.yaml", base)
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    write_config(
        config,
        base + f"mirrors:\n  - {{name: local, path: {tmp_path / 'copy'}, source: test, "
        "release: develop, packages: [app]}\n",
    )
    dry = run_cli("-c", str(config), "mirror", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    closure = ("zlib", "libxml2", "app")
    tarballs = sum(
        (docroot / "develop" / info.tarballs[n["hash"]]).stat().st_size
        for n in _nodes()
        if n["name"] in closure
    )
    assert (
        f"mirror local: 3 binaries: 1 matched the filters, 2 came in as dependencies; "
        f"tarballs {human_size(tarballs)}, the whole copy " in dry.stdout
    ), dry.stdout
    assert "fetched" not in dry.stderr and "would fetch 6 blobs" in dry.stderr, dry.stderr
    assert not re.search(r"\bdeleted\b", dry.stderr), dry.stderr
    as_json = run_cli("-c", str(config), "mirror", "--dry-run", "--json", cwd=tmp_path)
    (plan,) = json.loads(as_json.stdout)
    assert (plan["binaries"], plan["matched"], plan["dependencies"]) == (3, 1, 2)
    assert plan["tarball_bytes"] == tarballs < plan["bytes"]
    assert not (tmp_path / "copy").exists() or not any((tmp_path / "copy").rglob("*.json"))
