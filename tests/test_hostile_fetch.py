"""Hostile HTTP answers and settings (issue 25, items 5, 8, 11 and 12).

- ``Retry-After`` is read as RFC 9110 says (ASCII digits or an HTTP date,
  capped at a day); anything else, such as ``²`` (``str.isdigit()`` is true,
  ``float()`` fails), is ignored, from a webhook receiver or from upstream.
- A gzip-compressed index blob that unpacks to far more than it should (a
  decompression bomb) fails its stack with one line; memory stays bounded.
- A source URL with ``user:password@`` is followed through redirects (the
  credentials kept on the same origin, dropped across hosts); a query string
  (``?token=T``) is kept on every URL derived from a source URL.
- ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` and ``http.proxy`` are honoured,
  checked through a real forward proxy on loopback (``tests/proxy.py``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from email.utils import formatdate
from pathlib import Path

import anyio
import pytest

from conftest import REPO, catalog_config_text, run_cli, write_config
from mirrorsync.config import parse_config
from mirrorsync.errors import FetchError, FormatError
from mirrorsync.fetch import Fetched, HttpClient, Url
from mirrorsync.fetch.retry import RETRY_AFTER_CAP, parse_retry_after
from mirrorsync.fixture.build import build_catalog_from_specs, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.inflate import gunzip
from mirrorsync.redact import join_url, unmask
from proxy import ForwardProxy
from receiver import Receiver, new_secret

INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"
QUICK = "http: {timeout: 5, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.05}}\n"
#: "²" as its UTF-8 bytes on the wire (header values are written as latin-1 by http.server).
SUPERSCRIPT_TWO = "²".encode().decode("latin-1")


def specs(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node("zlib", f"1.{i}", fake_hash(f"hostile-fetch:{prefix}{i}")) for i in range(n)]


def no_traceback(done: object) -> None:
    stderr = getattr(done, "stderr", "")
    assert "Traceback" not in stderr, stderr


# -- 5: Retry-After ---------------------------------------------------------------------


def test_retry_after_is_ascii_digits_or_an_http_date_capped_at_a_day() -> None:
    assert parse_retry_after("²") is None  # str.isdigit() is true for it
    assert parse_retry_after("١٢") is None  # Arabic-Indic digits: isdigit() too
    assert parse_retry_after("1e3") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after("9" * 5000) == RETRY_AFTER_CAP == 86400.0
    assert parse_retry_after("172800") == RETRY_AFTER_CAP
    in_an_hour = parse_retry_after(formatdate(time.time() + 3600, usegmt=True))
    assert in_an_hour is not None and 3590 < in_an_hour <= 3600
    in_a_year = formatdate(time.time() + 365 * 86400, usegmt=True)
    assert parse_retry_after(in_a_year) == RETRY_AFTER_CAP
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("Fri, 31 Dec 99999 23:59:59 GMT") is None


def _webhook_config(tmp_path: Path, server: FixtureServer, url: str) -> Path:
    secret_file = tmp_path / "hook.secret"
    extra = (
        "    manifests: none\n"
        f"webhooks:\n  - name: chat\n    url: {url}\n    secret_file: {secret_file}\n"
    )
    return write_config(
        tmp_path / "c.yaml", catalog_config_text(tmp_path, server, extra=extra, http=QUICK)
    )


def test_a_receiver_sending_retry_after_superscript_two_ends_no_once(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    secret = new_secret()
    (tmp_path / "hook.secret").write_text(secret + "\n")
    (tmp_path / "hook.secret").chmod(0o600)
    build_catalog_from_specs(docroot, {"develop": {"root": specs("a", 2)}}, manifests=False)
    with Receiver(secret, status=503) as receiver:
        receiver.retry_after = SUPERSCRIPT_TWO
        config = _webhook_config(tmp_path, server, receiver.url)
        first = run_cli("-c", str(config), "once", cwd=tmp_path)
        no_traceback(first)
        assert receiver.received, "the webhook was never called"
        assert "HTTP 503" in first.stderr
        # The failed delivery waits its turn; the next runs sync (and the one after that too).
        build_catalog_from_specs(docroot, {"develop": {"root": specs("b", 3)}}, manifests=False)
        second = run_cli("-c", str(config), "once", cwd=tmp_path)
        no_traceback(second)
        events = run_cli("-c", str(config), "events", "--json", cwd=tmp_path)
        assert events.returncode == 0, events.stderr
        versions = {json.loads(line)["version"] for line in events.stdout.splitlines()}
        assert "1.2" in versions  # only the second release has zlib 1.2
        third = run_cli("-c", str(config), "once", cwd=tmp_path)
        no_traceback(third)


def _v3_copy_config(tmp_path: Path, server: FixtureServer) -> Path:
    text = f"""
