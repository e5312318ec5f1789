"""One boundary per stack: whatever a hostile stack throws fails that stack only.

Each case is served by the fixture server over real sockets and synced by a real
``mirrorsync once`` process, twice: both times the hostile stack fails with one
line naming it, the healthy stacks commit (then stay unchanged), ``last_error``
is recorded, and no traceback reaches the user.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from conftest import QUICK_RETRIES, catalog_config_text, run_cli, spec_nodes, sync
from dbstate import errors, event_counts, sqlite_file, versions
from mirrorsync.config import parse_config
from mirrorsync.fixture.build import (
    INDEX_MANIFEST,
    build_catalog_from_specs,
    write_catalog,
)
from mirrorsync.fixture.server import FixtureServer
from receiver import Receiver, new_secret

STACKS = ("root", "e4s", "ml")
ROOTS = {"root": "develop", "e4s": "develop/e4s", "ml": "develop/ml"}
E4S_MANIFEST = f"/develop/e4s/{INDEX_MANIFEST}"
DEPTH = 2100


def config_text(tmp_path: Path, server: FixtureServer, extra: str = "") -> str:
    return catalog_config_text(
        tmp_path, server, extra=f"    manifests: none\n{extra}", http=QUICK_RETRIES
    )


def nest_e4s_parameters(docroot: Path, depth: int) -> None:
    """Give one e4s spec a parameter nested ``depth`` arrays deep, its index re-published
    (blob, index manifest, catalogue) as a mirror would: no encoder can write this."""
    mirror = docroot / ROOTS["e4s"]
    manifest_path = mirror / INDEX_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    (record,) = manifest["data"]
    digest = record["checksum"]
    blob = (mirror / f"blobs/sha256/{digest[:2]}/{digest}").read_bytes()
    deep = b"[" * depth + b'"x"' + b"]" * depth
    assert blob.count(b'"DEEP"') == 1
    blob = blob.replace(b'"DEEP"', deep)
    digest = hashlib.sha256(blob).hexdigest()
    path = mirror / f"blobs/sha256/{digest[:2]}/{digest}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    record.update(checksum=digest, contentLength=len(blob))
    manifest_path.write_text(json.dumps(manifest))
    write_catalog(docroot, {"develop": ROOTS})


def publish(docroot: Path, server: FixtureServer, case: str) -> None:
    specs = {s: spec_nodes(s, 3) for s in STACKS}
    if case == "deep-nesting":
        parameters = specs["e4s"][1]["parameters"]
        assert isinstance(parameters, dict)
        parameters["deep"] = "DEEP"
    elif case == "deep-unknown-field":  # a field mirrorsync never reads
        specs["e4s"][1]["annotations_of_the_future"] = "DEEP"
    build_catalog_from_specs(docroot, {"develop": specs}, manifests=False)
    if case == "bad-gzip":  # 200, Content-Encoding: gzip, a body that is not gzip
        body = json.dumps({"version": 3, "data": []})
        server.add_fault(E4S_MANIFEST, "gzipped", status=200, body=body, times=None)
    elif case == "redirect-loop":
        server.add_fault(E4S_MANIFEST, "redirect", location=E4S_MANIFEST, times=None)
    elif case.startswith("deep-"):
        nest_e4s_parameters(docroot, DEPTH)


@pytest.mark.parametrize(
    "case", ["bad-gzip", "redirect-loop", "deep-nesting", "deep-unknown-field"]
)
def test_hostile_stack_fails_alone_with_one_line_every_run(
    tmp_path: Path, docroot: Path, server: FixtureServer, case: str
) -> None:
    publish(docroot, server, case)
    config = tmp_path / "c.yaml"
    config.write_text(config_text(tmp_path, server))
    db = tmp_path / "state.db"
    for run, healthy in ((1, "changed"), (2, "unchanged")):
        done = run_cli("-c", str(config), "once", cwd=tmp_path)
        assert done.returncode == 1, (run, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.splitlines()
        failed = [line for line in lines if line.startswith("mirrorsync: failed:")]
        assert len(failed) == 1 and "\n" not in failed[0], (run, done.stderr)
        assert failed[0].startswith("mirrorsync: failed: test:develop/e4s: "), failed
        logged = [line for line in lines if line.startswith("ERROR")]
        assert len(logged) == 1 and "test:develop/e4s failed: " in logged[0], (run, lines)
        for stack in ("root", "ml"):
            assert any(f"test:develop/{stack} {healthy}: " in line for line in lines), lines
        assert versions(db) == {("develop", "root"): 1, ("develop", "e4s"): 0, ("develop", "ml"): 1}
        assert errors(db)[("develop", "e4s")] == failed[0].split(": ", 3)[3]
    assert {stack for _, _, stack in event_counts(db)} == {None, "root", "ml"}


def test_crawl_whose_manifests_are_all_broken_fails_only_that_stacks_crawl(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """Bodies that do not decode as their Content-Encoding says: once an httpx error
    out of the crawl's task group (an ExceptionGroup), now each a fetch failure the
    client names; either way only e4s's crawl fails, after its index committed."""
    build_catalog_from_specs(docroot, {"develop": {s: spec_nodes(s, 3) for s in STACKS}})
    pattern = "/develop/e4s/v3/manifests/spec/*"
    server.add_fault(pattern, "gzipped", status=200, body="not gzip", times=None)
    config = parse_config(config_text(tmp_path, server).replace("manifests: none", ""), "c.yaml")
    report = sync(config)
    assert report.exit_code == 1
    (line,) = report.failures
    assert line.startswith("test:develop/e4s: spec manifest"), line
    assert "/develop/e4s/v3/manifests/spec/" in line
    crawled = {o.stack: o.manifests.ok if o.manifests else None for o in report.stacks}
    assert crawled == {"root": 3, "e4s": 0, "ml": 3}, crawled
    assert versions(config.database_path) == {
        ("develop", "root"): 1,
        ("develop", "e4s"): 1,  # its index was committed before the crawl
        ("develop", "ml"): 1,
    }


