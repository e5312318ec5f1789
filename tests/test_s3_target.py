"""The S3 copy target and the s3:// transport against moto's server (a real HTTP S3 API):
multipart uploads, what a killed run leaves, errors and credentials."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import database_value, run_cli, write_config
from mirrorsync.config import HttpConfig, S3Settings, parse_config
from mirrorsync.errors import ConfigError, CopyError
from mirrorsync.fetch import HttpClient, Tally, Url
from mirrorsync.mirrors import s3target
from mirrorsync.mirrors.s3target import S3Target
from mirrorsync.units import MAX_SIZE
from s3server import AWS, client, moto_server


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        client(url).create_bucket(Bucket="copies")
        yield url


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)


def _run(endpoint: str, tmp: Path, work: Any) -> Any:
    async def main() -> Any:
        config = HttpConfig(s3={"s3://copies": S3Settings(endpoint_url=endpoint)})
        async with HttpClient(config) as http:
            tally = Tally()
            target = S3Target("s3://copies/big", http, tmp, tally)
            return await work(target, tally)

    return anyio.run(main)


def test_a_large_blob_goes_up_in_parts_with_its_digest(
    endpoint: str, tmp_path: Path, aws: None
) -> None:
    data = os.urandom(12 * 1024 * 1024 + 5)
    digest = hashlib.sha256(data).hexdigest()
    rel = f"blobs/sha256/{digest[:2]}/{digest}"

    async def work(target: S3Target, tally: Tally) -> tuple[int, bool, bool]:
        target.multipart_over = target.part_size = 5 * 1024 * 1024  # S3's smallest part
        staged = await target.staging(rel)
        staged.write_bytes(data)
        await target.put_blob(rel, staged, len(data), digest)
        assert not staged.exists()
        sent = tally.requests
        fresh = S3Target(target.base, target.client, target.workdir, tally)
        return (
            sent,
            await fresh.exists(rel, len(data), digest, trusted=False),
            await fresh.exists(rel, len(data), "0" * 64, trusted=False),
        )

    requests, present, other = _run(endpoint, tmp_path, work)
    assert requests == 1 + 3 + 1  # start, three parts, complete
    assert present and not other
    head = client(endpoint).head_object(Bucket="copies", Key=f"big/{rel}", PartNumber=1)
    assert head["PartsCount"] == 3
    assert head["Metadata"]["sha256"] == digest
    body = client(endpoint).get_object(Bucket="copies", Key=f"big/{rel}")["Body"].read()
    assert body == data


def test_the_next_run_aborts_what_a_killed_multipart_upload_left(
    endpoint: str, tmp_path: Path, aws: None
) -> None:
    s3 = client(endpoint)
    s3.create_multipart_upload(Bucket="copies", Key="big/blobs/sha256/ab/abandoned")
    s3.create_multipart_upload(Bucket="copies", Key="elsewhere/not-ours")

    async def work(target: S3Target, tally: Tally) -> None:
        await target.prepare()

    _run(endpoint, tmp_path, work)
    left = [u["Key"] for u in s3.list_multipart_uploads(Bucket="copies").get("Uploads", [])]
    assert left == ["elsewhere/not-ours"]


def test_bad_credentials_fail_the_source_in_one_line_without_the_secret(tmp_path: Path) -> None:
    """S3 refuses an unknown access key (moto's IAM checks on): the sync of that source
    fails, exit 1, one line naming the s3:// object, never the secret."""
    with moto_server(checks_credentials=True) as url:
        config = write_config(
            tmp_path / "mirrorsync.yaml",
            f"""
database: {database_value(tmp_path)}
http: {{retries: {{attempts: 1}}}}
sources:
  - name: private
    kind: mirror
    url: s3://private-bucket/cache
    s3: {{endpoint_url: "{url}"}}
""",
        )
        secret = "wJalrXUtnFEMI-not-a-real-one"
        env = {**AWS, "AWS_ACCESS_KEY_ID": "AKIAUNKNOWN", "AWS_SECRET_ACCESS_KEY": secret}
        done = run_cli("-c", str(config), "once", cwd=tmp_path, env=env, timeout=60)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "s3://private-bucket/cache/" in said and "403" in said, said
    assert "InvalidAccessKeyId" in said or "AccessDenied" in said, said
    assert secret not in said and "Traceback" not in said


def _recording_server(answer: bytes) -> tuple[ThreadingHTTPServer, list[dict[str, str]]]:
    """A loopback HTTP server answering every GET with ``answer``, keeping the headers."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
            self.send_response(200)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.mark.parametrize("anonymous", [True, False])
def test_requests_are_signed_unless_anonymous(anonymous: bool, aws: None) -> None:
    """``anonymous: true``: no credential lookup, no Authorization header (a public
    bucket); otherwise SigV4 with the environment's key, path-style to the endpoint."""
    server, seen = _recording_server(b"open")
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"

    async def main() -> bytes:
        settings = S3Settings(endpoint_url=endpoint, anonymous=anonymous)
        async with HttpClient(HttpConfig(s3={"s3://pub/lic": settings})) as http:
            got = await http.get(Url("s3://pub/lic/x+y"))
            return getattr(got, "content", b"")

    try:
        assert anyio.run(main) == b"open"
    finally:
        server.shutdown()
    (headers,) = seen
    assert headers["path"] == "/pub/lic/x+y"
    if anonymous:
        assert "authorization" not in headers
    else:
        assert headers["authorization"].startswith(
            f"AWS4-HMAC-SHA256 Credential={AWS['AWS_ACCESS_KEY_ID']}/"
        )
        assert AWS["AWS_SECRET_ACCESS_KEY"] not in str(headers)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("path: s3://Bad_Bucket/x", "mirrors[0].path: expected s3://bucket/prefix"),
        ("path: s3://bucket/a/../b", "mirrors[0].path: expected a plain prefix"),
        ("path: /srv/copy\n    s3: {region: eu-west-1}", "mirrors[0].s3: applies to s3:// URLs"),
        (
            "path: s3://bucket/x\n    s3: {endpoint_url: 'minio:9000'}",
            "mirrors[0].s3.endpoint_url: expected an http:// or https:// URL",
        ),
    ],
)
def test_s3_configuration_errors_name_the_key(tmp_path: Path, entry: str, problem: str) -> None:
    text = f"""
database: {database_value(tmp_path)}
sources:
  - name: up
    kind: mirror
    url: s3://upstream/cache
mirrors:
  - name: copy
    source: up
    {entry}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, str(tmp_path / "mirrorsync.yaml"))
    assert problem in str(caught.value)


def test_per_entry_s3_settings_apply_to_their_own_urls(tmp_path: Path) -> None:
    text = f"""
