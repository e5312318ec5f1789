"""One event writer: every event is written with its outbox rows, by one function."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO, catalog_config_text, sync
from mirrorsync.config import load_config
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from receiver import Receiver, new_secret

_INSERT_EVENTS = re.compile(r"\bINTO\s+(events|event_rows)\b", re.IGNORECASE)


def test_only_store_events_record_inserts_into_events() -> None:
    """Every SQL string literal in src/ that inserts into ``events`` is inside
    ``mirrorsync.store.events.record``."""
    found = []
    for path in sorted((REPO / "src" / "mirrorsync").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and _INSERT_EVENTS.search(node.value)
                ):
                    found.append((path.relative_to(REPO).as_posix(), function.name))
        text = path.read_text(encoding="utf-8")
        if _INSERT_EVENTS.search(text) and path.name != "events.py":
            found.append((path.relative_to(REPO).as_posix(), "<module>"))
    assert sorted(set(found)) == [("src/mirrorsync/store/events.py", "record")]


@pytest.mark.usefixtures("backend")
def test_a_webhook_filtered_to_manifest_missing_receives_it_live(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    nodes = [spec_node(f"pkg-{i}", f"1.{i}", fake_hash(f"mm{i}")) for i in range(5)]
    infos = build_catalog_from_specs(docroot, {"develop": {"root": nodes}})
    gone = nodes[1]
    (docroot / infos["develop"]["root"].spec_files[gone["hash"]]).unlink()
    secret = new_secret()
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(secret)
    with Receiver(secret) as receiver:
        hooks = (
            "webhooks:\n"
            f"  - {{name: missing, url: '{receiver.url}', secret_file: '{secret_file}',"
            " events: [spec.manifest_missing]}\n"
        )
        config_file = tmp_path / "mirrorsync.yaml"
        config_file.write_text(catalog_config_text(tmp_path, server, extra=hooks))
        report = sync(load_config(str(config_file)))
        assert report.exit_code == 0, report.failures
        received = [e for r in receiver.acknowledged for e in r.events]
        assert [(e["type"], e["hash"], e["stack"]) for e in received] == [
            ("spec.manifest_missing", gone["hash"], "root")
        ]
        # Found missing again on the next run: no second event, nothing more sent.
        assert sync(load_config(str(config_file))).exit_code == 0
        assert len([e for r in receiver.acknowledged for e in r.events]) == 1
