"""The fixture HTTP server over real sockets: files, validators, every fault kind, the log."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest

from mirrorsync.fixture.server import FixtureServer

REPO = Path(__file__).resolve().parent.parent
BLOB = random.Random(0).randbytes(300_000)
BIG = random.Random(1).randbytes(3 * 2**20 + 7)


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "m/blobs").mkdir(parents=True)
    (root / "m/index.json").write_bytes(b'{"a": 1}')
    (root / "m/blobs/blob").write_bytes(BLOB)
    (root / "m/blobs/big").write_bytes(BIG)
    (tmp_path / "secret.txt").write_text("outside the docroot")
    return root


@pytest.fixture
def srv(www: Path) -> Iterator[FixtureServer]:
    with FixtureServer(www) as server:
        yield server


@pytest.fixture
def client(srv: FixtureServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        yield c


def raw_get(srv: FixtureServer, path: str) -> int:
    """GET ``path`` exactly as written (httpx would normalise dot segments away)."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


# -- files and validators --------------------------------------------------------


def test_get_and_head(srv: FixtureServer, client: httpx.Client) -> None:
    assert srv.url.startswith("http://127.0.0.1:") and not srv.url.endswith("/")
    r = client.get("/m/index.json")
    assert r.status_code == 200 and r.content == b'{"a": 1}'
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == "8"
    assert r.headers["etag"].startswith('"') and r.headers["etag"].endswith('"')
    assert r.headers["last-modified"].endswith(" GMT")
    r = client.get("/m/blobs/blob?x=1")
    assert r.content == BLOB and r.headers["content-type"] == "application/octet-stream"
    h = client.head("/m/blobs/blob")
    assert h.status_code == 200 and h.content == b""
    assert h.headers["content-length"] == str(len(BLOB))
    assert h.headers["etag"] == r.headers["etag"]
    big = client.get("/m/blobs/big")
    assert hashlib.sha256(big.content).digest() == hashlib.sha256(BIG).digest()
    log = srv.requests
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/m/index.json", 200),
        ("GET", "/m/blobs/blob", 200),
        ("HEAD", "/m/blobs/blob", 200),
        ("GET", "/m/blobs/big", 200),
    ]
    assert [r.bytes_sent for r in log] == [8, len(BLOB), 0, len(BIG)]