database: {database_value(tmp_path)}
sources:
  - name: up
    kind: mirror
    url: s3://upstream/cache
    s3: {{anonymous: true}}
mirrors:
  - name: copy
    source: up
    path: s3://copies/site
    s3: {{endpoint_url: "http://127.0.0.1:9000", profile: writer}}
"""
    config = parse_config(text, str(tmp_path / "mirrorsync.yaml"))
    assert config.http.s3["s3://upstream/cache"].anonymous is True
    assert config.http.s3["s3://copies/site"].profile == "writer"


def test_objects_put_while_workers_list_the_bucket_are_known(
    endpoint: str, tmp_path: Path, aws: None
) -> None:
    """Workers ask what is present at once, then put: no put is forgotten by a listing
    that began before it (the copy's read-back said "missing, yet referenced")."""

    async def work(target: S3Target, tally: Tally) -> dict[str, int | None]:
        target.base, target.prefix = "s3://copies/race", "race/"

        async def one(i: int) -> None:
            rel = f"blobs/sha256/00/{i:064d}"
            await target.exists(rel, 1, "0" * 64, trusted=True)
            await target.put_manifest(rel, b"%d" % i)

        async with anyio.create_task_group() as group:
            for i in range(16):
                group.start_soon(one, i)
        return {str(i): await target.size(f"blobs/sha256/00/{i:064d}") for i in range(16)}

    sizes = _run(endpoint, tmp_path, work)
    assert sizes == {str(i): len(b"%d" % i) for i in range(16)}


def test_a_listing_size_that_is_no_ascii_count_is_left_out(tmp_path: Path, aws: None) -> None:
    """A bucket listing's <Size> is the server's text: '²' (a Unicode digit) and a
    thousand-digit number are no sizes to take, and no traceback."""
    ns = "http://s3.amazonaws.com/doc/2006-03-01/"
    answer = (
        f'<ListBucketResult xmlns="{ns}"><IsTruncated>false</IsTruncated>'
        "<Contents><Key>big/blobs/odd</Key><Size>\u00b2</Size></Contents>"
        f"<Contents><Key>big/blobs/huge</Key><Size>{'9' * 1000}</Size></Contents>"
        "<Contents><Key>big/blobs/ok</Key><Size>12</Size></Contents>"
        "</ListBucketResult>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def work(target: S3Target, tally: Tally) -> dict[str, int]:
        return await target.inventory()

    try:
        listed = _run(f"http://127.0.0.1:{server.server_address[1]}", tmp_path, work)
    finally:
        server.shutdown()
        server.server_close()
    assert listed["blobs/ok"] == 12
    assert "blobs/odd" not in listed
    assert listed["blobs/huge"] > MAX_SIZE  # no size a blob of the copy has


def test_a_listing_that_pages_forever_fails_in_one_line(
    tmp_path: Path, aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose every ListObjectsV2 page says 'truncated, go on': the listing
    stops at its page bound with a CopyError instead of asking for ever."""
    monkeypatch.setattr(s3target, "MAX_LIST_PAGES", 3)
    ns = "http://s3.amazonaws.com/doc/2006-03-01/"
    answer = (
        f'<ListBucketResult xmlns="{ns}"><IsTruncated>true</IsTruncated>'
        "<NextContinuationToken>again</NextContinuationToken></ListBucketResult>"
    ).encode()
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def work(target: S3Target, tally: Tally) -> dict[str, int]:
        return await target.inventory()

    try:
        with pytest.raises(CopyError, match="the listing goes on past 3 pages"):
            _run(f"http://127.0.0.1:{server.server_address[1]}", tmp_path, work)
    finally:
        server.shutdown()
        server.server_close()
    assert len(asked) == 3
