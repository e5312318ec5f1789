"""``--name`` on the commands that act (``mirror``, ``webhooks retry|test|replay``,
``forget``) takes a glob, as the configuration's filters and the query filters do; a
name or glob matching nothing known is a usage error naming it, exit 2 (issue 30)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import catalog_config_text, run_cli, write_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from receiver import Receiver, new_secret


def test_acting_commands_take_globs_and_refuse_a_name_matching_nothing(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = [spec_node(f"lib{i}", "1.0", fake_hash(f"names:{i}")) for i in range(2)]
    build_catalog_from_specs(docroot, {"develop": {"root": specs}})
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(new_secret() + "\n")
    secret_file.chmod(0o600)
    with Receiver(secret_file.read_text().strip()) as up:
        hooks = "".join(
            f"\n  - {{name: {name}, url: '{up.url}', secret_file: {secret_file}}}"
            for name in ("ops-a", "ops-b", "audit")
        )
        copies = "".join(
            f"\n  - {{name: {name}, path: {tmp_path / name}, source: test, release: develop}}"
            for name in ("site-x", "site-y")
        )
        base = catalog_config_text(tmp_path, server)
        config = write_config(tmp_path / "c.yaml", f"{base}\nwebhooks:{hooks}\nmirrors:{copies}\n")
        c = ("-c", str(config))
        assert run_cli(*c, "once", cwd=tmp_path).returncode == 0

        dry = run_cli(*c, "mirror", "--name", "site-*", "--dry-run", "--json", cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr
        assert sorted(o["name"] for o in json.loads(dry.stdout)) == ["site-x", "site-y"]
        for wrong in ("nosuch", "web-*"):
            refused = run_cli(*c, "mirror", "--name", wrong, "--dry-run", cwd=tmp_path)
            assert refused.returncode == 2, refused.stderr
            assert f"no mirror {'matches' if '*' in wrong else 'named'} {wrong!r}" in refused.stderr

        pinged = run_cli(*c, "webhooks", "test", "--name", "ops-*", "--json", cwd=tmp_path)
        assert pinged.returncode == 0, pinged.stderr
        assert [p["name"] for p in json.loads(pinged.stdout)] == ["ops-a", "ops-b"]
        one = run_cli(*c, "webhooks", "test", "--name", "audit", "--json", cwd=tmp_path)
        assert json.loads(one.stdout)["name"] == "audit"  # a plain name: one object, as before
        retried = run_cli(*c, "webhooks", "retry", "--name", "ops-?", "--json", cwd=tmp_path)
        assert retried.returncode == 0, retried.stderr
        replayed = run_cli(
            *c, "webhooks", "replay", "--name", "ops-*", "--since", "0", "--json", cwd=tmp_path
        )
        assert replayed.returncode == 0, replayed.stderr
        assert [r["name"] for r in json.loads(replayed.stdout)] == ["ops-a", "ops-b"]
        for action in (("test",), ("retry",), ("replay", "--since", "0")):
            refused = run_cli(*c, "webhooks", *action, "--name", "nope*", cwd=tmp_path)
            assert refused.returncode == 2, (action, refused.stderr)
            assert "no webhook matches 'nope*'" in refused.stderr, refused.stderr

    # The ops webhooks leave the configuration: one glob forgets both.
    write_config(config, f"{base}\nmirrors:{copies}\n")
    forgot = run_cli(*c, "forget", "webhook", "ops-*", cwd=tmp_path)
    assert forgot.returncode == 0, forgot.stderr
    assert "forgot webhook ops-a" in forgot.stdout and "forgot webhook ops-b" in forgot.stdout
    listed = run_cli(*c, "webhooks", "list", "--json", cwd=tmp_path)
    assert [w["name"] for w in json.loads(listed.stdout)] == ["audit"]  # not matched: kept
    nothing = run_cli(*c, "forget", "webhook", "zz*", cwd=tmp_path)
    assert nothing.returncode == 2 and "no webhook matches 'zz*'" in nothing.stderr
