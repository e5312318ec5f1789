"""The spec-manifest crawler: fetches only what it must, records sizes, resumes after a kill."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from conftest import (
    REPO,
    TEST_HTTP,
    catalog_config,
    catalog_config_text,
    json_lines,
    run_cli,
    sync,
    write_config,
)
from dbstate import sqlite_file
from mirrorsync.fixture.build import (
    MirrorInfo,
    build_catalog_from_specs,
    build_from_seed,
    load_seed,
)
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import Node, fake_hash, spec_node, specs_from_page
from mirrorsync.store.location import Location
from mirrorsync.sync.pool import run_pool

MANIFESTS = "*.spec.manifest.json"


def rows(db: Location) -> dict[tuple[str, str], dict[str, Any]]:
    """(stack, hash) -> the spec_manifests row."""
    with sqlite3.connect(sqlite_file(db)) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute(
            "SELECT st.name AS stack, s.hash, sm.* FROM spec_manifests sm"
            " JOIN stacks st ON st.id = sm.stack_id JOIN specs s ON s.id = sm.spec_id"
        ).fetchall()
    return {(r["stack"], r["hash"]): dict(r) for r in found}


def events_of(db: Location, kind: str) -> list[tuple[str, str, str, int]]:
    with sqlite3.connect(sqlite_file(db)) as conn:
        return conn.execute(
            "SELECT st.name, s.hash, s.name, e.stack_version FROM events e"
            " JOIN stacks st ON st.id = e.stack_id JOIN specs s ON s.id = e.spec_id"
            " WHERE e.type = ? ORDER BY e.id",
            (kind,),
        ).fetchall()


def nodes(prefix: str, n: int, **kwargs: Any) -> list[Node]:
    return [
        spec_node(f"pkg-{i % 7}", f"1.{i}", fake_hash(f"{prefix}{i}"), **kwargs) for i in range(n)
    ]


def check_sizes(docroot: Path, infos: dict[str, MirrorInfo], db: Location) -> int:
    """Every recorded size and checksum is that of the real file; returns how many."""
    recorded = rows(db)
    checked = 0
    for stack, info in infos.items():
        for spec_hash, relpath in info.tarballs.items():
            row = recorded[(stack, spec_hash)]
            data = (docroot / relpath).read_bytes()
            assert row["status"] == "ok"
            assert row["tarball_size"] == len(data) > 0
            assert (row["tarball_algorithm"], row["tarball_checksum"]) == (
                "sha256",
                hashlib.sha256(data).hexdigest(),
            )
            checked += 1
    return checked


def test_crawler_fetches_only_what_it_must_and_records_sizes(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    infos = build_from_seed(docroot, "001")["develop"]
    total = sum(i.spec_count for i in infos.values())
    assert total == 145  # 58 in root, 87 over the six other stacks
    config = catalog_config(tmp_path, server, extra="    manifests: new")
    db = config.database_path

    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert server.count(MANIFESTS) == total
    assert server.count("*/blobs/*") == 7  # the index blobs; no tarball is downloaded
    assert check_sizes(docroot, infos, db) == total
    # The spec blob a manifest names exists and has the checksum recorded for it.
    for (stack, _), row in rows(db).items():
        root = docroot / ("develop" if stack == "root" else f"develop/{stack}")
        blob = root / f"blobs/sha256/{row['spec_checksum'][:2]}/{row['spec_checksum']}"
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == row["spec_checksum"]
    assert sum(o.manifests.ok for o in report.stacks if o.manifests) == total

    # Nothing new: not one manifest is requested again.
    server.reset_log()
    assert sync(config).exit_code == 0
    assert server.count(MANIFESTS) == 0

    # e4s gains three specs and loses two: only the three new manifests are fetched.
    page_e4s = _seed_nodes("e4s")
    extra = nodes("new", 3, os="ubuntu22.04")
    build_catalog_from_specs(
        docroot,
        {"develop": {**{k: _seed_nodes(k) for k in infos}, "e4s": page_e4s[2:] + extra}},
    )
    server.reset_log()
    assert sync(config).exit_code == 0
    fetched = sorted(r.path for r in server.requests if r.path.endswith(".spec.manifest.json"))
    assert len(fetched) == 3
    assert all(p.startswith("/develop/e4s/v3/manifests/spec/pkg-") for p in fetched)
    assert {p.split("-")[-1].split(".")[0] for p in fetched} == {n["hash"] for n in extra}

    # Policy all fetches every current member again; none fetches nothing.
    server.reset_log()
    everything = catalog_config(tmp_path, server, extra="    manifests: all")
    assert sync(everything).exit_code == 0
    assert server.count(MANIFESTS) == total + 3 - 2
    server.reset_log()
    assert sync(catalog_config(tmp_path, server, extra="    manifests: none")).exit_code == 0
    assert server.count(MANIFESTS) == 0


def _seed_nodes(stack: str) -> list[Node]:
    return specs_from_page(load_seed("001"))[stack]


def test_v2_crawl_reads_spec_files_and_heads_binaries(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = nodes("v2-", 12, compiler=("gcc", "11.4.0"), db_version=7)
    infos = build_catalog_from_specs(
        docroot, {"v0.23.1": {"root": specs, "e4s": specs[:5]}}, layout="v2"
    )["v0.23.1"]
    config = catalog_config(tmp_path, server)
    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert server.count("*.spec.json.sig", "GET") == 17
    assert server.count("*.spack", "HEAD") == 17
    assert server.count("*.spack", "GET") == 0  # sizes come from HEAD, nothing is downloaded
    assert check_sizes(docroot, infos, config.database_path) == 17
    for (stack, spec_hash), row in rows(config.database_path).items():
        spec_file = docroot / infos[stack].spec_files[spec_hash]
        assert row["spec_checksum"] == hashlib.sha256(spec_file.read_bytes()).hexdigest()
    server.reset_log()
    assert sync(config).exit_code == 0
    assert server.count("*.spec.json*") == server.count("*.spack") == 0


def test_v2_unsigned_spec_files_are_found(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = nodes("plain-", 40, compiler=("gcc", "12.3.0"), db_version=7)
    infos = build_catalog_from_specs(
        docroot, {"v0.22.0": {"root": specs}}, layout="v2", signed=False
    )
    config = catalog_config(tmp_path, server)  # 8 workers
    assert sync(config).exit_code == 0
    assert check_sizes(docroot, infos["v0.22.0"], config.database_path) == 40
    assert server.count("*.spec.json", "GET") == 40
    # Once one worker has found .sig missing and .spec.json there, every later
    # spec is asked for as .spec.json first: at most one .sig per worker before that.
    assert 1 <= server.count("*.spec.json.sig", "GET") <= 8


def test_missing_manifest_is_an_event_not_a_failure(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = nodes("m", 10)
    infos = build_catalog_from_specs(docroot, {"develop": {"root": specs, "e4s": specs[:6]}})
    gone = specs[2]
    gone_manifest = docroot / infos["develop"]["e4s"].spec_files[gone["hash"]]
    gone_manifest.unlink()
    broken = specs[3]
    (docroot / infos["develop"]["e4s"].spec_files[broken["hash"]]).write_text("{not json")
    config = catalog_config(tmp_path, server)
    db = config.database_path
    config_file = write_config(tmp_path / "c.yaml", _config_text(tmp_path, server, ""))

    result = run_cli("-c", str(config_file), "once", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    e4s = next(s for s in json.loads(result.stdout)["stacks"] if s["stack"] == "e4s")
    assert e4s["manifests"]["ok"] == 4
    assert (e4s["manifests"]["missing"], e4s["manifests"]["malformed"]) == (1, 1)
    assert events_of(db, "spec.manifest_missing") == [("e4s", gone["hash"], gone["name"], 1)]
    recorded = rows(db)
    assert recorded[("e4s", gone["hash"])]["status"] == "missing"
    assert str(gone_manifest.name) in recorded[("e4s", gone["hash"])]["problem"]
    assert recorded[("e4s", broken["hash"])]["status"] == "malformed"
    assert recorded[("root", gone["hash"])]["status"] == "ok"  # root's copy is there
    listed = run_cli(
        "-c", str(config_file), "events", "--type", "spec.manifest_missing", "--json", cwd=tmp_path
    )
    assert [(e["stack"], e["hash"]) for e in json_lines(listed.stdout)] == [("e4s", gone["hash"])]

    # Not yet fetched successfully: asked for again, but the event is not repeated.
    server.reset_log()
    assert sync(config).exit_code == 0
    assert sorted(
        r.path.rsplit("-", 1)[1] for r in server.requests if "/spec/" in r.path
    ) == sorted([f"{gone['hash']}.spec.manifest.json", f"{broken['hash']}.spec.manifest.json"])
    assert len(events_of(db, "spec.manifest_missing")) == 1

    # Once the manifests are back they are read, and then left alone.
    build_catalog_from_specs(docroot, {"develop": {"root": specs, "e4s": specs[:6]}})
    assert sync(config).exit_code == 0
    assert {r["status"] for r in rows(db).values()} == {"ok"}
    server.reset_log()
    assert sync(config).exit_code == 0
    assert server.count(MANIFESTS) == 0


def test_a_manifest_that_cannot_be_fetched_fails_the_run_and_is_retried(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = nodes("f", 8)
    infos = build_catalog_from_specs(docroot, {"develop": {"root": specs}})
    bad = "/" + infos["develop"]["root"].spec_files[specs[5]["hash"]]
    server.add_fault(bad, "status", times=None, status=500)
    config = catalog_config(tmp_path, server)
    report = sync(config)
    assert report.exit_code == 1
    (line,) = report.failures
    assert line.startswith("test:develop/root: spec manifests: 1 could not be fetched")
    assert bad in line and "HTTP 500" in line
    assert server.count(bad) == 3  # the configured attempts
    assert rows(config.database_path)[("root", specs[5]["hash"])]["status"] == "error"

    server.clear_faults()
    server.reset_log()
    assert sync(config).exit_code == 0
    assert [r.path for r in server.requests if r.path.endswith(".spec.manifest.json")] == [bad]


def _config_text(tmp_path: Path, server: FixtureServer, extra: str, concurrency: int = 8) -> str:
    http = TEST_HTTP.replace("concurrency: 8", f"concurrency: {concurrency}")
    return catalog_config_text(
        tmp_path, server, extra=extra, http=http.replace("timeout: 5", "timeout: 10")
    )


def _ok_rows(db: Location) -> int:
    with sqlite3.connect(sqlite_file(db)) as conn:
        (n,) = conn.execute("SELECT count(*) FROM spec_manifests WHERE status = 'ok'").fetchone()
    return int(n)


def _fetched_since(db: Location, cutoff: str) -> int:
    """Ok manifests fetched after ``cutoff``; 0 while the database or table is not there yet."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # never creates the file
        try:
            (n,) = conn.execute(
                "SELECT count(*) FROM spec_manifests WHERE status = 'ok' AND fetched_at > ?",
                (cutoff,),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0
    return int(n)


@pytest.mark.parametrize("policy", ["new", "all"])
def test_a_killed_crawl_resumes_where_it_stopped(
    tmp_path: Path, docroot: Path, server: FixtureServer, policy: str
) -> None:
    total = 200
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("k", total)}})
    config_file = write_config(
        tmp_path / "c.yaml", _config_text(tmp_path, server, f"    manifests: {policy}", 4)
    )
    db = tmp_path / "state.db"
    started_at = ""  # the killed run's manifests are those fetched after this
    if policy == "all":  # a finished pass first: everything on record, then a new pass begins
        assert run_cli("-c", str(config_file), "once", cwd=tmp_path).returncode == 0
        assert _ok_rows(db) == total
        with sqlite3.connect(sqlite_file(db)) as conn:
            (started_at,) = conn.execute("SELECT max(fetched_at) FROM spec_manifests").fetchone()
        server.reset_log()

    # Each manifest takes 20 ms to serve, 4 at a time: the crawl lasts at least 1 s, and the
    # first batch is committed after 100 results (or 1 s).
    server.add_fault(MANIFESTS, "delay", times=None, delay=0.02)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync", "-c", str(config_file), "once"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    # Kill it as soon as its first batch is committed, with most manifests still to fetch.
    while _fetched_since(db, started_at) == 0 and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    # The server logs a delayed request when its delay is over: let those in flight land.
    asked_before_kill = -1
    while asked_before_kill != server.count(MANIFESTS):
        asked_before_kill = server.count(MANIFESTS)
        time.sleep(0.3)
    assert asked_before_kill < total

    # What the killed run committed stays (with policy all: as part of the pass it began).
    kept = _fetched_since(db, started_at)
    assert 0 < kept <= asked_before_kill

    server.clear_faults()
    server.reset_log()
    result = run_cli("-c", str(config_file), "once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert server.count(MANIFESTS) == total - kept  # resumed, not restarted
    assert _ok_rows(db) == total

    if policy == "all":  # that pass is complete: the next run starts a new one
        server.reset_log()
        assert run_cli("-c", str(config_file), "once", cwd=tmp_path).returncode == 0
        assert server.count(MANIFESTS) == total


def test_pool_holds_a_bounded_number_of_items() -> None:
    """20,000 items through 8 workers: 8 at work at once, a few dozen buffered at most."""
    produced = consumed = in_flight = most_in_flight = most_ahead = 0
    all_busy = anyio.Event()

    async def items() -> AsyncIterator[int]:
        nonlocal produced, most_ahead
        for i in range(20_000):
            produced += 1
            most_ahead = max(most_ahead, produced - consumed)
            yield i

    async def work(item: int) -> int:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        if in_flight == 8:
            all_busy.set()
        if item < 8:  # the first eight wait for each other: only 8 concurrent workers free them
            await all_busy.wait()
        await anyio.lowlevel.checkpoint()
        in_flight -= 1
        return item * 2

    total = 0

    async def consume(result: int) -> None:
        nonlocal consumed, total
        consumed += 1
        total += result

    async def main() -> None:
        with anyio.fail_after(30):
            await run_pool(items(), work, consume, workers=8)

    anyio.run(main)
    assert consumed == 20_000 and total == 2 * sum(range(20_000))
    assert most_in_flight == 8
    assert most_ahead <= 8 + 8 + 8 + 2  # both buffers, the workers, and one item at each end


def test_pool_stops_everything_on_the_first_error_and_raises_it() -> None:
    started: list[int] = []

    async def items() -> AsyncIterator[int]:
        for i in range(1000):
            yield i

    async def work(item: int) -> int:
        started.append(item)
        if item == 10:
            raise ValueError("item 10 is bad")
        await anyio.sleep(0.01)
        return item

    async def consume(result: int) -> None:
        pass

    async def main() -> None:
        with anyio.fail_after(10):
            await run_pool(items(), work, consume, workers=4)

    with pytest.raises(ExceptionGroup) as caught:  # from the pool's task group
        anyio.run(main)
    assert caught.group_contains(ValueError, match="item 10 is bad")
    assert len(started) < 30  # the other workers stopped instead of draining the items


def test_pool_with_no_items_finishes() -> None:
    async def items() -> AsyncIterator[int]:
        return
        yield

    async def work(item: int) -> int:
        raise AssertionError("no item to work on")

    async def consume(result: int) -> None:
        raise AssertionError("nothing to consume")

    anyio.run(lambda: run_pool(items(), work, consume, workers=3))


REAL_SIGNED_V2 = REPO / "tests/data/realdata/spack-test-mirrors/v2_layout/signed"


def test_database_v8_specs_of_spacks_own_v2_mirror_are_found_at_their_real_names(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """Its v8 index names no compiler key; the file names carry the compiler that
    ``annotations.compiler`` or the ``c`` dependency gives (``gcc-10.2.1``)."""
    import shutil

    shutil.copytree(REAL_SIGNED_V2, docroot / "real")
    text = (
        f"database: {tmp_path / 'state.db'}\nsources:\n  - name: real\n    kind: mirror\n"
        f"    url: {server.url}/real\n    manifests: all\n{TEST_HTTP}"
    )
    config = write_config(tmp_path / "c.yaml", text)
    result = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    spec_files = sorted(p.name for p in (docroot / "real/build_cache").glob("*.spec.json.sig"))
    assert len(spec_files) == 6
    fetched = sorted(
        Path(r.path).name
        for r in server.requests
        if r.path.endswith((".spec.json.sig", ".spec.json"))
    )
    assert fetched == spec_files  # each at its real name, first time, nothing else asked for
    assert {r["status"] for r in rows(tmp_path / "state.db").values()} == {"ok"}