database: {tmp_path / "state.db"}
sources:
  - name: test
    kind: mirror
    url: {server.url}/develop
    release: develop
    manifests: all
mirrors:
  - name: local
    path: {tmp_path / "copy"}
    source: test
    release: develop
{QUICK}"""
    return write_config(tmp_path / "c.yaml", text)


def test_retry_after_superscript_two_on_a_blob_ends_mirror_and_verify_in_one_line(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "develop", specs("m", 3))
    config = _v3_copy_config(tmp_path, server)
    synced = run_cli("-c", str(config), "once", cwd=tmp_path)
    no_traceback(synced)
    assert synced.returncode == 0, synced.stderr
    shutil.rmtree(tmp_path / "copy" / "blobs")  # the copy must fetch them again
    server.add_fault("*/blobs/*", "status", times=None, retry_after=SUPERSCRIPT_TWO)
    for command in ("mirror", "verify"):
        done = run_cli("-c", str(config), command, cwd=tmp_path)
        no_traceback(done)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "HTTP 503" in done.stdout + done.stderr, (command, done.stdout, done.stderr)


# -- 8: decompression bombs ---------------------------------------------------------------


def gzip_zeros(size: int, chunk: int = 1 << 24) -> bytes:
    """``size`` zero bytes gzipped (about size/1000 bytes), made in a fraction of a second:
    each fully flushed deflate segment of ``chunk`` zeros has the same bytes."""
    assert size % chunk == 0
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = deflate.compress(bytes(chunk)) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.flush()
    crc, zeros = 0, bytes(chunk)
    for _ in range(size // chunk):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + segment * (size // chunk) + tail + struct.pack("<II", crc, size & 0xFFFFFFFF)


GIB = 1 << 30


def test_gunzip_refuses_a_bomb_within_a_few_mib_and_over_the_limit() -> None:
    bomb = gzip_zeros(GIB)
    assert len(bomb) < 1_100_000 and gzip.decompress(gzip_zeros(1 << 25)) == bytes(1 << 25)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(FetchError) as caught:
        gunzip(bomb, "http://h.example/blobs/sha256/ab/abc", max_bytes=4 * GIB)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(caught.value).startswith("http://h.example/blobs/sha256/ab/abc: gzip index ")
    assert "over 100 times its size" in str(caught.value)
    assert peak < 8 << 20, peak  # unpacked in one call: 1 GiB
    assert seconds < 2
    # Data that packs less tightly is held to the configured limit, named.
    text = json.dumps([{"i": i, "h": fake_hash(str(i))} for i in range(40_000)]).encode()
    with pytest.raises(FetchError, match=r"over the 100000-byte limit \(limits\.index\) once"):
        gunzip(gzip.compress(text), "u", max_bytes=100_000)
    assert gunzip(gzip.compress(text), "u", max_bytes=len(text)) == text
    with pytest.raises(FormatError, match="truncated"):
        gunzip(gzip.compress(text)[:-100], "u", max_bytes=None)
    with pytest.raises(FormatError, match="not valid gzip"):
        gunzip(text, "u", max_bytes=None)


# Runs `mirrorsync`, then says the process's peak resident memory (KiB).
MEASURED = """
import resource, sys
from mirrorsync.cli import main
code = main(sys.argv[1:])
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def test_a_gzip_bomb_index_fails_its_stack_in_one_line_with_memory_bounded(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    root = docroot / "develop"
    write_v3_mirror(root, specs("g", 2), index_compression="gzip", manifests=False)
    bomb = gzip_zeros(GIB)
    checksum = hashlib.sha256(bomb).hexdigest()
    blob = root / "blobs/sha256" / checksum[:2] / checksum
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(bomb)
    manifest = json.loads((root / INDEX_MANIFEST).read_text())
    manifest["data"][0].update(contentLength=len(bomb), checksum=checksum)
    (root / INDEX_MANIFEST).write_text(json.dumps(manifest))
    config = write_config(
        tmp_path / "c.yaml",
        f"database: {tmp_path / 'state.db'}\nsources:\n  - name: test\n    kind: mirror\n"
        f"    url: {server.url}/develop\n    manifests: none\n{QUICK}",
    )
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, "-c", str(config), "once"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    no_traceback(done)
    assert done.returncode == 1, done.stderr
    failed = [line for line in done.stderr.splitlines() if "decompression bomb" in line]
    assert len(failed) >= 1 and f"{server.url}/develop/blobs/sha256/" in failed[0], done.stderr
    (maxrss,) = (int(x.split()[1]) for x in done.stderr.splitlines() if x.startswith("MAXRSS"))
    assert maxrss < 400 * 1024, maxrss  # unpacked in memory: over 2 GiB


# -- 11: redirects with credentials, query strings -----------------------------------------


def _get(url: str, config_text: str = QUICK) -> bytes:
    sources = "sources: [{name: x, kind: mirror, url: 'http://127.0.0.1:9/'}]\n"
    config = parse_config(sources + config_text, "c.yaml")

    async def go() -> bytes:
        async with HttpClient(config.http) as client:
            result = await client.get(Url(url))
            assert isinstance(result, Fetched)
            return result.content

    return anyio.run(go)


def test_credentials_are_kept_through_a_redirect_on_the_same_origin(docroot: Path) -> None:
    (docroot / "moved.json").write_text('{"moved": true}')
    with FixtureServer(docroot, auth=("mirror-user", "s3cret")) as server:
        server.add_fault("/old.json", "redirect", times=None, location="/moved.json")
        host = server.url.removeprefix("http://")
        assert _get(f"http://mirror-user:s3cret@{host}/old.json") == b'{"moved": true}'
        moved = [r for r in server.requests if r.path == "/moved.json"]
        assert moved and moved[0].headers.get("Authorization") == server.auth


def test_credentials_are_dropped_when_a_redirect_leaves_the_host(
    docroot: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "moved.json").write_text('{"elsewhere": true}')
    with (
        FixtureServer(docroot, auth=("mirror-user", "s3cret")) as server,
        FixtureServer(other) as elsewhere,
    ):
        server.add_fault("/old.json", "redirect", location=f"{elsewhere.url}/moved.json")
        host = server.url.removeprefix("http://")
        assert _get(f"http://mirror-user:s3cret@{host}/old.json") == b'{"elsewhere": true}'
        (moved,) = elsewhere.requests
        assert "Authorization" not in moved.headers


def test_a_source_with_credentials_syncs_through_redirects(tmp_path: Path, docroot: Path) -> None:
    """An index manifest moved to another path of the same server (S3, nginx rewrites)."""
    write_v3_mirror(docroot / "develop", specs("r", 3))
    moved = docroot / "moved" / INDEX_MANIFEST
    moved.parent.mkdir(parents=True)
    moved.write_bytes((docroot / "develop" / INDEX_MANIFEST).read_bytes())
    with FixtureServer(docroot, auth=("mirror-user", "s3cret")) as server:
        server.add_fault(
            f"/develop/{INDEX_MANIFEST}", "redirect", location=f"/moved/{INDEX_MANIFEST}"
        )
        host = server.url.removeprefix("http://")
        config = write_config(
            tmp_path / "c.yaml",
            f"database: {tmp_path / 'state.db'}\nsources:\n  - name: test\n    kind: mirror\n"
            f"    url: http://mirror-user:s3cret@{host}/develop\n    manifests: all\n{QUICK}",
        )
        done = run_cli("-c", str(config), "once", cwd=tmp_path)
        no_traceback(done)
        assert done.returncode == 0, done.stderr
        assert "s3cret" not in done.stderr
        assert server.count(f"/moved/{INDEX_MANIFEST}") == 1


def test_a_query_string_is_kept_on_every_url_derived_from_a_source(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """Index, manifests, blobs, keys and the copy's downloads all carry ``?token=T``."""
    write_v3_mirror(docroot / "develop", specs("q", 3))
    text = f"""
database: {tmp_path / "state.db"}
sources:
  - name: test
    kind: mirror
    url: {server.url}/develop/?token=T0KEN&team=ops
    release: develop
    manifests: all
mirrors:
  - name: local
    path: {tmp_path / "copy"}
    source: test
    release: develop
{QUICK}"""
    config = write_config(tmp_path / "c.yaml", text)
    for command in ("once", "verify"):
        done = run_cli("-c", str(config), command, cwd=tmp_path)
        no_traceback(done)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert "T0KEN" not in done.stdout + done.stderr
    paths = {r.path for r in server.requests}
    assert any("/blobs/" in p for p in paths) and any("/spec/" in p for p in paths)
    assert any(p.endswith("index.manifest.json") for p in paths)
    assert all(r.query == "token=T0KEN&team=ops" for r in server.requests), [
        (r.path, r.query) for r in server.requests if r.query != "token=T0KEN&team=ops"
    ]
    failed = [(r.path, r.status) for r in server.requests if r.status != 200]
    assert failed == []  # unsigned, and a copy never reads upstream's key index
    assert (tmp_path / "copy" / INDEX_MANIFEST).exists()


def test_join_url_keeps_the_query_and_unmask_finds_the_address_again() -> None:
    assert join_url("http://h/m/?token=T", "/blobs/x") == "http://h/m/blobs/x?token=T"
    assert join_url("http://h/m", "a/b") == "http://h/m/a/b"
    assert Url("http://u:p@h/m/?sig=S#f").join("i.json").address == "http://u:p@h/m/i.json?sig=S#f"
    assert Url("http://h/m//?a=1").rstrip("/").address == "http://h/m?a=1"
    base = Url("https://u:pw@b.example/pfx/?X-Amz-Signature=S")
    derived = Url(join_url(base.address, "develop/e4s"))
    assert derived.display == "https://***@b.example/pfx/develop/e4s?X-Amz-Signature=***"
    assert unmask(derived.display, base) == derived.address
    assert unmask(base.display, base) == base.address
    assert unmask("https://***@b.example/pfxother/x?X-Amz-Signature=***", base) is None
    assert unmask("https://***@b.example/pfx/x", base) is None  # not made from it


# -- 12: proxies --------------------------------------------------------------------------

TLS = (
    Path(__file__).parent / "data" / "tls-cert.pem",
    Path(__file__).parent / "data" / "tls-key.pem",
)
NO_PROXY_ENV = {"NO_PROXY": "", "no_proxy": "", "ALL_PROXY": "", "all_proxy": ""}


def _dead_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _mirror_source_config(tmp_path: Path, url: str, http_extra: str = "") -> Path:
    return write_config(
        tmp_path / "c.yaml",
        f"database: {tmp_path / 'state.db'}\nsources:\n  - name: test\n    kind: mirror\n"
        f"    url: {url}\n    manifests: all\n"
        "http: {timeout: 5, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.05}"
        f"{http_extra}}}\n",
    )


def _once(config: Path, env: dict[str, str]) -> None:
    done = run_cli("-c", str(config), "once", cwd=config.parent, env={**NO_PROXY_ENV, **env})
    no_traceback(done)
    assert done.returncode == 0, done.stderr


def test_http_proxy_from_the_environment_carries_every_request_unless_no_proxy(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "develop", specs("p", 3))
    config = _mirror_source_config(tmp_path, f"{server.url}/develop")
    with ForwardProxy() as proxy:
        _once(config, {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url})
        through = proxy.seen
        assert len(through) == len(server.requests) >= 5  # index manifest, index, 3 manifests
        assert {p.target.split("/")[2] for p in through} == {server.url.removeprefix("http://")}
        assert all(p.method in ("GET", "HEAD") for p in through)
        # NO_PROXY exempts the host (here with its port; a host name or domain works too).
        (docroot / "develop" / INDEX_MANIFEST).unlink()
        write_v3_mirror(docroot / "develop", specs("p2", 2))
        before = len(server.requests)
        host = server.url.removeprefix("http://")
        exempt = f"example.org, {host}"
        _once(config, {"HTTP_PROXY": proxy.url, "NO_PROXY": exempt, "no_proxy": exempt})
        assert len(server.requests) > before and len(proxy.seen) == len(through)


def test_http_proxy_in_the_configuration_wins_over_the_environment(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "develop", specs("c", 2))
    dead = _dead_port()
    with ForwardProxy() as proxy:
        authed = proxy.url.replace("http://", "http://proxy-user:pr0xy@")
        config = _mirror_source_config(tmp_path, f"{server.url}/develop", f", proxy: '{authed}'")
        _once(config, {"HTTP_PROXY": dead, "http_proxy": dead})
        assert len(proxy.seen) == len(server.requests) >= 4
        expected = "Basic " + base64.b64encode(b"proxy-user:pr0xy").decode()
        assert {p.proxy_authorization for p in proxy.seen} == {expected}
        assert all("Proxy-Authorization" not in r.headers for r in server.requests)
        # ``proxy: none``: straight to the server, whatever the environment says.
        seen = len(proxy.seen)
        config = _mirror_source_config(tmp_path, f"{server.url}/develop", ", proxy: none")
        _once(config, {"HTTP_PROXY": dead, "http_proxy": proxy.url})
        assert len(proxy.seen) == seen


def test_https_goes_through_the_proxy_in_a_connect_tunnel(
    tmp_path: Path, docroot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_v3_mirror(docroot / "develop", specs("s", 2))
    with FixtureServer(docroot, tls=TLS) as server, ForwardProxy() as proxy:
        config = _mirror_source_config(tmp_path, f"{server.url}/develop")
        _once(config, {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(TLS[0])})
        host = server.url.removeprefix("https://")
        assert {(p.method, p.target) for p in proxy.seen} == {("CONNECT", host)}
        assert len(server.requests) >= 4


def test_a_proxy_setting_that_cannot_work_is_one_line(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config = _mirror_source_config(tmp_path, f"{server.url}/develop", ", proxy: 'socks5://h:1'")
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    no_traceback(done)
    assert done.returncode == 2
    assert "http.proxy: proxy 'socks5://h:1': only http:// proxies are supported" in done.stderr
    config = _mirror_source_config(tmp_path, f"{server.url}/develop")
    done = run_cli(
        "-c", str(config), "once", cwd=tmp_path, env={"HTTPS_PROXY": "socks5://u:pw@h:1"}
    )
    no_traceback(done)
    assert done.returncode == 2, done.stderr
    assert "environment: proxy 'socks5://***@h:1': only http:// proxies" in done.stderr


def test_webhook_deliveries_follow_the_same_proxy_rule(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """``http.proxy`` (and ``none``) decide for webhook POSTs as for every fetch: httpx's
    own reading of the environment no longer does."""
    write_v3_mirror(docroot / "develop", specs("w", 2))
    secret = new_secret()
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    dead = _dead_port()
    with Receiver(secret) as receiver, ForwardProxy() as proxy:
        hook = f"webhooks:\n  - {{name: h, url: '{receiver.url}', secret_file: {secret_file}}}\n"
        config = _mirror_source_config(tmp_path, f"{server.url}/develop", f", proxy: '{proxy.url}'")
        config.write_text(config.read_text() + hook)
        _once(config, {"HTTP_PROXY": dead, "http_proxy": dead})
        posts = [p for p in proxy.seen if p.method == "POST"]
        assert [p.target for p in posts] == [receiver.url] and len(receiver.received) == 1
        # proxy: none: straight to the receiver, though the environment names a proxy.
        write_v3_mirror(docroot / "develop", specs("w", 3))  # a change: one more delivery
        config.write_text(config.read_text().replace(f"proxy: '{proxy.url}'", "proxy: none"))
        _once(config, {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url})
        assert [p for p in proxy.seen if p.method == "POST"] == posts
        assert len(receiver.received) == 2