def test_store_error_retiring_a_stack_fails_that_stack_and_the_run_reports(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {s: spec_nodes(s, 3) for s in STACKS}})
    secret_file = tmp_path / "hook.secret"
    secret = new_secret()
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    metrics_file = tmp_path / "mirrorsync.prom"
    with Receiver(secret) as receiver:
        extra = (
            f"metrics: {{textfile: {metrics_file}}}\n"
            f"webhooks:\n  - name: hook\n    url: {receiver.url}\n    secret_file: {secret_file}\n"
        )
        config = parse_config(config_text(tmp_path, server, extra), "c.yaml")
        assert sync(config).exit_code == 0
        db = config.database_path
        delivered = len(receiver.acknowledged_ids())
        # The catalogue drops ml and root gains a spec; the database refuses to close
        # ml's memberships (a real SQLite trigger, as a damaged schema might).
        build_catalog_from_specs(
            docroot, {"develop": {"root": spec_nodes("root", 4), "e4s": spec_nodes("e4s", 3)}}
        )
        conn = sqlite3.connect(sqlite_file(db))
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF left ON memberships"
            " BEGIN SELECT RAISE(ABORT, 'injected refusal'); END"
        )
        conn.commit()
        conn.close()
        metrics_file.unlink()
        report = sync(config)
        assert report.exit_code == 1
        (line,) = report.failures
        assert line.startswith(f"test:develop/ml: {db}: ") and "injected refusal" in line
        statuses = {o.stack: o.status for o in report.stacks}
        assert statuses == {"root": "changed", "e4s": "unchanged", "ml": "failed"}
        assert versions(db)[("develop", "ml")] == 1
        assert "injected refusal" in (errors(db)[("develop", "ml")] or "")
        assert metrics_file.exists()  # the run ended normally: metrics written...
        assert "mirrorsync_last_run_success 0" in metrics_file.read_text()
        # ...and the second delivery pass sent root's new spec.added in this run.
        new = receiver.acknowledged_ids()[delivered:]
        assert len(new) == 1
