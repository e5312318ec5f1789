"""TLS is verified unless a source says ``insecure: true``; secrets stay on the wire; files are owner-only."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import REPO, json_lines, run_cli, sync
from mirrorsync.config import parse_config
from mirrorsync.fixture.build import CATALOG_NAME, build_catalog_from_specs, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store import Store, writes

DATA = Path(__file__).parent / "data"
TLS = (DATA / "tls-cert.pem", DATA / "tls-key.pem")


def nodes(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


def mirror_config(tmp_path: Path, url: str, *, insecure: str = "") -> str:
    return (
        f"database: {tmp_path / 'tls.db'}\n"
        "sources:\n"
        f"  - {{name: site, kind: mirror, url: '{url}/m'{insecure}}}\n"
        "http: {timeout: 5, retries: {attempts: 3, backoff_initial: 0.01, backoff_max: 0.02}}\n"
    )


@pytest.fixture
def tls_server(docroot: Path) -> FixtureServer:
    write_v3_mirror(docroot / "m", nodes("t", 3))
    return FixtureServer(docroot, tls=TLS)


def test_tls_is_verified_by_default_and_a_failure_is_not_retried(
    tmp_path: Path, tls_server: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with tls_server:
        assert tls_server.url.startswith("https://")
        report = sync(parse_config(mirror_config(tmp_path, tls_server.url)))
    assert report.exit_code == 1
    (line,) = report.failures
    manifest = f"{tls_server.url}/m/v3/manifests/index/index.manifest.json"
    assert line.startswith(
        f"site:default/root: {manifest}: TLS certificate verification failed "
        "(self-signed certificate)"
    ), line
    assert "insecure: true" in line
    assert report.tally.retries == 0 and report.stacks[0].status == "failed"


def test_a_trusted_certificate_verifies(
    tmp_path: Path, tls_server: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same server passes once its certificate is trusted: verification is real.
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS[0]))
    with tls_server:
        report = sync(parse_config(mirror_config(tmp_path, tls_server.url)))
    assert report.exit_code == 0, report.failures
    assert report.stacks[0].added == 3


def test_insecure_source_skips_verification_and_says_so_on_every_run(
    tmp_path: Path, tls_server: FixtureServer
) -> None:
    path = tmp_path / "c.yaml"
    # Two sources on the same untrusted server: only the one marked insecure syncs.
    path.write_text(
        f"database: {tmp_path / 'tls.db'}\n"
        "sources:\n"
        f"  - {{name: lax, kind: mirror, url: '{tls_server.url}/m', insecure: true}}\n"
        f"  - {{name: strict, kind: mirror, url: '{tls_server.url}/m'}}\n"
        "http: {timeout: 5, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}\n"
    )
    env = {"SSL_CERT_FILE": "", "SSL_CERT_DIR": ""}
    with tls_server:
        runs = [run_cli("-c", str(path), "once", cwd=tmp_path, env=env) for _ in range(2)]
    for done in runs:
        assert done.returncode == 1
        warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
        assert any("source lax: TLS certificate verification is OFF" in w for w in warnings)
        assert not any("source strict" in w for w in warnings)
        failed = [ln for ln in done.stderr.splitlines() if ln.startswith("mirrorsync: failed:")]
        assert len(failed) == 1 and "strict:default/root" in failed[0]
        assert "certificate verification failed" in failed[0]
    assert "lax:default/root changed" in runs[0].stderr


def test_redirect_from_https_to_plain_http_is_refused(
    tmp_path: Path, docroot: Path, tls_server: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS[0]))
    manifest = "/m/v3/manifests/index/index.manifest.json"
    with tls_server, FixtureServer(docroot) as plain:
        tls_server.add_fault(manifest, "redirect", location=f"{plain.url}{manifest}", times=None)
        report = sync(parse_config(mirror_config(tmp_path, tls_server.url)))
        assert plain.count(manifest) == 1  # followed, then refused: nothing from it is used
    (line,) = report.failures
    assert line == (
        f"site:default/root: {tls_server.url}{manifest}: redirected to {plain.url}{manifest} "
        "without TLS; refused (set 'insecure: true' on the source to allow it)"
    )
    assert report.stacks[0].version == 0


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
def test_redirect_from_plain_http_to_https_verifies_the_certificate(
    tmp_path: Path,
    docroot: Path,
    tls_server: FixtureServer,
    monkeypatch: pytest.MonkeyPatch,
    trusted: bool,
) -> None:
    """The https connection pools are made on the first https request, even one
    reached by a redirect: it is verified like any other."""
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(TLS[0]))
    else:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    manifest = "/m/v3/manifests/index/index.manifest.json"
    with tls_server, FixtureServer(docroot) as plain:
        plain.add_fault(manifest, "redirect", location=f"{tls_server.url}{manifest}", times=None)
        report = sync(parse_config(mirror_config(tmp_path, plain.url)))
    if trusted:
        assert report.exit_code == 0, report.failures
        assert report.stacks[0].added == 3
    else:
        (line,) = report.failures
        assert "TLS certificate verification failed (self-signed certificate)" in line, line
        assert report.stacks[0].version == 0


def test_redirects_within_tls_are_followed(
    tmp_path: Path, docroot: Path, tls_server: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS[0]))
    write_v3_mirror(docroot / "moved", nodes("t", 3))
    manifest = "v3/manifests/index/index.manifest.json"
    with tls_server:
        tls_server.add_fault(
            f"/m/{manifest}", "redirect", status=301, location=f"/moved/{manifest}", times=None
        )
        report = sync(parse_config(mirror_config(tmp_path, tls_server.url)))
        assert tls_server.count(f"/moved/{manifest}") == 1
    assert report.exit_code == 0, report.failures


SECRET = "s3cr3t-Tok3n"


def test_credentials_in_urls_never_reach_output_logs_or_the_database(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(
        docroot, {"develop": {"root": nodes("r", 3), "e4s": nodes("e", 2), "ml": nodes("m", 2)}}
    )
    host = server.url.removeprefix("http://")
    authed = f"http://mirror-user:{SECRET}@{host}"
    path = tmp_path / "c.yaml"
    path.write_text(
        f"database: {tmp_path / 'secret.db'}\n"
        "sources:\n"
        "  - name: test\n"
        "    kind: catalog\n"
        f"    url: '{authed}/{CATALOG_NAME}?X-Amz-Signature={SECRET}'\n"
        f"    bucket_urls: {{spack-binaries: '{authed}/'}}\n"
        "http: {timeout: 5, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}\n"
    )
    # Failures and retries, so URLs land in errors, logs and the status.
    server.add_fault("/develop/e4s/*", "status", status=503, times=None)
    server.add_fault("/develop/ml/blobs/*", "reset", after_bytes=5, times=None)
    outputs = [run_cli("-vv", "-c", str(path), "once", cwd=tmp_path)]
    outputs.append(run_cli("-c", str(path), "once", "--json", cwd=tmp_path))
    outputs.append(run_cli("-vv", "--log-format", "json", "-c", str(path), "once", cwd=tmp_path))
    for command in (["status"], ["status", "--json"], ["events", "--json"]):
        outputs.append(run_cli("-c", str(path), *command, cwd=tmp_path))
    outputs.append(run_cli("-c", str(path), "once", "--dry-run", "--json", cwd=tmp_path))

    # The credentials were used on the wire...
    expected = "Basic " + base64.b64encode(f"mirror-user:{SECRET}".encode()).decode()
    assert {r.headers.get("Authorization") for r in server.requests} == {expected}
    # ...and appear nowhere else, while the URLs are still named.
    first = outputs[0]
    assert first.returncode == 1 and "retrying http://***@" in first.stderr
    assert "failed: test:develop/e4s: http://***@" in first.stderr
    for done in outputs:
        assert SECRET not in done.stdout and SECRET not in done.stderr
        assert "mirror-user" not in done.stdout + done.stderr
    # Every field of a JSON line is masked, not only its message.
    retry = next(e for e in json_lines(outputs[2].stderr) if e.get("event") == "retry")
    assert retry["url"].startswith("http://***@") and retry["url"].endswith("/index.manifest.json")
    with sqlite3.connect(tmp_path / "secret.db") as conn:
        (stored,) = conn.execute("SELECT url FROM sources").fetchone()
        roots = {r[0] for r in conn.execute("SELECT mirror_root FROM stacks")}
    assert stored == f"http://***@{host}/{CATALOG_NAME}?X-Amz-Signature=***"
    assert roots == {f"http://***@{host}/develop", None}  # e4s and ml never synced
    for file in tmp_path.glob("secret.db*"):
        data = file.read_bytes()
        assert SECRET.encode() not in data and b"mirror-user" not in data, file


def test_database_wal_and_shm_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "new-dir" / "state.db"

    async def open_and_write() -> dict[str, int]:
        async with await Store.open(db) as store:
            await writes.ensure_source(store, "s", "mirror", "https://h/m")
            return {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.iterdir()}

    old = os.umask(0)
    try:
        modes = anyio.run(open_and_write)
    finally:
        os.umask(old)
    assert modes == {"state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600}
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_cli_run_creates_an_owner_only_database_under_umask_zero(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "m", nodes("u", 2))
    path = tmp_path / "c.yaml"
    path.write_text(
        f"database: {tmp_path / 'state' / 'u.db'}\n"
        f"sources: [{{name: site, kind: mirror, url: '{server.url}/m'}}]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mirrorsync", "-c", str(path), "once"],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        umask=0,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    files = list((tmp_path / "state").iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), files


@pytest.mark.parametrize("kind", ["mirror", "catalog"])
def test_verify_uses_the_configured_address_with_its_credentials_and_insecure(
    tmp_path: Path, docroot: Path, kind: str
) -> None:
    """The store keeps mirror roots masked: verify must send the configured
    credentials (the server refuses requests without them), not ``***``, and
    skip certificate checks only for a source marked insecure. A catalogue's
    stacks get theirs from its bucket_urls."""
    if kind == "mirror":
        write_v3_mirror(docroot / "m", nodes("a", 4))
    else:
        build_catalog_from_specs(docroot, {"develop": {"root": nodes("a", 4)}})
    with FixtureServer(docroot, tls=TLS, auth=("mirror-user", SECRET)) as server:
        authed = f"https://mirror-user:{SECRET}@{server.url.removeprefix('https://')}"
        source = (
            f"{{name: site, kind: mirror, url: '{authed}/m', insecure: true}}"
            if kind == "mirror"
            else f"{{name: site, kind: catalog, url: '{authed}/{CATALOG_NAME}',"
            f" bucket_urls: {{spack-binaries: '{authed}/'}}, insecure: true}}"
        )
        path = tmp_path / "c.yaml"
        path.write_text(
            f"database: {tmp_path / 'auth.db'}\n"
            f"sources:\n  - {source}\n"
            "http: {timeout: 5, retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}\n"
        )
        env = {"SSL_CERT_FILE": "", "SSL_CERT_DIR": ""}  # the certificate does not verify
        synced = run_cli("-c", str(path), "once", cwd=tmp_path, env=env)
        assert synced.returncode == 0, synced.stderr
        server.reset_log()
        checked = run_cli("-c", str(path), "verify", cwd=tmp_path, env=env)
        statuses = {r.status for r in server.requests}
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == ""
    assert "verify: 4 specs in 1 stack, 0 problems" in checked.stderr
    assert statuses == {200}  # 4 manifests and 8 blobs, none refused with 401
    assert len(server.requests) == 4 + 2 * 4
    for done in (synced, checked):
        assert SECRET not in done.stdout + done.stderr


def test_the_fixture_server_refuses_requests_without_its_credentials(docroot: Path) -> None:
    write_v3_mirror(docroot / "m", nodes("b", 1))
    with FixtureServer(docroot, auth=("u", "p")) as server:

        async def main() -> tuple[int, int]:
            async with httpx.AsyncClient() as client:
                url = f"{server.url}/m/v3/layout.json"
                bare = await client.get(url)
                authed = await client.get(url, auth=("u", "p"))
                return bare.status_code, authed.status_code

        assert anyio.run(main) == (401, 200)


HOOK_SECRET = "h00k-T0ken-9"


def test_webhook_url_credentials_and_tokens_are_never_stored_or_printed(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """Userinfo and query values whose names look like secrets (token, key,
    pass, secret, sig, auth, cred, session) are masked in the database, the
    listing and its JSON; the delivery itself uses the real URL."""
    from receiver import Receiver, new_secret

    write_v3_mirror(docroot / "m", nodes("w", 2))
    secret = new_secret()
    with Receiver(secret) as receiver:
        base = receiver.url.removeprefix("http://")
        hook_url = f"http://hook-user:{HOOK_SECRET}@{base}?token={HOOK_SECRET}&team=infra"
        path = tmp_path / "c.yaml"
        path.write_text(
            f"database: {tmp_path / 'hook.db'}\n"
            f"sources: [{{name: site, kind: mirror, url: '{server.url}/m'}}]\n"
            f"webhooks:\n  - {{name: chat, url: '{hook_url}', secret_env: HOOK_KEY}}\n"
        )
        env = {"HOOK_KEY": secret}
        outputs = [run_cli("-vv", "-c", str(path), "once", cwd=tmp_path, env=env)]
        assert outputs[0].returncode == 0, outputs[0].stderr
        delivered = receiver.acknowledged_ids()
        for command in (["webhooks", "list"], ["webhooks", "list", "--json"], ["status"]):
            outputs.append(run_cli("-c", str(path), *command, cwd=tmp_path, env=env))
    assert len(delivered) == 3  # stack.added and two spec.added, over the real URL
    display = f"http://***@{base}?token=***&team=infra"
    listed = json.loads(outputs[2].stdout)
    assert [hook["url"] for hook in listed] == [display]
    assert "http://***@" in outputs[1].stdout, outputs[1].stdout
    for done in outputs:
        assert HOOK_SECRET not in done.stdout + done.stderr
        assert "hook-user" not in done.stdout + done.stderr
    with sqlite3.connect(tmp_path / "hook.db") as conn:
        (stored,) = conn.execute("SELECT url FROM webhooks").fetchone()
    assert stored == display
    for file in tmp_path.glob("hook.db*"):
        assert HOOK_SECRET.encode() not in file.read_bytes(), file
