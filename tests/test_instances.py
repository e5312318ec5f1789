"""Several mirrorsync instances on one PostgreSQL database: real processes, a real server.

Each test serves a catalogue of several stacks from the fixture server, syncs
it once into SQLite (the reference), and runs ``python -m mirrorsync once``
processes at the same time against one PostgreSQL database. What they record
between them must be what the one SQLite run recorded: the same events (type,
release, stack, hash), each once, and per stack the same versions and members,
read back through mirrorsync's own ``events``, ``history`` and ``specs``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from conftest import REPO
from dbstate import check_consistent, differences, event_stats
from mirrorsync.fixture.build import CATALOG_NAME, MirrorInfo, build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import synthetic_compilers, synthetic_specs
from mirrorsync.store import Store, eventlog, events, utcnow, writes
from mirrorsync.store.claims import Kind
from mirrorsync.store.location import PostgresUrl
from receiver import Receiver, new_secret

#: The catalogue: two releases, six stacks, overlapping (shared specs are inserted by
#: whichever instance commits first, and must not be told apart by the others).
LAYOUT = {"develop": ("root", "e4s", "ml", "hpc"), "v1.0": ("root", "e4s")}
PER_STACK = 600

EventKey = tuple[str, str, str | None, str | None]

#: Where this module's processes keep their compiled bytecode: with
#: PYTHONDONTWRITEBYTECODE set (as here), every process would compile mirrorsync
#: and its dependencies again, seconds of CPU each, three at a time.
_ENV: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _bytecode(tmp_path_factory: pytest.TempPathFactory) -> None:
    _ENV.update(
        {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        PYTHONPATH=str(REPO / "src"),
        PYTHONPYCACHEPREFIX=str(tmp_path_factory.mktemp("pycache")),
    )


def publish(docroot: Path, *, per_stack: int = PER_STACK) -> dict[str, dict[str, MirrorInfo]]:
    """Each stack a prefix of one list of specs (so it holds every dependency of its
    specs, as a Spack index does), all of different lengths; the compilers listed
    as externals. A spec held by several stacks is stored by whichever commits first."""
    stacks = [(r, s) for r, names in LAYOUT.items() for s in names]
    pool = synthetic_specs(per_stack)
    releases: dict[str, dict[str, list[dict[str, object]]]] = {}
    uncached: dict[str, dict[str, list[dict[str, object]]]] = {}
    for i, (release, stack) in enumerate(stacks):
        releases.setdefault(release, {})[stack] = pool[: per_stack - i * per_stack // 10]
        uncached.setdefault(release, {})[stack] = synthetic_compilers()
    return build_catalog_from_specs(docroot, releases, manifests=False, uncached=uncached)


def config(path: Path, server: FixtureServer, database: str, *, webhook: str | None = None) -> Path:
    """One catalogue source ``t`` (no manifest crawl); ``webhook``: a receiver's URL."""
    hooks = (
        f"webhooks:\n  - name: hook\n    url: {webhook}\n    secret_env: HOOK_SECRET\n"
        "    max_batch: 40\n"
        if webhook
        else ""
    )
    path.write_text(
        f"database: {database}\n"
        "sources:\n"
        "  - name: t\n"
        "    kind: catalog\n"
        f"    url: {server.url}/{CATALOG_NAME}\n"
        f"    bucket_urls: {{spack-binaries: '{server.url}/'}}\n"
        "    manifests: none\n"
        f"{hooks}"
        "http: {timeout: 60, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.05}}\n"
    )
    return path


