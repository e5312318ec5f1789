"""Validators that cannot hide a change (RFC 9110 8.8.2.2), over real loopback HTTP.

A server with one-second ``Last-Modified`` and no ``ETag`` (Python's own
``http.server``) answers 304 to a file rewritten within the second of the last
fetch. Its clock here is fixed (``Date`` is always ``FIXED``, files' mtimes are
set inside that second), so every rewrite happens "within the same second as
the previous sync", deterministically.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import Clock, database_value, sync
from mirrorsync.config import Config, parse_config
from mirrorsync.errors import ConfigError
from mirrorsync.fetch.validators import conditions, kept_validators
from mirrorsync.fixture.build import build_catalog_from_specs, write_v2_mirror, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store.httpcache import CachedDocument
from test_pages_source import page_bytes

FIXED = 1_800_000_000  # 2027-01-15T08:00:00Z: the one-second server's "now"
PAGE = "package/develop/zlib/specs.md"
HTTP = "http: {timeout: 5, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}\n"
KINDS = ["v3", "v2-hash", "v2-nohash", "page"]


class OneSecondServer(ThreadingHTTPServer):
    """``http.server`` serving a directory, its ``Date`` fixed at ``now``; logs
    (path, If-Modified-Since, If-None-Match, status) of every request."""

    daemon_threads = True

    def __init__(self, docroot: Path, *, etags: bool = False) -> None:
        handler = functools.partial(_OneSecondHandler, directory=str(docroot))
        super().__init__(("127.0.0.1", 0), handler)
        self.etags = etags  # nginx's: "<mtime in seconds>-<size>" in hex
        self.now = float(FIXED)
        self.log: list[tuple[str, str | None, str | None]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _OneSecondHandler(SimpleHTTPRequestHandler):
    server: OneSecondServer

    def date_time_string(self, timestamp: float | None = None) -> str:
        return super().date_time_string(self.server.now if timestamp is None else timestamp)

    def send_head(self) -> Any:
        with self.server.lock:
            self.server.log.append(
                (
                    self.path,
                    self.headers.get("if-modified-since"),
                    self.headers.get("if-none-match"),
                )
            )
        self._etag: str | None = None
        path = Path(self.translate_path(self.path))
        if self.server.etags and path.is_file():
            info = path.stat()
            self._etag = f'"{int(info.st_mtime):x}-{info.st_size:x}"'
            if self.headers.get("if-none-match") == self._etag:
                self.send_response(304)
                self.end_headers()
                return None
        return super().send_head()

    def send_header(self, keyword: str, value: str) -> None:
        super().send_header(keyword, value)
        if keyword == "Last-Modified" and self._etag:
            super().send_header("ETag", self._etag)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture(params=["http.server", "nginx-etag"])
def one_second(docroot: Path, request: pytest.FixtureRequest) -> Iterator[OneSecondServer]:
    """Python's http.server (no ETag), or with nginx's ETag (mtime seconds, size)."""
    server = OneSecondServer(docroot, etags=request.param == "nginx-etag")
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def nodes(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"zlib-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


def within_the_second(root: Path, second: int = FIXED, fraction: float = 0.5) -> None:
    """Every file under ``root`` last modified at ``second + fraction``."""
    when = second + fraction
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def write_kind(kind: str, docroot: Path, n: int) -> None:
    """The ``kind`` of document under ``docroot``, holding ``n`` specs."""
    site = docroot / "site"
    if kind == "v3":
        write_v3_mirror(site, nodes("s", n), manifests=False, signed=False)
    elif kind.startswith("v2"):
        write_v2_mirror(site, nodes("s", n), manifests=False, signed=False)
        if kind == "v2-nohash":
            (site / "build_cache/index.json.hash").unlink()
    else:
        entries = [(fake_hash(f"p{i}"), f"1.{i}", ["root"]) for i in range(n)]
        (docroot / PAGE).parent.mkdir(parents=True, exist_ok=True)
        (docroot / PAGE).write_bytes(page_bytes("zlib", "develop", entries))


def kind_config(kind: str, tmp_path: Path, url: str, extra_http: str = "") -> Config:
    if kind == "page":
        source = f"{{name: pages, kind: pages, urls: ['{url}/{PAGE}']}}"
    else:
        source = f"{{name: site, kind: mirror, url: '{url}/site', manifests: none}}"
    http = HTTP if not extra_http else HTTP.replace("}\n", f", {extra_http}}}\n")
    return parse_config(
        f"database: {tmp_path / 'state.db'}\nsources: [{source}]\n{http}",
        str(tmp_path / "mirrorsync.yaml"),
    )


def table_rows(db: Path) -> dict[str, int]:
    """Rows per table but the HTTP cache: what a sync that changed nothing leaves alone."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
            for t in tables
            if t != "http_cache"
        }


