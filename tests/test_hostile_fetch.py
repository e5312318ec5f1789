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

import json
import shutil
import time
from email.utils import formatdate
from pathlib import Path

from conftest import catalog_config_text, run_cli, write_config
from mirrorsync.fetch.retry import RETRY_AFTER_CAP, parse_retry_after
from mirrorsync.fixture.build import build_catalog_from_specs, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
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