class Instance:
    """One ``mirrorsync once --json`` process."""

    def __init__(self, cfg: Path, scratch: Path, env: dict[str, str] | None = None) -> None:
        scratch.mkdir(exist_ok=True)
        env = {**_ENV, "TMPDIR": str(scratch), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mirrorsync", "-c", str(cfg), "once", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out = self.err = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self, timeout: float = 120) -> int:
        self.out, self.err = self.proc.communicate(timeout=timeout)
        assert "Traceback" not in self.err, self.err
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.out, self.err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def statuses(self) -> dict[tuple[str, str], str]:
        report = json.loads(self.out)
        return {(s["release"], s["stack"]): s["status"] for s in report["stacks"]}


def cli(cfg: Path, *args: str) -> Any:
    """A read command's ``--json`` answer (events: one object per line)."""
    done = subprocess.run(
        [sys.executable, "-m", "mirrorsync", "-c", str(cfg), *args, "--json"],
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    if args[0] == "events":
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return json.loads(done.stdout)


def assert_same_history(ref: Path, url: str) -> None:
    """Every version, membership, spec and event of the PostgreSQL database is the
    reference's, each event once, and no version is half written."""
    db = PostgresUrl(url)
    found = differences(ref.with_name("ref.db"), db)
    assert found == {}, repr(found)
    assert event_stats(db)[1] == 1
    check_consistent(db)


def recorded(cfg: Path) -> Counter[EventKey]:
    """Every event as (type, release, stack, hash), with how many times it occurs."""
    return Counter((e["type"], e["release"], e["stack"], e["hash"]) for e in cli(cfg, "events"))


def poll(find: Callable[[], int | None], what: str, timeout: float = 60) -> int:
    """What ``find`` finds, as soon as it finds something."""
    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}")
        time.sleep(0.005)
    return found


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FixtureServer, Path, dict[str, dict[str, MirrorInfo]]]]:
    """The catalogue served, and one SQLite run of it: (server, its config, what was
    published); made once for the module, as the catalogue never changes."""
    where = tmp_path_factory.mktemp("catalogue")
    (where / "www").mkdir()
    infos = publish(where / "www")
    with FixtureServer(where / "www") as server:
        ref = config(where / "ref.yaml", server, str(where / "ref.db"))
        first = Instance(ref, where / "scratch")
        assert first.finish() == 0, first.err
        yield server, ref, infos


@pytest.fixture
def reference(
    served: tuple[FixtureServer, Path, dict[str, dict[str, MirrorInfo]]],
) -> Iterator[tuple[FixtureServer, Path, dict[str, dict[str, MirrorInfo]]]]:
    """``served``, with no faults and an empty request log for this test."""
    server = served[0]
    server.clear_faults()
    server.reset_log()
    yield served
    server.clear_faults()


def blob_paths(infos: dict[str, dict[str, MirrorInfo]]) -> dict[tuple[str, str], str]:
    return {
        (r, s): "/" + info.index_blob_relpath
        for r, stacks in infos.items()
        for s, info in stacks.items()
    }


def test_three_instances_share_a_catalogue_and_record_what_one_sqlite_run_records(
    tmp_path: Path,
    reference: tuple[FixtureServer, Path, dict[str, dict[str, MirrorInfo]]],
    postgres_url: str,
) -> None:
    server, ref, infos = reference
    blobs = blob_paths(infos)
    for path in blobs.values():  # slow enough that the three runs overlap
        server.add_fault(path, "delay", delay=0.4, times=None)
    cfg = config(tmp_path / "pg.yaml", server, postgres_url)

    runs = [Instance(cfg, tmp_path / "scratch") for _ in range(3)]
    codes = [run.finish() for run in runs]

    assert codes == [0, 0, 0], [run.err for run in runs]
    statuses = [run.statuses() for run in runs]
    for key in blobs:  # every instance reports every stack; one of them synced it
        seen = [s[key] for s in statuses]
        assert seen.count("changed") == 1, (key, seen)
        assert set(seen) <= {"changed", "skipped", "unchanged"}, (key, seen)
        assert server.count(blobs[key], "GET") == 1, key  # its index fetched once in all
    assert sum(1 for s in statuses if "changed" in s.values()) >= 2, statuses  # work was shared
    skipped = sum(seen == "skipped" for s in statuses for seen in s.values())
    assert skipped >= 1
    lines = [line for run in runs for line in run.err.splitlines() if " skipped: " in line]
    assert len(lines) == skipped and all("another instance" in line for line in lines), lines

    expected = recorded(ref)
    got = recorded(cfg)
    assert got == expected
    assert max(got.values()) == 1  # each event once
    assert_same_history(ref, postgres_url)


