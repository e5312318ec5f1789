"""verify_signatures: manifests checked with gpg against keys the mirror publishes, for real.

Each test makes its own ed25519 key with gpg; the fixture signs manifests with it
and publishes the public key where Spack does (v3/manifests/key/, build_cache/_pgp/).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import anyio

from conftest import catalog_config, catalog_config_text, run_cli, sync, write_config
from dbstate import sqlite_file
from mirrorsync.config import Config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import gpg_clearsign
from mirrorsync.fixture.specs import Node, fake_hash, spec_node
from mirrorsync.store.location import Location
from mirrorsync.verify import Problem, verify

SIGNED = "    verify_signatures: true\n    manifests: all"


def nodes(n: int, **kwargs: object) -> list[Node]:
    return [
        spec_node(f"lib{i}", "2.0", fake_hash(f"sig{i}"), **kwargs)  # type: ignore[arg-type]
        for i in range(n)
    ]


def statuses(db: Location) -> dict[tuple[str, str], tuple[str, str | None]]:
    with sqlite3.connect(sqlite_file(db)) as conn:
        return {
            (stack, h): (status, problem)
            for stack, h, status, problem in conn.execute(
                "SELECT st.name, s.hash, sm.status, sm.problem FROM spec_manifests sm"
                " JOIN stacks st ON st.id = sm.stack_id JOIN specs s ON s.id = sm.spec_id"
            )
        }


def test_good_signatures_pass_and_tampering_is_an_error(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path, other_home: Path
) -> None:
    specs = nodes(6)
    infos = build_catalog_from_specs(
        docroot, {"develop": {"root": specs, "e4s": specs[:4]}}, gpg_home=gpg_home
    )["develop"]
    config = catalog_config(tmp_path, server, extra=SIGNED)
    report = sync(config)
    assert report.exit_code == 0, report.failures
    assert set(statuses(config.database_path).values()) == {("ok", None)}
    assert len(statuses(config.database_path)) == 10
    assert server.count("*/v3/manifests/key/keys.manifest.json") == 2  # once per stack

    e4s = infos["e4s"].spec_files
    # 1: the signed text changed (a size edited) under a good signature.
    changed = docroot / e4s[specs[0]["hash"]]
    text = changed.read_text()
    size = re.search(r'"contentLength":(\d+)', text)  # manifests are compact, as Spack's
    assert size is not None
    changed.write_text(text.replace(size.group(0), f'"contentLength":{int(size[1]) + 1}', 1))
    # 2: signed with a key the mirror does not publish.
    foreign = docroot / e4s[specs[1]["hash"]]
    foreign.write_bytes(gpg_clearsign(other_home, _body(foreign.read_text())))
    # 3: not signed at all.
    plain = docroot / e4s[specs[2]["hash"]]
    plain.write_text(_body(plain.read_text()))

    report = sync(config)
    assert report.exit_code == 1
    (line,) = report.failures
    assert line.startswith("test:develop/e4s: spec manifests: 3 with a bad signature")
    found = statuses(config.database_path)
    assert found[("e4s", specs[0]["hash"])][0] == "bad_signature"
    assert "bad signature" in str(found[("e4s", specs[0]["hash"])][1])
    assert "a key the mirror does not publish" in str(found[("e4s", specs[1]["hash"])][1])
    assert "not signed" in str(found[("e4s", specs[2]["hash"])][1])
    assert found[("e4s", specs[3]["hash"])] == ("ok", None)
    assert {found[("root", s["hash"])] for s in specs} == {("ok", None)}

    # verify checks the same signatures when the source asks for it.
    found_problems = _verify(config)
    assert sorted(p.hash for p in found_problems) == sorted(s["hash"] for s in specs[:3])
    assert all(p.stack == "e4s" and ": " in p.line() for p in found_problems)
    assert all(p.what.startswith("spec manifest signature: ") for p in found_problems)

    # Without verify_signatures the same manifests are read without gpg, and all parse.
    unchecked = catalog_config(tmp_path, server, extra="    manifests: all")
    assert sync(unchecked).exit_code == 0
    assert set(statuses(config.database_path).values()) == {("ok", None)}


class _Collect:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def start(self, total: int) -> None:
        pass

    def advance(self, specs: int) -> None:
        pass

    def problem(self, problem: Problem) -> None:
        self.problems.append(problem)


def _verify(config: Config) -> list[Problem]:
    collect = _Collect()
    anyio.run(lambda: verify(config, collect))
    return collect.problems


def _body(clearsigned: str) -> str:
    """The signed text of a clear-signed document (the fixture's JSON has no dash lines)."""
    body = clearsigned.split("\n\n", 1)[1]
    return body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]


def test_v2_spec_files_are_checked_against_the_published_key(
    tmp_path: Path, docroot: Path, server: FixtureServer, gpg_home: Path
) -> None:
    specs = nodes(5, compiler=("gcc", "11.4.0"), db_version=7)
    infos = build_catalog_from_specs(
        docroot, {"v0.23.1": {"root": specs}}, layout="v2", gpg_home=gpg_home
    )["v0.23.1"]
    config = catalog_config(tmp_path, server, extra=SIGNED)
    assert sync(config).exit_code == 0
    assert server.count("/v0.23.1/build_cache/_pgp/index.json") == 1
    assert set(statuses(config.database_path).values()) == {("ok", None)}

    spec_file = docroot / infos["root"].spec_files[specs[4]["hash"]]
    spec_file.write_text(spec_file.read_text().replace('"hash_algorithm"', '"hash_algorithm" ', 1))
    # A genuine spec file of another spec, served at this spec's name: refused.
    swapped = docroot / infos["root"].spec_files[specs[3]["hash"]]
    swapped.write_bytes((docroot / infos["root"].spec_files[specs[0]["hash"]]).read_bytes())
    report = sync(config)
    assert report.exit_code == 1
    found = statuses(config.database_path)
    assert found[("root", specs[4]["hash"])][0] == "bad_signature"
    assert found[("root", specs[3]["hash"])][0] == "bad_signature"
    assert "signed spec file of another spec" in str(found[("root", specs[3]["hash"])][1])


def test_a_mirror_without_keys_cannot_pass(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    # The default fixture signs with well-formed but fake signatures and publishes no keys.
    build_catalog_from_specs(docroot, {"develop": {"root": nodes(3)}})
    report = sync(catalog_config(tmp_path, server, extra=SIGNED))
    assert report.exit_code == 1
    (line,) = report.failures
    assert line.startswith("test:develop/root: cannot check signatures: ")
    assert "v3/manifests/key/keys.manifest.json: the mirror publishes no public keys" in line
    assert server.count("*.spec.manifest.json") == 0


def test_without_gpg_installed_the_run_says_so(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_catalog_from_specs(docroot, {"develop": {"root": nodes(2)}})
    text = catalog_config_text(tmp_path, server, extra="    verify_signatures: true", http="")
    config = write_config(tmp_path / "c.yaml", text)
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_cli("-c", str(config), "once", cwd=tmp_path, env={"PATH": str(empty)})
    assert result.returncode == 1
    assert "test:develop/root: cannot check signatures:" in result.stderr
    assert "verify_signatures is on but gpg is not installed" in result.stderr
    assert "Traceback" not in result.stderr
