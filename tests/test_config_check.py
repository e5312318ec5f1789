"""``mirrorsync config check`` as a real process against the fixture server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from conftest import run_cli
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from postgres import PASSWORD, PostgresServer


def neither(root: str) -> str:
    return (
        f"{root}: neither a v3 nor a v2 build cache found here: "
        f"{root}/v3/manifests/index/index.manifest.json and {root}/build_cache/index.json not found"
    )


def test_config_check_reaches_every_source_and_reads_every_secret(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    nodes = [spec_node("zlib", "1.3", fake_hash("z"))]
    build_catalog_from_specs(docroot, {"develop": {"root": nodes}})
    config = tmp_path / "mirrorsync.yaml"
    base = f"""database: {tmp_path / "state" / "m.db"}
sources:
  - {{name: public, kind: catalog, url: "{server.url}/cache_spack_io_index.json"}}
  - {{name: site, kind: mirror, url: "{server.url}/develop"}}
webhooks:
  - {{name: chat, url: "http://127.0.0.1:9/hook", secret_env: CHECK_SECRET}}
"""
    config.write_text(base)
    secret = {"CHECK_SECRET": "whsec_" + "A" * 44}
    good = run_cli("-c", str(config), "config", "check", cwd=tmp_path, env=secret)
    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    assert (
        lines[0]
        == f"ok      database: {tmp_path / 'state' / 'm.db'} (created by the first 'mirrorsync once')"
    )
    assert f"ok      source site: v3 build cache at {server.url}/develop" in lines
    assert "ok      webhook chat secret: read and decoded (not shown)" in lines
    assert not (tmp_path / "state").exists()  # a check writes nothing

    # A typo in a mirror URL: neither layout is there, and both paths tried are named.
    config.write_text(base.replace('/develop"', '/devel"'))
    typo = run_cli("-c", str(config), "config", "check", "--json", cwd=tmp_path, env=secret)
    assert typo.returncode == 1
    report = json.loads(typo.stdout)
    (failed,) = [c for c in report["checks"] if not c["ok"]]
    assert failed["what"] == "source site"
    assert failed["detail"] == neither(f"{server.url}/devel")

    # ... which a sync says in the same words: one line, exit 1.
    (tmp_path / "state").mkdir()
    synced = run_cli("-c", str(config), "once", "--source", "site", cwd=tmp_path, env=secret)
    assert synced.returncode == 1
    failures = [line for line in synced.stderr.splitlines() if line.startswith("mirrorsync:")]
    assert failures == [f"mirrorsync: failed: site:default/root: {neither(server.url + '/devel')}"]
    assert "index.json.hash" not in synced.stderr  # not the v2 detail of a v3 typo

    # A secret that is not there is a local setting: exit 2, naming the key.
    config.write_text(base)
    missing = run_cli("-c", str(config), "config", "check", cwd=tmp_path)
    assert missing.returncode == 2
    assert "FAILED  webhook chat secret: " in missing.stdout
    assert "webhooks[0].secret_env: environment variable CHECK_SECRET is not set" in missing.stdout


def test_config_check_of_a_bad_file_is_the_usual_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("sources: [{name: a, kind: catalog, manifests: some}]\n")
    done = run_cli("-c", str(config), "config", "check", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().endswith("(expected one of: new, all, none)")


def test_a_v2_mirror_without_its_hash_file_passes_the_check(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """index.json.hash is optional (Spack then asks for index.json with its ETag): the
    check looks for what a sync needs, ``build_cache/index.json``."""
    nodes = [spec_node("zlib", "1.3", fake_hash("z"))]
    build_catalog_from_specs(docroot, {"develop": {"root": nodes}}, layout="v2", manifests=False)
    (docroot / "develop/build_cache/index.json.hash").unlink()
    config = tmp_path / "mirrorsync.yaml"
    config.write_text(
        f"database: {tmp_path / 'm.db'}\n"
        f"sources:\n  - {{name: site, kind: mirror, url: '{server.url}/develop/'}}\n"
    )
    done = run_cli("-c", str(config), "config", "check", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    assert f"ok      source site: v2 build cache at {server.url}/develop" in done.stdout


# -- issue 30, false statement 1: the check does what the commands will do ------


def _check(config: Path, text: str) -> tuple[int, dict[str, dict[str, object]]]:
    config.write_text(text)
    done = run_cli("-c", str(config), "config", "check", "--json", cwd=config.parent)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, {c["what"]: c for c in json.loads(done.stdout)["checks"]}


def test_a_catalogue_url_serving_html_fails_the_check(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": [spec_node("z", "1", fake_hash("c"))]}})
    (docroot / "index.html").write_text("<!doctype html><html><body>Welcome</body></html>\n")
    source = "sources:\n  - {name: public, kind: catalog, url: '%s'}\n"
    base = f"database: {tmp_path / 'm.db'}\n"
    code, checks = _check(tmp_path / "c.yaml", base + source % f"{server.url}/index.html")
    assert code == 1 and checks["source public"]["ok"] is False
    assert "catalogue" in str(checks["source public"]["detail"])
    good = f"{server.url}/cache_spack_io_index.json"
    code, checks = _check(tmp_path / "c.yaml", base + source % good)
    assert code == 0, checks
    assert checks["source public"]["detail"] == f"{good}: a catalogue of 1 stack"


def test_a_database_or_copy_path_that_cannot_be_created_fails_the_check(
    tmp_path: Path, server: FixtureServer
) -> None:
    source = f"sources:\n  - {{name: site, kind: mirror, url: '{server.url}/none'}}\n"
    code, checks = _check(tmp_path / "c.yaml", f"database: /proc/ms.db\n{source}")
    assert code == 2 and checks["database"]["ok"] is False
    assert "/proc/ms.db cannot be created: /proc: cannot create a file there" in str(
        checks["database"]["detail"]
    )
    (tmp_path / "a-file").write_text("")
    copies = (
        "mirrors:\n"
        f"  - {{name: under-file, path: {tmp_path / 'a-file' / 'copy'}, source: site}}\n"
        f"  - {{name: fine, path: {tmp_path / 'copy'}, source: site}}\n"
    )
    source = source.replace("url:", "manifests: new, url:")
    code, checks = _check(tmp_path / "c.yaml", f"database: {tmp_path / 'm.db'}\n{source}{copies}")
    assert code == 2
    assert checks["mirror under-file"] == {
        "what": "mirror under-file",
        "ok": False,
        "detail": f"{tmp_path / 'a-file'} is not a directory",
    }
    assert checks["mirror fine"]["ok"] is True
    assert not (tmp_path / "copy").exists()  # create-tested, nothing left made


def test_config_check_connects_to_postgresql(
    tmp_path: Path, server: FixtureServer, postgres_server: PostgresServer, postgres_url: str
) -> None:
    source = f"sources:\n  - {{name: site, kind: mirror, url: '{server.url}/none'}}\n"
    code, checks = _check(tmp_path / "c.yaml", f"database: {postgres_url}\n{source}")
    assert checks["database"]["ok"] is True, checks
    assert "reached" in str(checks["database"]["detail"])
    wrong = postgres_url.replace(f":{PASSWORD}@", ":not-the-password@")
    code, checks = _check(tmp_path / "c.yaml", f"database: {wrong}\n{source}")
    assert code == 2 and checks["database"]["ok"] is False, checks
    assert "not-the-password" not in json.dumps(checks)  # masked, as everywhere
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    code, checks = _check(tmp_path / "c.yaml", f"database: {missing}\n{source}")
    assert code == 2 and checks["database"]["ok"] is False, checks
    down = postgres_url.replace(f":{postgres_server.port}/", f":{_free_port()}/")
    code, checks = _check(tmp_path / "c.yaml", f"database: {down}\n{source}")
    assert code == 1 and checks["database"]["ok"] is False, checks  # a server, not a setting


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