def backend_of(url: str, sql: str, params: tuple[object, ...]) -> int | None:
    """The OS pid of the mirrorsync process whose session holds the lock ``sql`` finds
    (a query giving a backend pid), from its ``application_name``."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            backend = conn.execute(sql, params).fetchone()
        except psycopg.errors.UndefinedTable:  # no schema yet
            return None
        if backend is None:
            return None
        row = conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s", backend
        ).fetchone()
    found = re.search(r"pid=(\d+)", row[0] or "") if row is not None else None
    return int(found[1]) if found else None


def claim_holder(url: str, release: str, stack: str) -> int | None:
    """The OS pid of the instance holding the claim on a stack, if one does."""
    return backend_of(
        url,
        "SELECT l.pid FROM pg_locks l JOIN stacks st ON l.objid = st.id"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        " AND l.classid = %s::bigint::oid AND st.release = %s AND st.name = %s LIMIT 1",
        (int(Kind.STACK), release, stack),
    )


def committing(url: str) -> int | None:
    """The OS pid of an instance inside a commit that writes events (it holds their lock)."""
    return backend_of(
        url,
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.objsubid = 2 AND l.classid = %s::bigint::oid LIMIT 1",
        (int(Kind.EVENT_IDS),),
    )


def test_an_instance_killed_holding_a_stack_loses_nothing_and_the_next_run_takes_it_over(
    tmp_path: Path,
    reference: tuple[FixtureServer, Path, dict[str, dict[str, MirrorInfo]]],
    postgres_url: str,
) -> None:
    server, ref, infos = reference
    blobs = blob_paths(infos)
    stuck = ("develop", "ml")
    # Its index stalls after 1 KiB, once: whoever claims it first is stuck holding it.
    server.add_fault(blobs[stuck], "stall", after_bytes=1024, delay=60, times=1)
    for key, path in blobs.items():
        if key != stuck:
            server.add_fault(path, "delay", delay=0.2, times=None)
    cfg = config(tmp_path / "pg.yaml", server, postgres_url)
    runs = [Instance(cfg, tmp_path / "scratch") for _ in range(3)]
    holder = poll(lambda: claim_holder(postgres_url, *stuck), "the stuck stack claimed")
    (victim,) = [run for run in runs if run.pid == holder]
    others = [run for run in runs if run is not victim]

    assert [run.finish() for run in others] == [0, 0], [run.err for run in others]
    for run in others:
        assert run.statuses()[stuck] == "skipped"
        assert re.search(
            rf"t:develop/ml skipped: another instance is syncing it \(mirrorsync pid={victim.pid}\b",
            run.err,
        ), run.err
    syncing = {(r["release"], r["stack"]): r["syncing"] for r in cli(cfg, "status")}
    assert syncing[stuck] is not None and f"mirrorsync pid={victim.pid}" in syncing[stuck]
    victim.kill()

    syncing = {(r["release"], r["stack"]): r["syncing"] for r in cli(cfg, "status")}
    assert set(syncing.values()) == {None}  # its claims went with its session
    after = Instance(cfg, tmp_path / "scratch")
    assert after.finish() == 0, after.err
    assert after.statuses()[stuck] == "changed"  # the next run took it over
    assert_same_history(ref, postgres_url)


def test_an_instance_killed_in_its_commit_loses_and_duplicates_nothing(
    tmp_path: Path, docroot: Path, postgres_url: str
) -> None:
    infos = publish(docroot, per_stack=1000)  # commits long enough to be caught in
    with FixtureServer(docroot) as server:
        ref = config(tmp_path / "ref.yaml", server, str(tmp_path / "ref.db"))
        assert Instance(ref, tmp_path / "scratch").finish() == 0
        cfg = config(tmp_path / "pg.yaml", server, postgres_url)
        runs = [Instance(cfg, tmp_path / "scratch") for _ in range(3)]
        pid = poll(lambda: committing(postgres_url), "a commit", timeout=120)
        (victim,) = [run for run in runs if run.pid == pid]
        victim.kill()
        others = [run for run in runs if run is not victim]
        assert [run.finish() for run in others] == [0, 0], [run.err for run in others]
        after = Instance(cfg, tmp_path / "scratch")
        assert after.finish() == 0, after.err

        assert_same_history(ref, postgres_url)
        assert len(blob_paths(infos)) == len(after.statuses())


def test_three_instances_deliver_each_batch_once_in_event_order(
    tmp_path: Path,
    reference: tuple[FixtureServer, Path, dict[str, dict[str, MirrorInfo]]],
    postgres_url: str,
) -> None:
    server, _, infos = reference
    for path in blob_paths(infos).values():
        server.add_fault(path, "delay", delay=0.2, times=None)
    secret = new_secret()
    with Receiver(secret) as receiver:
        cfg = config(tmp_path / "pg.yaml", server, postgres_url, webhook=receiver.url)
        runs = [Instance(cfg, tmp_path / "scratch", {"HOOK_SECRET": secret}) for _ in range(3)]
        assert [run.finish() for run in runs] == [0, 0, 0], [run.err for run in runs]
        received = receiver.received

    ids = [e["id"] for e in cli(cfg, "events")]
    message_ids = [r.webhook_id for r in received]
    assert len(message_ids) == len(set(message_ids))  # no batch sent twice
    assert all(r.acknowledged for r in received)
    sent = [i for r in received for i in r.event_ids]
    assert sent == sorted(ids)  # every event once, in id order across the three senders
    assert len({r.webhook_id for r in received}) >= len(ids) // 40
    delivered = [w for run in runs for w in json.loads(run.out)["webhooks"]]
    assert sum(w["delivered_events"] for w in delivered) == len(ids)
    (listed,) = cli(cfg, "webhooks", "list")
    assert listed["pending_events"] == 0  # the last to let go of the endpoint sent the rest


def test_events_become_visible_in_id_order_with_two_writers(postgres_url: str) -> None:
    """Writer A takes event ids and holds its transaction open; writer B writes and
    commits meanwhile. A reader that follows ``events --since`` its high-water mark
    must still see A's events: B waits for A, so no id appears below one read."""
    where = PostgresUrl(postgres_url)
    log: list[str] = []

    async def main() -> tuple[list[int], list[int]]:
        a, b = await Store.open(where), await Store.open(where)
        reader = await Store.open_read_only(where)
        source = await writes.ensure_source(a, "t", "catalog", "http://example.invalid/")
        a_has_ids = anyio.Event()
        finished = anyio.Event()
        seen: list[int] = []

        async def writer(
            store: Store, release: str, hold: float, after: anyio.Event | None
        ) -> None:
            if after is not None:
                await after.wait()
            async with store.transaction() as conn:
                at = utcnow()
                await events.record(
                    conn, "release.added", events.Where(source, release, None, None, at)
                )
                a_has_ids.set()
                await anyio.sleep(hold)
            log.append(release)

        async def read() -> None:
            mark = 0
            while True:
                done = finished.is_set()
                async for event in eventlog.events(reader, since=mark):
                    seen.append(event.id)
                    mark = event.id
                if done:
                    return
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            async with anyio.create_task_group() as writers:
                writers.start_soon(writer, a, "a", 0.5, None)
                writers.start_soon(writer, b, "b", 0.0, a_has_ids)
            finished.set()
        every = [e.id async for e in eventlog.events(reader)]
        for store in (a, b, reader):
            await store.close()
        return seen, every

    seen, every = anyio.run(main)
    assert len(every) == 2
    assert seen == every  # the reader missed nothing, and never went back
    assert log == ["a", "b"]  # because B's commit waited for A's