# -- the rule itself -------------------------------------------------------------


def _date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        # same second as Date: weak, not kept
        ({"last-modified": _date(FIXED), "date": _date(FIXED)}, (None, None)),
        # a second earlier: strong
        ({"last-modified": _date(FIXED - 1), "date": _date(FIXED)}, (None, _date(FIXED - 1))),
        # an ETag is kept, but not one made of a same-second date (nginx's: the
        # mtime in seconds and the size)
        (
            {"etag": '"x"', "last-modified": _date(FIXED - 1), "date": _date(FIXED)},
            ('"x"', _date(FIXED - 1)),
        ),
        ({"etag": '"x"', "last-modified": _date(FIXED), "date": _date(FIXED)}, ('"x"', None)),
        (
            {"etag": f'"{FIXED:x}-40"', "last-modified": _date(FIXED), "date": _date(FIXED)},
            (None, None),
        ),
        (
            {"etag": f'W/"{FIXED:x}-40"', "last-modified": _date(FIXED - 1), "date": _date(FIXED)},
            (f'W/"{FIXED:x}-40"', _date(FIXED - 1)),
        ),
        (  # a file:// ETag on a file system with whole-second mtimes
            {"etag": f'"{FIXED * 10**9:x}-40"', "last-modified": _date(FIXED)},
            (None, None),
        ),
        (  # ... and with nanoseconds
            {"etag": f'"{FIXED * 10**9 + 5:x}-40"', "last-modified": _date(FIXED)},
            (f'"{FIXED * 10**9 + 5:x}-40"', None),
        ),
        ({"etag": '"x"'}, ('"x"', None)),
        ({"etag": '"x"', "last-modified": "garbage"}, ('"x"', None)),
        # a date that is no date, or a Last-Modified after Date (a clock ahead)
        ({"last-modified": "yesterday", "date": _date(FIXED)}, (None, None)),
        ({"last-modified": _date(FIXED + 60), "date": _date(FIXED)}, (None, None)),
    ],
)
def test_last_modified_is_kept_only_a_second_before_date(
    headers: dict[str, str], kept: tuple[str | None, str | None]
) -> None:
    assert kept_validators(headers) == kept


def test_without_date_the_receipt_time_decides() -> None:
    modified = {"last-modified": _date(FIXED)}
    at = datetime.fromtimestamp(FIXED, UTC)
    assert kept_validators(modified, at + timedelta(seconds=0.9)) == (None, None)
    assert kept_validators(modified, at + timedelta(seconds=1)) == (None, _date(FIXED))
    assert kept_validators({"last-modified": _date(FIXED), "date": "garbage"}, at) == (None, None)


def test_conditions_prefer_the_etag_and_expire() -> None:
    now = datetime.fromtimestamp(FIXED, UTC)
    fetched = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    both = CachedDocument('"x"', _date(FIXED - 9), b"", fetched)
    assert conditions(both, now, 86400) == {"if-none-match": '"x"'}
    dated = CachedDocument(None, _date(FIXED - 9), b"", fetched)
    assert conditions(dated, now, 86400) == {"if-modified-since": _date(FIXED - 9)}
    assert conditions(dated, now, 3599) == {}  # fetched in full too long ago
    assert conditions(CachedDocument('"x"', None, b"", None), now, 86400) == {}  # when: unknown
    assert conditions(CachedDocument(None, None, b"", fetched), now, 86400) == {}
    assert conditions(None, now, 86400) == {}


