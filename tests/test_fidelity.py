"""Build caches as Spack really writes them (issue 12): what the fixture used to leave out.

Each test serves, from the project's fixture server, what Spack or the public
catalogue generator writes (FORMATS.md): stacks re-indexed under a day-old
catalogue, repeated labels, several database records in one index manifest,
gzip indexes, git versions in file names, v2 mirrors without a hash file,
index views.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
import sqlite3
from pathlib import Path

import anyio
import pytest

from conftest import REPO, TEST_HTTP, catalog_config, run_cli, sync, write_config
from dbstate import sqlite_file
from mirrorsync.config import Config, MirrorSource, parse_config
from mirrorsync.errors import ConfigError, FormatError, UnsupportedFormatError
from mirrorsync.fixture.build import (
    CATALOG_NAME,
    build_catalog_from_specs,
    write_catalog,
    write_v2_mirror,
    write_v3_mirror,
)
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import fingerprints
from mirrorsync.fixture.specs import Node, fake_hash, spec_node
from mirrorsync.formats.index import parse_index
from mirrorsync.formats.manifest import parse_index_manifest
from mirrorsync.store.location import Location
from mirrorsync.verify import Problem, verify

REALDATA = REPO / "tests/data/realdata"  # copied unchanged from ../shared/realdata
REAL_SIGNED_V2 = REALDATA / "spack-test-mirrors/v2_layout/signed"


def nodes(prefix: str, n: int, name: str = "zlib", **kwargs: object) -> list[Node]:
    return [
        spec_node(f"{name}-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}"), **kwargs)  # type: ignore[arg-type]
        for i in range(n)
    ]


def mirror_config(tmp_path: Path, url: str, extra: str = "") -> Config:
    text = (
        f"database: {tmp_path / 'state.db'}\n"
        f"sources:\n  - name: site\n    kind: mirror\n    url: '{url}'\n    release: local\n"
        f"{extra}{TEST_HTTP}"
    )
    return parse_config(text, str(tmp_path / "mirrorsync.yaml"))


def members(db: Location, stack: str = "root") -> set[str]:
    with sqlite3.connect(sqlite_file(db)) as conn:
        return {
            row[0]
            for row in conn.execute(
                "SELECT s.hash FROM memberships m JOIN specs s ON s.id = m.spec_id"
                " JOIN stacks st ON st.id = m.stack_id WHERE st.name = ? AND m.left IS NULL",
                (stack,),
            )
        }


def manifest_statuses(db: Location) -> dict[str, str]:
    with sqlite3.connect(sqlite_file(db)) as conn:
        return dict(
            conn.execute(
                "SELECT s.hash, sm.status FROM spec_manifests sm JOIN specs s ON s.id = sm.spec_id"
            ).fetchall()
        )


# -- point 2: the catalogue lags, the index manifest is the truth ----------------


def test_a_stack_reindexed_under_an_unchanged_catalogue_is_noticed_on_the_next_run(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    root, e4s = nodes("r", 3), nodes("e", 4)
    build_catalog_from_specs(docroot, {"develop": {"root": root, "e4s": e4s}})
    catalogue = (docroot / CATALOG_NAME).read_bytes()
    config = catalog_config(tmp_path, server, extra="    manifests: none")
    assert sync(config).exit_code == 0

    # e4s is re-indexed during the day; the catalogue is regenerated only at 23:00.
    write_v3_mirror(docroot / "develop/e4s", e4s[1:] + nodes("n", 2), manifests=False)
    (docroot / CATALOG_NAME).write_bytes(catalogue)
    server.reset_log()
    report = sync(config)
    assert report.exit_code == 0, report.failures
    by_stack = {o.stack: o for o in report.stacks}
    assert (by_stack["e4s"].status, by_stack["e4s"].added, by_stack["e4s"].removed) == (
        "changed",
        2,
        1,
    )
    assert by_stack["root"].status == "unchanged"
    assert members(config.database_path, "e4s") == {n["hash"] for n in e4s[1:] + nodes("n", 2)}
    assert server.count("/develop/e4s/blobs/*") == 1

    # Nothing changed: every index manifest answered 304, not one index blob downloaded.
    server.reset_log()
    report = sync(config)
    assert {o.status for o in report.stacks} == {"unchanged"}
    assert server.count("*/blobs/*") == 0
    manifests = [r for r in server.requests if r.path.endswith("index.manifest.json")]
    assert sorted(r.path for r in manifests) == [
        "/develop/e4s/v3/manifests/index/index.manifest.json",
        "/develop/v3/manifests/index/index.manifest.json",
    ]
    assert {(r.status, r.bytes_sent) for r in manifests} == {(304, 0)}


# -- point 8: a repeated label ------------------------------------------------------


def test_a_repeated_stack_label_keeps_the_first_and_syncs_everything_else(
    tmp_path: Path, docroot: Path, server: FixtureServer, caplog: pytest.LogCaptureFixture
) -> None:
    root, e4s, nested = nodes("r", 3), nodes("e", 2), nodes("x", 5)
    build_catalog_from_specs(docroot, {"develop": {"root": root, "e4s": e4s}})
    write_v3_mirror(docroot / "develop/e4s/nested", nested, manifests=False)
    # As the generator writes it for a mirror nested under a stack's path.
    write_catalog(
        docroot,
        {"develop": {"root": "develop", "e4s": "develop/e4s"}},
        repeated={"develop": [("e4s", "develop/e4s/nested")]},
    )
    listed = json.loads((docroot / CATALOG_NAME).read_bytes())["develop"]
    assert [e["label"] for e in listed] == ["root", "e4s", "e4s"]

    config = catalog_config(tmp_path, server, extra="    manifests: none")
    with caplog.at_level(logging.WARNING, logger="mirrorsync"):
        report = sync(config)
    assert report.exit_code == 0, report.failures
    assert sorted((o.stack, o.spec_count) for o in report.stacks) == [("e4s", 2), ("root", 3)]
    assert members(config.database_path, "e4s") == {n["hash"] for n in e4s}
    assert server.count("/develop/e4s/nested/*") == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "lists stack 'e4s' of release 'develop' again" in warning
    assert "the first entry is used" in warning


# -- point 9: database versions, several records, compression -------------------


def _index_manifest(*records: tuple[str, bytes, str]) -> bytes:
    data = [
        {
            "contentLength": len(blob),
            "mediaType": media,
            "compression": compression,
            "checksumAlgorithm": "sha256",
            "checksum": hashlib.sha256(blob).hexdigest(),
        }
        for media, blob, compression in records
    ]
    return json.dumps({"version": 3, "data": data}, indent=0, separators=(",", ":")).encode()


def test_the_newest_database_record_mirrorsync_reads_is_chosen() -> None:
    v9, v8, v10 = b"nine", b"eight", b"ten"
    newest_first = _index_manifest(
        ("application/vnd.spack.db.v9+json", v9, "none"),
        ("application/vnd.spack.db.v8+json", v8, "none"),
    )
    assert parse_index_manifest(newest_first).checksum == hashlib.sha256(v9).hexdigest()
    unknown_first = _index_manifest(
        ("application/vnd.spack.db.v10+json", v10, "none"),
        ("application/vnd.spack.db.v8+json", v8, "none"),
    )
    assert parse_index_manifest(unknown_first).checksum == hashlib.sha256(v8).hexdigest()
    with pytest.raises(UnsupportedFormatError, match=r"at https://m/x: no database version"):
        parse_index_manifest(
            _index_manifest(("application/vnd.spack.db.v10+json", v10, "none")), "https://m/x"
        )
    with pytest.raises(UnsupportedFormatError, match="index compression 'zstd'"):
        parse_index_manifest(_index_manifest(("application/vnd.spack.db.v8+json", v8, "zstd")))


@pytest.mark.parametrize("version", ["5", "10"])
def test_an_unknown_database_version_is_refused_naming_url_and_version(version: str) -> None:
    data = json.dumps({"database": {"version": version, "installs": {}}}).encode()
    with pytest.raises(UnsupportedFormatError) as caught:
        parse_index(data, "https://m/build_cache/index.json")
    assert str(caught.value) == (
        "unsupported build cache index at https://m/build_cache/index.json: "
        f"database version {version} (mirrorsync reads versions 6 to 9)"
    )
    with pytest.raises(FormatError, match="has no version"):
        parse_index(b'{"database": {"installs": {}}}')


def test_the_real_database_v6_and_v8_indexes_are_read() -> None:
    mirrors = REALDATA / "spack-test-mirrors"
    v6 = parse_index((mirrors / "legacy_yaml/build_cache/index.json").read_bytes())
    assert v6.db_version == 6 and len(v6) > 0
    v8 = parse_index((mirrors / "v2_layout/signed/build_cache/index.json").read_bytes())
    assert (v8.db_version, len(v8)) == (8, 6)


def test_an_index_manifest_with_v9_and_v8_records_and_gzip_blobs_syncs_the_v9_index(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = nodes("g", 4)
    info = write_v3_mirror(
        docroot / "site",
        specs,
        db_version=9,
        older_db_versions=(8,),
        index_compression="gzip",
        manifests=False,
    )
    manifest = json.loads((docroot / "site/v3/manifests/index/index.manifest.json").read_bytes())
    assert [(r["mediaType"], r["compression"]) for r in manifest["data"]] == [
        ("application/vnd.spack.db.v9+json", "gzip"),
        ("application/vnd.spack.db.v8+json", "gzip"),
    ]
    config = mirror_config(tmp_path, f"{server.url}/site", "    manifests: none\n")
    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert members(config.database_path) == {n["hash"] for n in specs}
    blobs = [r.path for r in server.requests if "/blobs/" in r.path]
    assert blobs == [f"/site/{info.index_blob_relpath}"]  # the v9 one only
    assert json.loads(gzip.decompress(info.index_path.read_bytes()))["database"]["version"] == "9"


def test_a_manifest_of_only_unknown_database_versions_fails_the_stack(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "site", nodes("u", 2), manifests=False)
    path = docroot / "site/v3/manifests/index/index.manifest.json"
    path.write_bytes(path.read_bytes().replace(b"db.v8+json", b"db.v10+json"))
    report = sync(mirror_config(tmp_path, f"{server.url}/site"))
    assert report.exit_code == 1
    (line,) = report.failures
    assert f"unsupported index manifest at {server.url}/site/v3/manifests/index/" in line
    assert "application/vnd.spack.db.v10+json" in line


# -- point 7: file names made safe -------------------------------------------------


@pytest.mark.parametrize("layout", ["v3", "v2"])
def test_a_spec_at_a_git_version_is_found_at_its_safe_file_name(
    tmp_path: Path, docroot: Path, server: FixtureServer, layout: str
) -> None:
    git = spec_node("hdf5", "git.abc123=1.0", fake_hash("git"), db_version=7)
    plain = spec_node("zlib", "1.3", fake_hash("plain"), db_version=7)
    write = write_v3_mirror if layout == "v3" else write_v2_mirror
    info = write(docroot / "site", [git, plain], signed=False)
    name = info.spec_files[git["hash"]]
    assert "git.abc123_1.0" in name and "=" not in name
    config = mirror_config(tmp_path, f"{server.url}/site", "    manifests: all\n")
    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert manifest_statuses(config.database_path) == {git["hash"]: "ok", plain["hash"]: "ok"}


# -- point 10: v2 without index.json.hash --------------------------------------------


def test_a_v2_index_without_hash_file_is_asked_for_with_its_validators(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = nodes("v", 3, db_version=7)
    write_v2_mirror(docroot / "site", specs, manifests=False)
    (docroot / "site/build_cache/index.json.hash").unlink()
    config = mirror_config(tmp_path, f"{server.url}/site")
    assert sync(config).exit_code == 0

    server.reset_log()
    report = sync(config)
    assert report.stacks[0].status == "unchanged"
    (index,) = [r for r in server.requests if r.path == "/site/build_cache/index.json"]
    assert index.status == 304 and index.bytes_sent == 0
    assert "if-none-match" in {k.lower() for k in index.headers}

    write_v2_mirror(docroot / "site", specs + nodes("w", 2, db_version=7), manifests=False)
    (docroot / "site/build_cache/index.json.hash").unlink()
    server.reset_log()
    report = sync(config)
    assert (report.stacks[0].status, report.stacks[0].added) == ("changed", 2)
    (index,) = [r for r in server.requests if r.path == "/site/build_cache/index.json"]
    assert index.status == 200

    # A refused index leaves its validators out of the HTTP cache: asked for again in full.
    good = (docroot / "site/build_cache/index.json").read_bytes()
    (docroot / "site/build_cache/index.json").write_bytes(good[:-20])
    assert sync(config).exit_code == 1
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        (kept,) = conn.execute(
            "SELECT body FROM http_cache WHERE url LIKE '%/build_cache/index.json'"
        ).fetchone()
    assert kept.decode() == hashlib.sha256(good).hexdigest()
    (docroot / "site/build_cache/index.json").write_bytes(good)
    server.reset_log()
    assert sync(config).stacks[0].status == "unchanged"
    (index,) = [r for r in server.requests if r.path == "/site/build_cache/index.json"]
    assert index.status == 304  # the good index's validators were kept, not the refused one's


# -- point 12: index views -----------------------------------------------------------


def test_a_mirror_source_reads_the_view_it_names_else_the_top_level_index(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = nodes("w", 5)
    write_v3_mirror(docroot / "site", specs, views={"cuda": specs[:2]}, manifests=False)
    url = f"{server.url}/site"
    top = mirror_config(tmp_path / "a", url, "    manifests: none\n")
    (tmp_path / "a").mkdir()
    assert sync(top).exit_code == 0
    assert members(top.database_path) == {n["hash"] for n in specs}

    (tmp_path / "b").mkdir()
    view = mirror_config(tmp_path / "b", url, "    view: cuda\n")
    server.reset_log()
    assert sync(view).exit_code == 0
    assert members(view.database_path) == {n["hash"] for n in specs[:2]}
    assert server.count("/site/v3/manifests/index/cuda/index.manifest.json") == 1
    assert server.count("/site/v3/manifests/index/index.manifest.json") == 0

    (tmp_path / "c").mkdir()
    missing = mirror_config(tmp_path / "c", url, "    view: nope\n")
    report = sync(missing)
    assert report.exit_code == 1
    assert "/site/v3/manifests/index/nope/index.manifest.json" in report.failures[0]
    assert server.count("/site/build_cache/*") == 0  # a view is v3 only: no v2 guess


# -- point 6: trusted keys -------------------------------------------------------------

REAL_KEYS = {
    "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E",
    "A98A04B882E19D85FD36EE069565D80B055C92FF",
    "E89D4971F0097B1E7A3EB57371B484802E78D7CD",
}
#: The realdata README: edited after signing, so their signatures are bad.
EDITED = {
    "test-debian6-core2-gcc-10.2.1-libdwarf-20130729-sk2gqqz4n5njmvktycnd25wq25jxiqkr.spec.json.sig",
    "test-debian6-core2-gcc-10.2.1-libelf-0.8.13-rqh2vuf6fqwkmipzgi2wjx352mq7y7ez.spec.json.sig",
    "test-debian6-m1-none-none-gcc-runtime-10.2.1-izgzpzeljwairalfjm3k6fntbb64nt6n.spec.json.sig",
}
STALE_INDEX_VICTIM = (
    "test-debian6-m1-gcc-10.2.1-libdwarf-20130729-u5uz3dcch5if4eve4sef67o2rf2lbfgh.spec.json.sig"
)


class _Collect:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def start(self, total: int) -> None:
        pass

    def advance(self, specs: int) -> None:
        pass

    def problem(self, problem: Problem) -> None:
        self.problems.append(problem)


def run_verify(config: Config) -> list[Problem]:
    collect = _Collect()
    anyio.run(lambda: verify(config, collect))
    return collect.problems


def _signature_problems(problems: list[Problem]) -> dict[str, str]:
    """Spec file name -> what was wrong with its signature."""
    found = {}
    for p in problems:
        if p.what.startswith("spec file signature: "):
            url = p.what.removeprefix("spec file signature: ").split(": ", 1)[0]
            found[url.rsplit("/", 1)[-1]] = p.what
    return found


def _trusted_yaml(entries: list[str]) -> str:
    return "    verify_signatures: true\n    manifests: all\n    trusted_keys:\n" + "".join(
        f"      - '{e}'\n" for e in entries
    )


@pytest.mark.parametrize("given_as", ["fingerprints", "files", "both"])
def test_the_real_signed_mirror_with_its_three_keys_pinned_has_exactly_three_bad_signatures(
    tmp_path: Path, docroot: Path, server: FixtureServer, given_as: str
) -> None:
    shutil.copytree(REAL_SIGNED_V2, docroot / "real")
    keys = tmp_path / "keys"
    shutil.copytree(REAL_SIGNED_V2 / "build_cache/_pgp", keys)
    files = [str(keys / f"{k}.pub") for k in sorted(REAL_KEYS)]
    entries = {
        "fingerprints": sorted(REAL_KEYS),
        "files": files,
        "both": files[:1] + sorted(REAL_KEYS)[1:],
    }[given_as]
    config = mirror_config(tmp_path, f"{server.url}/real", _trusted_yaml(entries))
    report = sync(config)
    assert report.exit_code == 1  # three bad signatures
    tally = report.stacks[0].manifests
    assert tally is not None and (tally.ok, tally.bad_signature) == (3, 3)

    server.reset_log()
    problems = run_verify(config)
    bad = _signature_problems(problems)
    assert set(bad) == EDITED
    assert all("bad signature: the signed text was changed" in what for what in bad.values())
    # Every spec file is found at its real name; the only other problems are the
    # .spack binaries, which the real test mirror does not include.
    others = [p.what for p in problems if not p.what.startswith("spec file signature: ")]
    assert len(others) == 3 and all(w.startswith("tarball missing: ") for w in others)
    asked = {Path(r.path).name for r in server.requests if r.path.endswith(".spec.json.sig")}
    assert asked == {p.name for p in (docroot / "real/build_cache").glob("*.spec.json.sig")}
    assert server.count("*.spec.json") == 0 and server.count("*/_pgp/index.json") == 0
    if given_as == "fingerprints":  # fetched from where the mirror publishes them
        assert server.count("/real/build_cache/_pgp/*.pub") == 3
        # The same from the command line, as a real process.
        text = (
            f"database: {config.database_path}\nsources:\n  - name: site\n    kind: mirror\n"
            f"    url: '{server.url}/real'\n    release: local\n"
            + _trusted_yaml(entries)
            + TEST_HTTP
        )
        result = run_cli("-c", str(write_config(tmp_path / "c.yaml", text)), "verify", cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stdout.splitlines() if "spec file signature: " in line]
        assert {line.split("/")[-1].split(":")[0] for line in lines} == EDITED
        assert "Traceback" not in result.stderr


def test_without_trusted_keys_the_stale_key_index_fails_a_good_file_and_the_run_says_so(
    tmp_path: Path, docroot: Path, server: FixtureServer, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(REAL_SIGNED_V2, docroot / "real")
    extra = "    verify_signatures: true\n    manifests: all\n"
    config = mirror_config(tmp_path, f"{server.url}/real", extra)
    with caplog.at_level(logging.WARNING, logger="mirrorsync"):
        sync(config)
    trusting = [r for r in caplog.records if "keys the mirror itself publishes" in r.getMessage()]
    assert len(trusting) == 1 and "source site:" in trusting[0].getMessage()
    bad = _signature_problems(run_verify(config))
    assert set(bad) == EDITED | {STALE_INDEX_VICTIM}
    assert "a key the mirror does not publish" in bad[STALE_INDEX_VICTIM]


def test_a_pinned_fingerprint_is_trusted_only_for_its_own_key(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    shutil.copytree(REAL_SIGNED_V2, docroot / "real")
    pgp = docroot / "real/build_cache/_pgp"
    # The mirror serves another key under the pinned fingerprint's name.
    cbab, e89d = (
        "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E",
        "E89D4971F0097B1E7A3EB57371B484802E78D7CD",
    )
    (pgp / f"{cbab}.pub").write_bytes((pgp / f"{e89d}.pub").read_bytes())
    config = mirror_config(tmp_path, f"{server.url}/real", _trusted_yaml([cbab]))
    report = sync(config)
    assert report.exit_code == 1
    (line,) = report.failures
    assert "cannot check signatures: " in line
    assert f"the key served for trusted key {cbab} is {e89d}; not trusted" in line

    # Pinned by file, a key the mirror also publishes is not trusted unless pinned.
    (tmp_path / "db2").mkdir()
    only = tmp_path / "cbab.pub"
    shutil.copy(REAL_SIGNED_V2 / f"build_cache/_pgp/{cbab}.pub", only)
    config = mirror_config(tmp_path / "db2", f"{server.url}/real", _trusted_yaml([str(only)]))
    sync(config)
    bad = _signature_problems(run_verify(config))
    assert "a key not in trusted_keys" in bad[STALE_INDEX_VICTIM]
    assert set(bad) == EDITED | {STALE_INDEX_VICTIM}


def test_trusted_keys_are_checked_in_the_configuration(tmp_path: Path) -> None:
    base = f"database: {tmp_path / 'db'}\nsources:\n  - name: s\n    kind: mirror\n    url: http://h/m\n"
    with pytest.raises(ConfigError, match=r"sources\[0\]\.trusted_keys: trusted_keys needs verify"):
        parse_config(base + "    trusted_keys: [CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E]\n")
    with pytest.raises(ConfigError, match=r"trusted_keys\[0\]: expected a 40-hex key fingerprint"):
        parse_config(base + "    verify_signatures: true\n    trusted_keys: [nope.pub]\n")
    spaced = "CBAB 2C10 32C6 FF50 7804  9EC0 FA61 D50C 12CA D37E"
    config = parse_config(base + f"    verify_signatures: true\n    trusted_keys: ['{spaced}']\n")
    source = config.sources[0]
    assert isinstance(source, MirrorSource) and source.trusted_keys == [spaced]


# -- point 11: file:// mirrors ------------------------------------------------------


def test_a_file_url_mirror_is_read_with_the_same_checks_events_and_crawl(
    tmp_path: Path,
) -> None:
    root = tmp_path / "shared fs/mirror"  # a space: the URL is percent-encoded
    specs = nodes("f", 4)
    info = write_v3_mirror(root, specs, signed=False)
    url = root.as_uri()
    assert url.startswith("file:///") and "%20" in url
    config = mirror_config(tmp_path, url, "    manifests: all\n")
    first = sync(config)
    assert first.exit_code == 0, first.failures
    (o,) = first.stacks
    assert (o.status, o.added, o.spec_count) == ("changed", 4, 4)
    assert o.manifests is not None and o.manifests.ok == 4
    assert set(manifest_statuses(config.database_path).values()) == {"ok"}
    assert run_verify(config) == []

    again = sync(config)  # the index manifest answered 304; `all` reads the 4 manifests again
    manifest_bytes = sum((root / rel).stat().st_size for rel in info.spec_files.values())
    assert again.stacks[0].status == "unchanged"
    assert (again.stacks[0].tally.requests, again.stacks[0].tally.bytes) == (5, manifest_bytes)

    info = write_v3_mirror(root, specs[1:] + nodes("g", 2), signed=False)
    (root / info.spec_files[specs[1]["hash"]]).unlink()
    changed = sync(config)
    (o,) = changed.stacks
    assert (o.added, o.removed, o.spec_count) == (2, 1, 5)
    with sqlite3.connect(sqlite_file(config.database_path)) as conn:
        missing = conn.execute("SELECT count(*) FROM events WHERE type = 'spec.manifest_missing'")
        assert missing.fetchone() == (1,)

    # The same integrity checks: a blob whose length is not the promised one.
    tarball = root / info.tarballs[specs[2]["hash"]]
    tarball.write_bytes(tarball.read_bytes() + b"x")
    problems = [p.what for p in run_verify(config)]
    assert any(w.startswith("tarball is ") and "the spec manifest says" in w for w in problems)
    assert any(w.startswith("spec manifest missing: file:///") for w in problems)


def test_a_file_url_v2_mirror_without_hash_file_is_not_read_again_when_unchanged(
    tmp_path: Path,
) -> None:
    root = tmp_path / "v2"
    write_v2_mirror(root, nodes("h", 3, db_version=7), signed=False)
    (root / "build_cache/index.json.hash").unlink()
    config = mirror_config(tmp_path, root.as_uri(), "    manifests: none\n")
    assert sync(config).stacks[0].added == 3
    second = sync(config)
    assert second.stacks[0].status == "unchanged"
    assert second.stacks[0].tally.bytes == 0  # a 304 from the file's validators
    missing = mirror_config(tmp_path / "x", (tmp_path / "nowhere").as_uri())
    (tmp_path / "x").mkdir()
    report = sync(missing)
    assert report.exit_code == 1 and "nowhere/build_cache/index.json" in report.failures[0]


def test_a_stale_v3_key_index_passes_with_the_key_pinned_by_fingerprint(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path
) -> None:
    specs = nodes("k", 6)
    info = write_v3_mirror(docroot / "site", specs, gpg_home=gpg_home, key_index=())
    headers = {
        (docroot / "site" / rel).read_text().split("\n")[1] for rel in info.spec_files.values()
    }
    assert headers == {"Hash: SHA256", "Hash: SHA512"}  # both occur, as on real mirrors
    (fingerprint,) = fingerprints(gpg_home)
    url = f"{server.url}/site"

    # The key index lists no key: trusting the mirror's own keys, nothing can pass.
    stale = mirror_config(tmp_path, url, "    verify_signatures: true\n    manifests: all\n")
    report = sync(stale)
    assert report.exit_code == 1 and "the key index lists no keys" in report.failures[0]

    (tmp_path / "pinned").mkdir()
    pinned = mirror_config(tmp_path / "pinned", url, _trusted_yaml([fingerprint.lower()]))
    report = sync(pinned)
    assert report.exit_code == 0, report.failures
    assert set(manifest_statuses(pinned.database_path).values()) == {"ok"}
    assert server.count(f"/site/v3/manifests/key/{fingerprint}.key.manifest.json") == 1
    assert run_verify(pinned) == []
