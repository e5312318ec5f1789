"""``python -m mirrorsync.fixture build-site``: a realistic local site in one command, as a
person would use it (real processes), then synced and changed to its second state."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run_cli
from mirrorsync.fixture.server import FixtureServer


def fixture_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirrorsync.fixture", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_build_site_then_sync_both_states(tmp_path: Path) -> None:
    site, port = tmp_path / "site", free_port()
    common = ("--specs", "100", "--releases", "develop,v1.0", "--stacks", "e4s,tutorial")
    built = fixture_cli("build-site", str(site), "--port", str(port), *common, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    config = site / "mirrorsync.yaml"
    assert f"-m mirrorsync -c {config} once" in built.stdout  # what to paste next
    assert "--state 2" in built.stdout and "--releases develop,v1.0" in built.stdout

    catalogue = json.loads((site / "www" / "cache_spack_io_index.json").read_text())
    assert {r: sorted(e["label"] for e in entries) for r, entries in catalogue.items()} == {
        "develop": ["e4s", "root", "tutorial"],
        "v1.0": ["e4s", "root", "tutorial"],
    }
    with FixtureServer(site / "www", "127.0.0.1", port):
        first = run_cli("-c", str(config), "once", cwd=tmp_path, timeout=300)
        assert first.returncode == 0, first.stderr
        stacks = json.loads(run_cli("-c", str(config), "status", "--json", cwd=tmp_path).stdout)
        counts = {(s["release"], s["stack"]): s["spec_count"] for s in stacks}
        assert counts[("develop", "root")] == 100 and len(counts) == 6

        def hashes(release: str, stack: str) -> set[str]:
            done = run_cli(
                "-c",
                str(config),
                "specs",
                "--release",
                release,
                "--stack",
                stack,
                "--json",
                cwd=tmp_path,
            )
            return {json.loads(line)["hash"] for line in done.stdout.splitlines()}

        root, e4s, tutorial = (hashes("develop", s) for s in ("root", "e4s", "tutorial"))
        assert e4s < root and tutorial < root and e4s & tutorial  # stacks overlap
        assert e4s - tutorial and tutorial - e4s
        assert not root & hashes("v1.0", "root")  # releases hold different builds

        # The configuration is kept; the site moves to its second state.
        config.write_text(config.read_text() + "# edited\n")
        again = fixture_cli(
            "build-site", str(site), "--port", str(port), "--state", "2", *common, cwd=tmp_path
        )
        assert again.returncode == 0, again.stderr
        # Its next step is no second --state 2, but what the churn changed (issue 30).
        assert "--state 2" not in again.stdout, again.stdout
        assert f"-m mirrorsync -c {config} diff --release develop --stack root 1 2" in again.stdout
        assert config.read_text().endswith("# edited\n")
        second = run_cli("-c", str(config), "once", cwd=tmp_path, timeout=300)
        assert second.returncode == 0, second.stderr
        history = json.loads(
            run_cli(
                "-c",
                str(config),
                "history",
                "--release",
                "develop",
                "--stack",
                "root",
                "--json",
                cwd=tmp_path,
            ).stdout
        )
        assert [(v["version"], v["added"], v["removed"]) for v in history] == [
            (1, 100, 0),
            (2, 2, 2),
        ]
        # Every stack changes by about 2% too (the root's churn), not by a shifted pattern.
        for release in ("develop", "v1.0"):
            for stack in ("e4s", "tutorial"):
                versions = json.loads(
                    run_cli(
                        "-c",
                        str(config),
                        "history",
                        "--release",
                        release,
                        "--stack",
                        stack,
                        "--json",
                        cwd=tmp_path,
                    ).stdout
                )
                assert versions[-1]["added"] <= 2 and versions[-1]["removed"] <= 2, versions


def test_build_site_help_says_2_percent() -> None:
    shown = fixture_cli("build-site", "--help", cwd=REPO)
    assert "about 2% of" in " ".join(shown.stdout.split()) and "%%" not in shown.stdout


def test_build_synthetic_keeps_the_other_releases_in_the_catalogue(tmp_path: Path) -> None:
    www = tmp_path / "www"
    for release in ("develop", "v1.0"):
        done = fixture_cli(
            "build-synthetic", str(www), "--specs", "5", "--release", release, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
    catalogue = json.loads((www / "cache_spack_io_index.json").read_text())
    assert sorted(catalogue) == ["develop", "v1.0"]