def test_conditional_requests(www: Path, client: httpx.Client) -> None:
    first = client.get("/m/index.json")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for value in (etag, f'"nope", {etag}', f"W/{etag}", "*"):
        r = client.get("/m/index.json", headers={"If-None-Match": value})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert client.head("/m/index.json", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/m/index.json", headers={"If-None-Match": '"nope"'}).status_code == 200
    assert client.get("/m/index.json", headers={"If-Modified-Since": modified}).status_code == 304
    old = "Sat, 01 Jan 2000 00:00:00 GMT"
    assert client.get("/m/index.json", headers={"If-Modified-Since": old}).status_code == 200
    # If-None-Match wins over If-Modified-Since.
    both = {"If-None-Match": '"nope"', "If-Modified-Since": modified}
    assert client.get("/m/index.json", headers=both).status_code == 200

    # Same size, rewritten within the same clock tick: the ETag still changes.
    (www / "m/index.json").write_bytes(b'{"a": 2}')
    r = client.get("/m/index.json", headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.content == b'{"a": 2}' and r.headers["etag"] != etag
    big = client.head("/m/blobs/big").headers["etag"]
    os.utime(www / "m/blobs/big", ns=(0, 10**18))
    assert client.head("/m/blobs/big").headers["etag"] != big


def test_missing_directories_and_escapes(srv: FixtureServer, client: httpx.Client) -> None:
    assert client.get("/m/nothing.json").status_code == 404
    assert client.head("/m/nothing.json").status_code == 404
    assert client.get("/m").status_code == 404
    assert client.get("/").status_code == 404
    assert raw_get(srv, "/m/../../secret.txt") == 403
    assert raw_get(srv, "/%2e%2e/secret.txt") == 403
    assert raw_get(srv, "/m/%2E%2E/index.json") == 404
    assert raw_get(srv, "/m/../m/index.json") == 200


# -- faults ----------------------------------------------------------------------


def test_status_fault_with_retry_after_is_consumed(
    srv: FixtureServer, client: httpx.Client
) -> None:
    srv.add_fault("*/index.json", "status", times=2, status=429, retry_after="3")
    for _ in range(2):
        r = client.get("/m/index.json")
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert client.get("/m/index.json").status_code == 200
    srv.add_fault("/m/*", "status")  # default: 503 once, no Retry-After
    r = client.head("/m/blobs/blob")
    assert r.status_code == 503 and "retry-after" not in r.headers
    assert client.get("/m/blobs/blob").content == BLOB
    assert [r.status for r in srv.requests] == [429, 429, 200, 503, 200]


def test_faults_apply_in_order_forever_until_cleared(
    srv: FixtureServer, client: httpx.Client
) -> None:
    srv.add_fault("*.json", "status", status=500)
    srv.add_fault("*.json", "status", status=502, times=None)
    statuses = [client.get("/m/index.json").status_code for _ in range(4)]
    assert statuses == [500, 502, 502, 502]
    assert client.get("/m/blobs/blob").status_code == 200  # pattern does not match
    srv.clear_faults()
    assert client.get("/m/index.json").status_code == 200
    with pytest.raises(ValueError):
        srv.add_fault("*", "explode")


def test_drop_closes_without_a_response(srv: FixtureServer, client: httpx.Client) -> None:
    srv.add_fault("*/blob", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/m/blobs/blob")
    assert client.get("/m/blobs/blob").content == BLOB
    assert [(r.status, r.bytes_sent) for r in srv.requests] == [(0, 0), (200, len(BLOB))]


def test_reset_breaks_the_body(srv: FixtureServer, client: httpx.Client) -> None:
    srv.add_fault("*/blob", "reset", after_bytes=1000)
    with pytest.raises(httpx.TransportError):
        client.get("/m/blobs/blob")
    record = srv.requests[0]
    assert (record.status, record.bytes_sent) == (200, 1000)
    assert client.get("/m/blobs/blob").content == BLOB


def test_short_body_is_detected(srv: FixtureServer, client: httpx.Client) -> None:
    srv.add_fault("*/blob", "short", after_bytes=5000)
    with client.stream("GET", "/m/blobs/blob") as r:
        assert r.status_code == 200 and r.headers["content-length"] == str(len(BLOB))
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()
    srv.add_fault("*/index.json", "short", after_bytes=10**6)  # never the whole body
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/m/index.json")
    assert [r.bytes_sent for r in srv.requests] == [5000, 7]


def test_delay_and_stall_are_measurable(srv: FixtureServer, client: httpx.Client) -> None:
    srv.add_fault("*/index.json", "delay", delay=0.3)
    start = time.monotonic()
    assert client.get("/m/index.json").status_code == 200
    assert time.monotonic() - start >= 0.3

    srv.add_fault("*/blob", "stall", after_bytes=2000, delay=0.3)
    start = time.monotonic()
    with client.stream("GET", "/m/blobs/blob") as r:
        chunks = r.iter_raw()
        first = next(chunks)
        assert time.monotonic() - start < 0.25 and 0 < len(first) <= 2000
        body = first + b"".join(chunks)
    assert body == BLOB and time.monotonic() - start >= 0.3

    srv.add_fault("*/blob", "stall", after_bytes=2000, delay=1.0)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/m/blobs/blob", timeout=0.2)


# -- log and control API -----------------------------------------------------------


def test_request_log_counts_concurrent_requests(srv: FixtureServer, client: httpx.Client) -> None:
    def fetch(i: int) -> int:
        with httpx.Client(base_url=srv.url, timeout=5) as c:
            path = "/m/index.json" if i % 2 else "/m/blobs/blob"
            return c.request(
                "HEAD" if i % 3 == 0 else "GET", path, headers={"X-N": str(i)}
            ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(fetch, range(30))) == {200}
    assert srv.count("*") == 30
    assert srv.count("/m/*.json") == 15 and srv.count("*/blob") == 15
    assert srv.count("*", method="HEAD") == 10 and srv.count("*/blob", method="GET") == 10
    assert sorted(int(r.headers["X-N"]) for r in srv.requests) == list(range(30))
    srv.reset_log()
    assert srv.requests == [] and srv.count("*") == 0


def test_control_api(srv: FixtureServer, client: httpx.Client) -> None:
    fault = {
        "pattern": "*/index.json",
        "kind": "status",
        "status": 503,
        "retry_after": "1",
        "times": 1,
    }
    assert client.post("/_fixture/faults", json=fault).status_code == 201
    r = client.get("/m/index.json")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    client.post("/_fixture/faults", json={"pattern": "*", "kind": "status", "times": None})
    assert client.get("/m/blobs/blob").status_code == 503
    assert client.delete("/_fixture/faults").status_code == 200
    assert client.get("/m/blobs/blob").status_code == 200
    log = client.get("/_fixture/requests").json()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("GET", "/m/index.json", 503),
        ("GET", "/m/blobs/blob", 503),
        ("GET", "/m/blobs/blob", 200),
    ]
    assert log[-1]["bytes_sent"] == len(BLOB) and "host" in {k.lower() for k in log[-1]["headers"]}
    assert client.post("/_fixture/faults", json={"kind": "status"}).status_code == 400
    assert client.post("/_fixture/faults", json={"pattern": "*", "kind": "nope"}).status_code == 400
    assert client.delete("/_fixture/requests").status_code == 200
    assert client.get("/_fixture/requests").json() == []
    assert client.get("/_fixture/nothing").status_code == 404


def test_async_client_in_an_event_loop(srv: FixtureServer) -> None:
    srv.add_fault("*/blob", "delay", delay=0.2, times=None)

    async def main() -> list[bytes]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=5) as c:
            results: list[bytes] = []

            async def one() -> None:
                results.append((await c.get("/m/blobs/blob")).content)

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(one)
            return results

    start = time.monotonic()
    assert anyio.run(main) == [BLOB] * 5
    assert time.monotonic() - start < 0.9  # the five delays overlap: one thread each


# -- as a separate process ---------------------------------------------------------


def test_module_builds_a_seed_and_serves_it_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "mirrorsync.fixture"]
    docroot = tmp_path / "seed"
    done = subprocess.run(
        [*command, "build-seed", str(docroot), "--seed", "000"], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    with subprocess.Popen(
        [*command, "serve", str(docroot)], env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        catalog = httpx.get(f"{url}/cache_spack_io_index.json", timeout=5).json()
        assert [e["label"] for e in catalog["develop"]][-1] == "root"
        fault = {"pattern": "/cache_spack_io_index.json", "kind": "status", "status": 500}
        httpx.post(f"{url}/_fixture/faults", json=fault, timeout=5)
        assert httpx.get(f"{url}/cache_spack_io_index.json", timeout=5).status_code == 500
        log = json.loads(httpx.get(f"{url}/_fixture/requests", timeout=5).content)
        assert [e["status"] for e in log] == [200, 500]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_excess_sends_more_than_the_file_with_no_length_to_stop_at(
    srv: FixtureServer, client: httpx.Client
) -> None:
    srv.add_fault("/m/blobs/blob", "excess", after_bytes=12345)
    response = client.get("/m/blobs/blob")
    assert response.status_code == 200
    assert "content-length" not in response.headers
    assert response.content == BLOB + bytes(12345)
    assert srv.requests[-1].bytes_sent == len(BLOB) + 12345
    assert client.get("/m/blobs/blob").content == BLOB  # once only


def test_trickle_sends_headers_and_body_a_byte_at_a_time(srv: FixtureServer) -> None:
    srv.add_fault("/m/index.json", "trickle", delay=0.01)
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
    try:
        started = time.monotonic()
        conn.request("GET", "/m/index.json")
        response = conn.getresponse()  # the status line and headers, byte by byte
        headers_after = time.monotonic() - started
        body = response.read()
    finally:
        conn.close()
    assert (response.status, body) == (200, b'{"a": 1}')
    assert headers_after > 0.01 * 100  # well over 100 header bytes, 10 ms each


def test_auth_answers_401_without_the_credentials(www: Path) -> None:
    with FixtureServer(www, auth=("u", "p")) as server, httpx.Client(base_url=server.url) as c:
        refused = c.get("/m/index.json")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic ")
        assert c.get("/m/index.json", auth=("u", "wrong")).status_code == 401
        assert c.get("/m/index.json", auth=("u", "p")).content == b'{"a": 1}'
        assert c.get("/_fixture/requests").status_code == 200  # the control API is open