# -- a one-second server ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_rewrite_within_the_second_is_seen_every_time(
    kind: str, tmp_path: Path, docroot: Path, one_second: OneSecondServer
) -> None:
    config = kind_config(kind, tmp_path, one_second.url)
    for n in range(1, 21):
        write_kind(kind, docroot, n)
        within_the_second(docroot, fraction=n / 50)
        report = sync(config)
        assert report.exit_code == 0, report.failures
        (outcome,) = report.stacks
        assert (outcome.status, outcome.version, outcome.spec_count) == ("changed", n, n), n
    # only same-second dates (and ETags made of them): nothing was asked conditionally
    assert all(ims is None and inm is None for _, ims, inm in one_second.log)


@pytest.mark.parametrize("kind", KINDS)
def test_a_date_a_second_older_than_date_is_still_used(
    kind: str, tmp_path: Path, docroot: Path, one_second: OneSecondServer
) -> None:
    config = kind_config(kind, tmp_path, one_second.url)
    write_kind(kind, docroot, 3)
    within_the_second(docroot)
    one_second.now = FIXED + 5  # the files are five seconds old: their dates are strong
    assert sync(config).stacks[0].status == "changed"
    before = table_rows(tmp_path / "state.db")
    one_second.log.clear()
    again = sync(config)
    assert (again.stacks[0].status, again.stacks[0].events) == ("unchanged", 0)
    asked = {path: (ims, inm) for path, ims, inm in one_second.log}
    document = {
        "v3": "/site/v3/manifests/index/index.manifest.json",
        "v2-hash": "/site/build_cache/index.json.hash",
        "v2-nohash": "/site/build_cache/index.json",
        "page": f"/{PAGE}",
    }[kind]
    size = (docroot / document.removeprefix("/")).stat().st_size
    etag = f'"{FIXED:x}-{size:x}"'
    assert asked[document] == ((None, etag) if one_second.etags else (_date(FIXED), None))
    assert table_rows(tmp_path / "state.db") == before


def test_a_catalogue_rewritten_within_the_second_is_seen(
    tmp_path: Path, docroot: Path, one_second: OneSecondServer
) -> None:
    releases: dict[str, dict[str, list[dict[str, object]]]] = {}
    config = parse_config(
        f"database: {tmp_path / 'state.db'}\nsources:\n  - name: test\n    kind: catalog\n"
        f"    url: {one_second.url}/cache_spack_io_index.json\n"
        f"    bucket_urls: {{spack-binaries: {one_second.url}/}}\n    manifests: none\n{HTTP}",
        str(tmp_path / "mirrorsync.yaml"),
    )
    for n in range(1, 6):
        releases[f"r{n}"] = {"root": nodes(f"r{n}", 1)}
        build_catalog_from_specs(docroot, releases, manifests=False, signed=False)
        within_the_second(docroot, fraction=n / 10)
        report = sync(config)
        assert report.exit_code == 0, report.failures
        assert sorted(o.release for o in report.stacks) == sorted(releases), n


# -- a server with ETags ------------------------------------------------------------


