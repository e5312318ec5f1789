"""``mirrorsync verify`` as a real process against the fixture server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, catalog_config_text, run_cli, write_config
from mirrorsync.fixture.build import build_catalog_from_specs, build_from_seed
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node


def _config(tmp_path: Path, server: FixtureServer) -> Path:
    http = (
        "http:\n  concurrency: 8\n  per_host_rate: 1000\n  timeout: 10\n"
        "  retries: {attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}\n"
    )
    text = catalog_config_text(tmp_path, server, extra="    manifests: none", http=http)
    return write_config(tmp_path / "c.yaml", text)


def _corrupt(path: Path) -> None:
    """Flip one byte in the middle: same length, different digest."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_passes_an_intact_mirror_and_names_every_problem(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    infos = build_from_seed(docroot, "001")["develop"]
    config = _config(tmp_path, server)
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0

    server.reset_log()
    intact = run_cli("-c", str(config), "verify", cwd=tmp_path)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert intact.stdout == ""
    assert "verify: 145 specs in 7 stacks, 0 problems" in intact.stderr
    # One GET per manifest and a HEAD per blob; no blob is downloaded without --checksums.
    assert server.count("*.spec.manifest.json", "GET") == 145
    assert server.count("*/blobs/*", "HEAD") == 2 * 145
    assert server.count("*/blobs/*", "GET") == 0

    e4s, root = infos["e4s"], infos["root"]
    no_manifest = sorted(e4s.spec_files)[0]
    (docroot / e4s.spec_files[no_manifest]).unlink()
    no_tarball, corrupt = sorted(root.tarballs)[5], sorted(root.tarballs)[9]
    (docroot / root.tarballs[no_tarball]).unlink()
    _corrupt(docroot / root.tarballs[corrupt])
    name = "py-pyproject-hooks"

    broken = run_cli("-c", str(config), "verify", cwd=tmp_path)
    assert broken.returncode == 1
    lines = sorted(broken.stdout.splitlines())
    assert len(lines) == 2, broken.stdout
    missing_manifest = next(line for line in lines if no_manifest in line)
    assert missing_manifest.startswith(f"test:develop/e4s {no_manifest} {name}@")
    assert ": spec manifest missing: " in missing_manifest
    assert missing_manifest.endswith(f"{no_manifest}.spec.manifest.json")
    missing_tarball = next(line for line in lines if no_tarball in line)
    assert missing_tarball.startswith(f"test:develop/root {no_tarball} {name}@")
    assert f": tarball missing: {server.url}/{root.tarballs[no_tarball]}" in missing_tarball
    assert "verify: 145 specs in 7 stacks, 2 problems" in broken.stderr
    as_json = run_cli("-c", str(config), "verify", "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    problems = sorted((json.loads(line) for line in as_json.stdout.splitlines()), key=str)
    assert {(p["stack"], p["hash"], p["name"]) for p in problems} == {
        ("e4s", no_manifest, name),
        ("root", no_tarball, name),
    }
    assert all(
        set(p) == {"source", "release", "stack", "hash", "name", "version", "problem"}
        for p in problems
    )

    server.reset_log()
    thorough = run_cli("-c", str(config), "verify", "--checksums", cwd=tmp_path)
    assert thorough.returncode == 1
    lines = sorted(thorough.stdout.splitlines())
    assert len(lines) == 3, thorough.stdout
    bad_digest = next(line for line in lines if corrupt in line)
    actual = hashlib.sha256((docroot / root.tarballs[corrupt]).read_bytes()).hexdigest()
    assert bad_digest.startswith(f"test:develop/root {corrupt} {name}@")
    assert f": tarball sha256 is {actual}, the spec manifest says " in bad_digest
    assert any(no_manifest in line for line in lines)
    assert any(no_tarball in line for line in lines)
    assert server.count("*/blobs/*", "HEAD") == 0  # --checksums downloads instead

    # Filters: only the e4s stack, or a release that does not exist.
    e4s_only = run_cli("-c", str(config), "verify", "--stack", "e4s", "--checksums", cwd=tmp_path)
    assert e4s_only.returncode == 1
    assert e4s_only.stdout.splitlines() == [missing_manifest]
    assert "verify: 20 specs in 1 stack, 1 problem," in e4s_only.stderr
    clean = run_cli("-c", str(config), "verify", "--stack", "ml-linux-x86_64-cpu", cwd=tmp_path)
    assert (clean.returncode, clean.stdout) == (0, "")
    unknown = run_cli("-c", str(config), "verify", "--release", "v9.9.9", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no synced stack matches --release v9.9.9" in unknown.stderr


def test_verify_checks_lengths_and_reports_unreadable_manifests(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = [spec_node("zlib", f"1.{i}", fake_hash(f"len{i}")) for i in range(4)]
    infos = build_catalog_from_specs(docroot, {"develop": {"root": specs}})["develop"]["root"]
    short = docroot / infos.tarballs[specs[0]["hash"]]
    length = len(short.read_bytes())
    short.write_bytes(short.read_bytes()[:-10])
    (docroot / infos.spec_files[specs[1]["hash"]]).write_text('{"version": 3, "data": 7}')
    config = _config(tmp_path, server)
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    result = run_cli("-c", str(config), "verify", cwd=tmp_path)
    assert result.returncode == 1
    lines = sorted(result.stdout.splitlines())
    assert len(lines) == 2
    (too_short,) = [line for line in lines if specs[0]["hash"] in line]
    assert f"tarball is {length - 10} bytes, the spec manifest says {length}: " in too_short
    (unreadable,) = [line for line in lines if specs[1]["hash"] in line]
    assert ": spec manifest unreadable: malformed spec manifest at " in unreadable


def test_verify_a_v2_mirror(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    specs = [
        spec_node(
            "hdf5", "1.14.3", fake_hash(f"v2verify{i}"), compiler=("gcc", "11.4.0"), db_version=7
        )
        for i in range(6)
    ]
    infos = build_catalog_from_specs(docroot, {"v0.23.1": {"root": specs}}, layout="v2")["v0.23.1"][
        "root"
    ]
    config = _config(tmp_path, server)
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    assert run_cli("-c", str(config), "verify", "--checksums", cwd=tmp_path).returncode == 0

    hashes = [s["hash"] for s in specs]
    (docroot / infos.spec_files[hashes[0]]).unlink()
    (docroot / infos.tarballs[hashes[1]]).unlink()
    _corrupt(docroot / infos.tarballs[hashes[2]])
    quick = run_cli("-c", str(config), "verify", cwd=tmp_path)
    assert quick.returncode == 1
    assert len(quick.stdout.splitlines()) == 2
    (no_spec,) = [line for line in quick.stdout.splitlines() if hashes[0] in line]
    assert no_spec.startswith(f"test:v0.23.1/root {hashes[0]} hdf5@1.14.3: spec file missing: ")
    assert no_spec.endswith(".spec.json.sig (not found, nor the unsigned .spec.json)")
    (no_spack,) = [line for line in quick.stdout.splitlines() if hashes[1] in line]
    assert no_spack.endswith(f"tarball missing: {server.url}/{infos.tarballs[hashes[1]]}")

    full = run_cli("-c", str(config), "verify", "--checksums", cwd=tmp_path)
    assert full.returncode == 1
    (bad,) = [line for line in full.stdout.splitlines() if hashes[2] in line]
    assert ": tarball sha256 is " in bad and ", the spec file says " in bad
    assert len(full.stdout.splitlines()) == 3


def test_progress_shows_on_a_terminal_and_problems_stay_on_stdout(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    specs = [spec_node("zlib", f"1.{i}", fake_hash(f"tty{i}")) for i in range(5)]
    infos = build_catalog_from_specs(docroot, {"develop": {"root": specs}})["develop"]["root"]
    (docroot / infos.tarballs[specs[0]["hash"]]).unlink()
    config = _config(tmp_path, server)
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0

    main, terminal = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "120"}
    shown = b""
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "mirrorsync", "-c", str(config), "verify"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        while True:  # read as it runs, so the terminal never fills up and blocks it
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            shown += chunk
        stdout = process.stdout.read() if process.stdout else b""
        process.wait(timeout=60)
    finally:
        os.close(main)
    assert process.returncode == 1
    (line,) = stdout.decode().splitlines()
    assert line.startswith(f"test:develop/root {specs[0]['hash']} zlib@1.0: tarball missing: ")
    text = shown.decode("utf-8", "replace")
    assert "verifying" in text  # the progress bar, on the terminal only
    assert "verify: 5 specs in 1 stack, 1 problem," in text
