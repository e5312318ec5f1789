"""Servers that send too much, too slowly, or nothing at all.

- A body is never read (nor decompressed) past the length its manifest
  promises: an ``excess`` body or a gzip bomb fails its stack, with one line
  naming the URL, after writing no more than that length to disk.
- A ``trickle`` (one byte at a time, never slow enough for the read timeout)
  is cut off by ``http.deadline``: its stack fails in time, the others sync.
- A host that refuses connections is given up on after one request's
  retries, for the rest of the run (the circuit breaker), and reported once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import anyio
import pytest

from conftest import REPO, catalog_config_text, run_cli, sync, write_config
from mirrorsync.config import parse_config
from mirrorsync.errors import FetchError
from mirrorsync.fetch import Fetched, HostDownError, HttpClient, Url
from mirrorsync.fixture.build import build_catalog_from_specs, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node

STACKS = ("root", "e4s", "ml")
INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"


def nodes(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


def http_section(
    *, deadline: str = "", attempts: int = 2, concurrency: int = 8, extra: str = ""
) -> str:
    return (
        f"http:\n  concurrency: {concurrency}\n  per_host_rate: 1000\n  timeout: 5\n"
        f"  retries: {{attempts: {attempts}, backoff_initial: 0.01, backoff_max: 0.02}}\n"
        + (f"  deadline: {deadline}\n" if deadline else "")
        + extra
    )


def promised_length(docroot: Path, stack: str) -> int:
    manifest = json.loads((docroot / "develop" / stack / INDEX_MANIFEST).read_text())
    (record,) = manifest["data"]
    length: int = record["contentLength"]
    return length


# A process that runs `mirrorsync once` and then says how many bytes it wrote
# (write(2) and friends: files, the database, its own stderr), from /proc.
MEASURED_ONCE = """
import sys
from mirrorsync.cli import main
code = main(sys.argv[1:])
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print("WRITTEN", io["wchar"], file=sys.stderr)
sys.exit(code)
"""

#: 256 MiB of zeros, gzipped to ~250 kB.
BOMB_SIZE = 256 << 20


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip.compress(bytes(BOMB_SIZE), compresslevel=6)


@pytest.mark.parametrize("kind", ["excess", "gzip-bomb"])
def test_an_index_longer_than_promised_is_cut_off_at_the_promise(
    tmp_path: Path, docroot: Path, server: FixtureServer, bomb: bytes, kind: str
) -> None:
    build_catalog_from_specs(docroot, {"develop": {s: nodes(s, 30) for s in STACKS}})
    promised = promised_length(docroot, "e4s")
    if kind == "excess":  # the blob, then 256 MiB more, with no Content-Length to stop it
        server.add_fault("/develop/e4s/blobs/*", "excess", after_bytes=BOMB_SIZE, times=None)
    else:  # 250 kB on the wire, declared as gzip: 256 MiB once inflated
        server.add_fault("/develop/e4s/blobs/*", "gzipped", status=200, body=bomb, times=None)
    config = write_config(
        tmp_path / "c.yaml",
        catalog_config_text(tmp_path, server, extra="    manifests: none", http=http_section()),
    )
    done = subprocess.run(
        [sys.executable, "-c", MEASURED_ONCE, "-c", str(config), "once"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("mirrorsync: failed:")]
    (line,) = failed
    blob = re.escape(f"{server.url}/develop/e4s/blobs/sha256/")
    assert re.fullmatch(
        f"mirrorsync: failed: test:develop/e4s: {blob}[0-9a-f]{{2}}/[0-9a-f]{{64}}: "
        f"more than the {promised} bytes the manifest promises; refused",
        line,
    ), line
    assert "test:develop/root changed" in done.stderr
    assert "test:develop/ml changed" in done.stderr
    # Everything the run wrote (the two good indexes, the database, its logs) is
    # a few MB; reading on past the promise would have written 256 MiB.
    (written,) = [int(x.split()[1]) for x in done.stderr.splitlines() if x.startswith("WRITTEN")]
    assert written < 16 << 20, written


def test_a_trickling_index_manifest_fails_its_stack_within_the_deadline(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """One byte every 0.2 s: never quiet for the 5 s read timeout, headers
    included; the manifest alone would take over a minute."""
    build_catalog_from_specs(docroot, {"develop": {s: nodes(s, 5) for s in STACKS}})
    server.add_fault(f"/develop/e4s/{INDEX_MANIFEST}", "trickle", delay=0.2, times=None)
    text = catalog_config_text(
        tmp_path, server, extra="    manifests: none", http=http_section(deadline="1s")
    )
    started = time.monotonic()
    report = sync(parse_config(text, str(tmp_path / "c.yaml")))
    seconds = time.monotonic() - started
    assert seconds < 6, seconds
    (line,) = report.failures
    assert line == (
        f"test:develop/e4s: {server.url}/develop/e4s/{INDEX_MANIFEST}: timed out: "
        "no complete answer within http.deadline (1s); not retried"
    )
    statuses = {o.stack: o.status for o in report.stacks}
    assert statuses == {"root": "changed", "e4s": "failed", "ml": "changed"}
    assert server.count(f"/develop/e4s/{INDEX_MANIFEST}") == 1  # a deadline is not retried


def test_the_run_deadline_ends_what_is_left_and_keeps_what_synced(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """A request still waiting when ``http.run_deadline`` comes is ended there:
    its stack fails for this run, the others are committed, and the run ends
    by itself (the unit's TimeoutStartSec is only a backstop)."""
    build_catalog_from_specs(docroot, {"develop": {s: nodes(s, 5) for s in STACKS}})
    server.add_fault("/develop/e4s/blobs/*", "delay", delay=20, times=None)
    text = catalog_config_text(
        tmp_path,
        server,
        extra="    manifests: none",
        http=http_section(extra="  run_deadline: 2s\n"),
    )
    started = time.monotonic()
    report = sync(parse_config(text, str(tmp_path / "c.yaml")))
    seconds = time.monotonic() - started
    assert seconds < 5, seconds
    (line,) = report.failures
    assert re.fullmatch(
        f"test:develop/e4s: {re.escape(server.url)}/develop/e4s/blobs/sha256/\\S+: not finished: "
        + re.escape("the run reached http.run_deadline (2s); trying again next run"),
        line,
    ), line
    statuses = {o.stack: o.status for o in report.stacks}
    assert statuses == {"root": "changed", "e4s": "failed", "ml": "changed"}


def test_a_crawl_stops_at_the_run_deadline_and_the_next_run_resumes_it(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """What the crawl did not ask for before the deadline is not recorded as
    failed: it stays pending, and the next run fetches exactly that."""
    write_v3_mirror(docroot / "m", nodes("c", 40))
    server.add_fault("/m/v3/manifests/spec/*", "delay", delay=0.3, times=None)
    text = (
        f"database: {tmp_path / 'state.db'}\n"
        f"sources: [{{name: site, kind: mirror, url: '{server.url}/m'}}]\n"
        + http_section(extra="  per_host_concurrency: 2\n  run_deadline: 1.5s\n")
    )
    config = parse_config(text, str(tmp_path / "c.yaml"))
    started = time.monotonic()
    report = sync(config)
    assert time.monotonic() - started < 4
    (outcome,) = report.stacks
    assert outcome.status == "changed" and outcome.manifests is not None
    assert (outcome.manifests.failure or "").startswith("spec manifest crawl stopped: ")
    assert "the run reached http.run_deadline (1.5s)" in (outcome.manifests.failure or "")
    assert report.exit_code == 1

    def recorded() -> dict[str, int]:
        with sqlite3.connect(tmp_path / "state.db") as conn:
            rows = conn.execute("SELECT status, count(*) FROM spec_manifests GROUP BY 1")
            return dict(rows.fetchall())

    first = recorded()
    assert set(first) == {"ok"} and 0 < first["ok"] < 40, first  # nothing marked failed
    server.clear_faults()
    time.sleep(0.5)  # requests the deadline cut off are logged once their 0.3 s delay ends
    server.reset_log()
    assert sync(config).exit_code == 0
    assert recorded() == {"ok": 40}
    assert server.count("/m/v3/manifests/spec/*") == 40 - first["ok"]  # only the rest


def test_a_trickling_manifest_crawl_does_not_starve_other_stacks_on_its_host(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """Two mirrors on one host, two request slots for that host: the slow
    mirror's spec manifests all trickle, and its crawl, which could hold both
    slots for ever, gives each one up at the deadline; the other mirror's
    index and manifests get slots in turn meanwhile."""
    write_v3_mirror(docroot / "slow", nodes("s", 6))
    write_v3_mirror(docroot / "fast", nodes("f", 6))
    server.add_fault("/slow/v3/manifests/spec/*", "trickle", delay=0.2, times=None)
    server.add_fault(f"/fast/{INDEX_MANIFEST}", "delay", delay=0.3, times=1)  # after slow's
    text = (
        f"database: {tmp_path / 'state.db'}\n"
        "sources:\n"
        f"  - {{name: slow, kind: mirror, url: '{server.url}/slow'}}\n"
        f"  - {{name: fast, kind: mirror, url: '{server.url}/fast'}}\n"
        + http_section(deadline="0.5s", extra="  per_host_concurrency: 2\n")
    )
    started = time.monotonic()
    report = sync(parse_config(text, str(tmp_path / "c.yaml")))
    seconds = time.monotonic() - started
    by_source = {o.source: o for o in report.stacks}
    fast, slow = by_source["fast"], by_source["slow"]
    assert fast.manifests is not None and slow.manifests is not None
    assert fast.status == "changed" and fast.added == 6
    assert fast.manifests.ok == 6 and not fast.manifests.problem
    assert slow.status == "changed" and slow.manifests.errors == 6
    assert "http.deadline (0.5s)" in (slow.manifests.first_problem or "")
    # Six trickles of 0.5 s over two slots, plus the fast mirror's own work.
    assert seconds < 8, seconds
    assert report.exit_code == 1


def test_a_host_that_refuses_connections_is_asked_once_for_the_whole_run(
    tmp_path: Path, docroot: Path
) -> None:
    """After one request's retries end in "connection refused", every other
    request to that host fails at once, without a connection attempt."""
    with FixtureServer(docroot) as stopped:
        url = stopped.url
    config = parse_config(
        f"sources: [{{name: m, kind: mirror, url: '{url}/m'}}]\n"
        + http_section(attempts=3, concurrency=4),
        "c.yaml",
    )

    async def main() -> tuple[list[str], int, int]:
        failures: list[str] = []
        async with HttpClient(config.http) as client:

            async def one(i: int) -> None:
                try:
                    await client.get(Url(f"{url}/doc{i}.json"))
                except FetchError as exc:
                    failures.append(type(exc).__name__)

            await one(0)
            async with anyio.create_task_group() as tg:
                for i in range(1, 50):
                    tg.start_soon(one, i)
            return failures, client.stats.requests, client.stats.retries

    failures, requests, retries = anyio.run(main)
    assert failures == [HostDownError.__name__] * 50
    assert (requests, retries) == (3, 2)  # the first request's three attempts, nothing more


def test_verify_against_a_host_that_went_down_reports_it_once_and_exits_1(
    tmp_path: Path, docroot: Path
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes("v", 20)}})
    with FixtureServer(docroot) as server:
        text = catalog_config_text(
            tmp_path, server, extra="    manifests: none", http=http_section(attempts=3)
        )
        config = write_config(tmp_path / "c.yaml", text)
        assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    # The server is gone: its port refuses connections.
    started = time.monotonic()
    done = run_cli("-c", str(config), "verify", cwd=tmp_path)
    seconds = time.monotonic() - started
    assert done.returncode == 1
    (problem,) = done.stdout.splitlines()
    host = server.url.removeprefix("http://")
    assert problem.startswith(f"test:develop/root - -: {server.url}/develop/v3/manifests/spec/")
    assert ": connection failed: " in problem
    assert problem.endswith(f"; host http://{host} is down, not asked again this run")
    down = [line for line in done.stderr.splitlines() if "is down" in line]
    assert len(down) == 1 and down[0].startswith(f"ERROR mirrorsync.fetch: host http://{host}")
    # At most the requests already under way when the first one gave up retry
    # (8 workers, 3 attempts); before the breaker: 20 specs x 3 attempts.
    retries = [line for line in done.stderr.splitlines() if "retrying" in line]
    assert len(retries) <= 8 * 2, retries
    summary = next(line for line in done.stderr.splitlines() if "mirrorsync: verify:" in line)
    requests = int(re.search(r"(\d+) requests", summary)[1])  # type: ignore[index]
    assert requests <= 8 * 3, summary
    assert "20 specs in 1 stack, 1 problem" in summary
    assert "20 not checked" in summary
    assert seconds < 15, seconds


def _serve_once(head: bytes, body: bytes) -> int:
    """A one-request server on loopback answering ``head`` + ``body``; its port."""
    return _serve_in_parts([head + body], 0.0)


DOC = b'{"spack": "binary cache"}' * 400


@pytest.mark.parametrize(
    ("encoding", "body", "problem"),
    [
        ("gzip", gzip.compress(DOC), None),
        ("deflate", zlib.compress(DOC), None),
        ("deflate", zlib.compress(DOC)[2:-4], None),  # raw deflate, as some servers send it
        ("gzip", b"this is not gzip at all", "body does not decode as its Content-Encoding says"),
        ("br", b"\x0b\x02\x80hello\x03", "unsupported Content-Encoding 'br'; refused"),
        # Two header lines mean gzip twice (every line counts, as in httpx):
        # decoding once would hand back compressed bytes as the document.
        (
            "gzip\r\nContent-Encoding: gzip",
            gzip.compress(gzip.compress(DOC)),
            "unsupported Content-Encoding 'gzip, gzip'; refused",
        ),
    ],
    ids=["gzip", "deflate", "raw-deflate", "bad-gzip", "brotli", "gzip-on-two-lines"],
)
def test_compressed_bodies_are_decoded_by_mirrorsync_or_refused_naming_the_url(
    encoding: str, body: bytes, problem: str | None
) -> None:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    url = Url(f"http://127.0.0.1:{_serve_once(head, body)}/doc.json")
    config = parse_config(
        "sources: [{name: m, kind: mirror, url: 'http://h/m'}]\n" + http_section()
    )

    async def main() -> bytes:
        async with HttpClient(config.http) as client:
            fetched = await client.get(url)
            assert isinstance(fetched, Fetched)
            return fetched.content

    if problem is None:
        assert anyio.run(main) == DOC
    else:
        with pytest.raises(FetchError) as caught:
            anyio.run(main)
        assert str(caught.value).startswith(f"{url}: {problem}")


def _serve_in_parts(parts: list[bytes], pause: float) -> int:
    """A one-request server on loopback sending ``parts`` ``pause`` s apart; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                for part in parts:
                    conn.sendall(part)
                    time.sleep(pause)

    threading.Thread(target=answer, daemon=True).start()
    port: int = listener.getsockname()[1]
    return port


def test_a_chunked_body_is_read_to_its_last_chunk(tmp_path: Path) -> None:
    """Transfer-Encoding: chunked, a chunk's bytes arriving before its end (so the
    reader meets the end of a chunk with nothing new to read) and chunks of
    uneven sizes: the whole body arrives, through ``get`` and through
    ``download`` (hashed, written)."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    half = len(DOC) // 2
    parts = [
        head + b"%x\r\n" % half + DOC[:100],  # the first chunk's first bytes ...
        DOC[100:half],  # ... the rest of them, apart ...
        b"\r\n",  # ... and its end, apart again
        b"1\r\n" + DOC[half : half + 1] + b"\r\n",
        b"%x\r\n" % (len(DOC) - half - 1) + DOC[half + 1 :] + b"\r\n0\r\n\r\n",
    ]
    config = parse_config(
        "sources: [{name: m, kind: mirror, url: 'http://h/m'}]\n" + http_section()
    )

    async def main() -> tuple[bytes, bytes, str]:
        async with HttpClient(config.http) as client:
            port = _serve_in_parts(parts, 0.05)
            fetched = await client.get(Url(f"http://127.0.0.1:{port}/d"))
            assert isinstance(fetched, Fetched)
            dest = tmp_path / "blob"
            port = _serve_in_parts(parts, 0.05)
            done = await client.download(Url(f"http://127.0.0.1:{port}/d"), dest)
            return fetched.content, dest.read_bytes(), done.sha256

    content, written, digest = anyio.run(main)
    assert content == DOC and written == DOC
    assert digest == hashlib.sha256(DOC).hexdigest()