@pytest.mark.parametrize("kind", [*KINDS, "catalog"])
def test_an_etag_server_is_only_asked_conditionally_for_an_unchanged_stack(
    kind: str, tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config = _config_for(kind, tmp_path, docroot, server)
    assert sync(config).exit_code == 0
    server.reset_log()
    report = sync(config)
    assert [o.status for o in report.stacks] == ["unchanged"]
    # (a v2 mirror source looks for a v3 index manifest first: a 404, nothing to validate)
    gets = [r for r in server.requests if r.method == "GET" and r.status != 404]
    assert gets
    for request in gets:
        headers = {k.lower() for k in request.headers}
        assert "if-none-match" in headers, request.path
        assert "if-modified-since" not in headers, request.path  # the ETag alone
        assert request.status == 304, request.path


def _config_for(kind: str, tmp_path: Path, docroot: Path, server: FixtureServer) -> Config:
    if kind == "catalog":
        build_catalog_from_specs(docroot, {"develop": {"root": nodes("c", 2)}}, manifests=False)
        within_the_second(docroot, int(time.time()) - 3600)
        return parse_config(
            f"database: {tmp_path / 'state.db'}\nsources:\n  - name: test\n    kind: catalog\n"
            f"    url: {server.url}/cache_spack_io_index.json\n"
            f"    bucket_urls: {{spack-binaries: {server.url}/}}\n    manifests: none\n{HTTP}",
            str(tmp_path / "mirrorsync.yaml"),
        )
    write_kind(kind, docroot, 2)
    within_the_second(docroot, int(time.time()) - 3600)  # an unchanged stack: old files
    return kind_config(kind, tmp_path, server.url)


@pytest.mark.parametrize("kind", [*KINDS, "catalog"])
def test_revalidate_after_fetches_once_in_full_and_writes_nothing(
    kind: str, tmp_path: Path, docroot: Path, server: FixtureServer, clock: Clock
) -> None:
    config = _config_for(kind, tmp_path, docroot, server)
    assert config.http.revalidate_after_seconds == 86400  # the default: 1d
    assert sync(config).exit_code == 0
    before = table_rows(tmp_path / "state.db")

    def conditional() -> list[bool]:
        return [
            "if-none-match" in {k.lower() for k in r.headers}
            for r in server.requests
            if r.method == "GET" and r.status != 404
        ]

    clock.at += timedelta(hours=23)
    server.reset_log()
    assert sync(config).stacks[0].status == "unchanged"
    assert all(conditional())

    clock.at += timedelta(hours=2)  # 25 h after the last full fetch
    server.reset_log()
    report = sync(config)
    assert (report.stacks[0].status, report.stacks[0].events) == ("unchanged", 0)
    assert conditional() and not any(conditional())  # once without conditions...
    assert table_rows(tmp_path / "state.db") == before  # ...and the same body writes nothing

    server.reset_log()
    assert sync(config).stacks[0].status == "unchanged"
    assert all(conditional())  # then conditional again, from the new full fetch


def test_revalidate_after_is_a_duration(tmp_path: Path, server: FixtureServer) -> None:
    config = kind_config("v3", tmp_path, server.url, "revalidate_after: 12h")
    assert config.http.revalidate_after_seconds == 12 * 3600
    for bad, why in (
        ("0", "expected a number above 0 and at most 31536000 (seconds; 365d), got 0"),
        ("400d", "expected a number above 0 and at most 31536000 (seconds; 365d), got 34560000"),
        ("soon", "expected seconds or a duration such as 30s, 5m, 12h or 3d, got 'soon'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(f"http.revalidate_after: {why}")):
            kind_config("v3", tmp_path, server.url, f"revalidate_after: {bad}")


@pytest.mark.usefixtures("backend")
def test_revalidate_after_on_both_backends(
    tmp_path: Path, docroot: Path, server: FixtureServer, clock: Clock
) -> None:
    write_kind("v3", docroot, 2)
    within_the_second(docroot, int(time.time()) - 3600)
    config = parse_config(
        f"database: {database_value(tmp_path)}\n"
        f"sources: [{{name: site, kind: mirror, url: '{server.url}/site', manifests: none}}]\n"
        + HTTP.replace("}\n", ", revalidate_after: 1h}\n"),
        str(tmp_path / "mirrorsync.yaml"),
    )
    assert sync(config).exit_code == 0
    for hours, conditional in ((0.5, True), (1.5, False), (0.5, True)):
        clock.at += timedelta(hours=hours)
        server.reset_log()
        report = sync(config)
        assert (report.stacks[0].status, report.stacks[0].events) == ("unchanged", 0)
        (manifest,) = [r for r in server.requests if r.path.endswith("index.manifest.json")]
        sent = "if-none-match" in {k.lower() for k in manifest.headers}
        assert (sent, manifest.status) == (conditional, 304 if conditional else 200), hours
