"""A copy on disk: checked (``verify --mirror``), repaired, missed when gone, and
readable by those who serve it whatever the umask of the process that wrote it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, json_lines, run_cli, write_config
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import fingerprints, make_signing_key, stop_agent
from mirrorsync.fixture.specs import Node
from test_mirrors import (
    INDEX_MANIFEST,
    _check_copy,
    _config_text,
    _copy_index,
    _graph,
    _manifest_records,
    _publish_upstream,
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users may enter (pytest's own tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mirrorsync-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _modes(copy: Path) -> tuple[set[int], set[int]]:
    """The permission bits of every file and every directory under the copy."""
    file_modes, dir_modes = set(), {stat.S_IMODE(copy.stat().st_mode)}
    for top, dirs, names in os.walk(copy):
        for d in dirs:
            dir_modes.add(stat.S_IMODE(os.lstat(Path(top) / d).st_mode))
        for n in names:
            file_modes.add(stat.S_IMODE(os.lstat(Path(top) / n).st_mode))
    return file_modes, dir_modes


def test_a_copy_made_under_umask_0077_is_readable_by_another_user(
    tmp_path: Path, docroot: Path, server: FixtureServer, shared_dir: Path
) -> None:
    _publish_upstream(docroot, _graph(), None)
    text = _config_text(tmp_path, server, "").replace(
        str(tmp_path / "copy"), str(shared_dir / "copy")
    )
    config = write_config(tmp_path / "c.yaml", text)
    done = subprocess.run(
        [sys.executable, "-m", "mirrorsync", "-c", str(config), "once"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0o077),
    )
    assert done.returncode == 0, done.stderr
    copy = shared_dir / "copy"
    assert len(_check_copy(copy)) == 7
    file_modes, dir_modes = _modes(copy)
    assert file_modes == {0o644} and dir_modes == {0o755}, (file_modes, dir_modes)
    if os.geteuid() != 0:
        return
    paths = sorted(str(p) for p in copy.rglob("*") if p.is_file())
    as_nobody = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sha256sum", *paths],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_nobody.returncode == 0, as_nobody.stderr
    assert len(as_nobody.stdout.splitlines()) == len(paths) > 10


def test_mode_sets_the_files_and_directories_permissions(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    _publish_upstream(docroot, _graph(), None)
    config = write_config(tmp_path / "c.yaml", _config_text(tmp_path, server, '    mode: "0640"'))
    old = os.umask(0o022)
    try:
        done = run_cli("-c", str(config), "once", cwd=tmp_path)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    file_modes, dir_modes = _modes(tmp_path / "copy")
    assert file_modes == {0o640} and dir_modes == {0o750}, (file_modes, dir_modes)
    # A copy written before (0600 under UMask=0077): verify says so, --repair fixes it.
    copy = tmp_path / "copy"
    blob = next(p for p in (copy / "blobs").rglob("*") if p.is_file())
    blob.chmod(0o600)
    blob.parent.chmod(0o700)
    found = run_cli("-c", str(config), "verify", "--mirror", "local", cwd=tmp_path)
    assert found.returncode == 1
    rel = blob.relative_to(copy).as_posix()
    assert found.stdout.splitlines() == [
        f"mirror local: {blob.parent.relative_to(copy).as_posix()}: directory mode 0700, "
        "the copy's is 0750",
        f"mirror local: {rel}: mode 0600, the copy's mode is 0640",
    ]
    fixed = run_cli("-c", str(config), "verify", "--mirror", "local", "--repair", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.splitlines()[2:] == [
        "mirror local: repaired: permissions set on 2 files or directories"
    ], fixed.stdout  # and nothing else: no file fetched again
    assert _modes(copy) == ({0o640}, {0o750})
    bad = write_config(tmp_path / "bad.yaml", _config_text(tmp_path, server, '    mode: "0999"'))
    checked = run_cli("-c", str(bad), "config", "check", cwd=tmp_path)
    assert checked.returncode == 2 and "mode" in checked.stderr, checked.stderr


# -- verify --mirror --------------------------------------------------------------------


def _made_copy(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> tuple[Path, dict[str, Node]]:
    nodes = _graph()
    _publish_upstream(docroot, nodes, None)
    config = write_config(tmp_path / "c.yaml", _config_text(tmp_path, server, ""))
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return config, nodes


def _manifest_rel(node: Node) -> str:
    name, h = node["name"], node["hash"]
    return f"v3/manifests/spec/{name}/{name}-1.0-{h}.spec.manifest.json"


def _tarball_rel(copy: Path, node: Node) -> str:
    (tarball,) = [
        r
        for r in _manifest_records((copy / _manifest_rel(node)).read_bytes())
        if "install" in r["mediaType"]
    ]
    return f"blobs/sha256/{tarball['checksum'][:2]}/{tarball['checksum']}"


def _verify(tmp_path: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", str(config), "verify", "--mirror", "local", *extra, cwd=tmp_path)


@pytest.mark.usefixtures("backend")
def test_verify_mirror_finds_each_damage_and_repair_restores_all(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config, nodes = _made_copy(tmp_path, docroot, server)
    copy = tmp_path / "copy"
    clean = _verify(tmp_path, config, "--checksums")
    assert clean.returncode == 0 and clean.stdout == "", clean.stdout + clean.stderr
    assert "0 problems" in clean.stderr

    deleted = _tarball_rel(copy, nodes["zlib"])
    (copy / deleted).unlink()
    truncated = _tarball_rel(copy, nodes["python"])
    data = (copy / truncated).read_bytes()
    (copy / truncated).write_bytes(data[: len(data) // 2])
    flipped = _tarball_rel(copy, nodes["cmake"])
    flip = bytearray((copy / flipped).read_bytes())
    flip[len(flip) // 2] ^= 0x01
    (copy / flipped).write_bytes(bytes(flip))
    manifest = _manifest_rel(nodes["py-numpy"])
    (copy / manifest).unlink()
    orphan = "v3/manifests/spec/stray/stray-1.0-" + "a" * 32 + ".spec.manifest.json"
    (copy / orphan).parent.mkdir(parents=True, exist_ok=True)
    (copy / orphan).write_bytes(b"not referenced")

    quick = _verify(tmp_path, config)
    assert quick.returncode == 1, quick.stderr
    lines = quick.stdout.splitlines()
    assert len(lines) == 4, lines  # a flipped byte needs --checksums
    for rel, words in (
        (deleted, "missing"),
        (truncated, "bytes, its manifest says"),
        (manifest, "missing"),
        (orphan, "orphan"),
    ):
        (line,) = [x for x in lines if x.startswith(f"mirror local: {rel}: ")]
        assert words in line, line
    full = _verify(tmp_path, config, "--checksums")
    assert full.returncode == 1
    lines = full.stdout.splitlines()
    assert len(lines) == 5, lines
    (line,) = [x for x in lines if x.startswith(f"mirror local: {flipped}: ")]
    assert "sha256 is" in line

    server.reset_log()
    repaired = _verify(tmp_path, config, "--checksums", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    said = repaired.stdout
    for node in ("zlib", "python", "cmake", "py-numpy"):
        assert f"repaired: {node}/{nodes[node]['hash'][:7]}: fetched again" in said, said
    assert "repaired: removed 1 orphan" in said
    assert "now 0 problems" in repaired.stderr
    fetched = {r.path.rsplit("/", 1)[1] for r in server.requests if r.status == 200}
    assert {deleted, truncated, flipped} <= {f"blobs/sha256/{h[:2]}/{h}" for h in fetched}
    again = _verify(tmp_path, config, "--checksums")
    assert again.returncode == 0 and again.stdout == "", again.stdout
    assert not (copy / orphan).exists()
    assert len(_check_copy(copy)) == 7


def test_repair_says_what_upstream_no_longer_has(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config, nodes = _made_copy(tmp_path, docroot, server)
    copy = tmp_path / "copy"
    tarball = _tarball_rel(copy, nodes["hdf5"])
    (copy / tarball).unlink()
    (docroot / "develop" / tarball).unlink()  # pruned upstream since
    (docroot / "develop" / _manifest_rel(nodes["hdf5"])).unlink()
    (copy / _manifest_rel(nodes["hdf5"])).unlink()
    done = _verify(tmp_path, config, "--repair")
    assert done.returncode == 1
    label = f"hdf5/{nodes['hdf5']['hash'][:7]}"
    assert f"mirror local: {label}: not repairable: upstream no longer has it" in done.stdout, (
        done.stdout
    )
    assert "still: " in done.stdout


def test_a_symbolic_link_in_the_copy_is_reported_and_never_followed(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config, nodes = _made_copy(tmp_path, docroot, server)
    copy = tmp_path / "copy"
    rel = _tarball_rel(copy, nodes["zlib"])
    outside = tmp_path / "outside"
    outside.write_bytes((copy / rel).read_bytes())
    (copy / rel).unlink()
    (copy / rel).symlink_to(outside)
    found = _verify(tmp_path, config, "--checksums")
    assert found.returncode == 1
    assert f"mirror local: {rel}: tarball of zlib/" in found.stdout
    assert "not a regular file" in found.stdout
    repaired = _verify(tmp_path, config, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert not (copy / rel).is_symlink() and outside.exists()
    # A linked directory: what is under it is missing, the link is never entered.
    shard = (copy / rel).parent
    elsewhere = tmp_path / "elsewhere"
    shard.rename(elsewhere)
    shard.symlink_to(elsewhere, target_is_directory=True)
    found = _verify(tmp_path, config)
    assert found.returncode == 1
    assert "is a symbolic link" in found.stdout, found.stdout
    repaired = _verify(tmp_path, config, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert shard.is_dir() and not shard.is_symlink() and elsewhere.is_dir()
    assert len(_check_copy(copy)) == 7


def test_a_deleted_copy_is_a_problem_and_the_next_mirror_rebuilds_it(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config, _ = _made_copy(tmp_path, docroot, server)
    copy = tmp_path / "copy"
    before = _copy_index(copy)
    ok = run_cli("-c", str(config), "status", "--check", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout
    shutil.rmtree(copy)
    check = run_cli("-c", str(config), "status", "--check", cwd=tmp_path)
    assert check.returncode == 1
    assert check.stdout.splitlines() == [
        f"mirror local: copy missing on disk: {copy}/v3/manifests/index/index.manifest.json"
        " is gone (the next 'mirrorsync mirror' rebuilds it)"
    ], check.stdout
    as_json = run_cli("-c", str(config), "status", "--check", "--json", cwd=tmp_path)
    assert '"kind": "copy_missing"' in as_json.stdout.replace('":"', '": "'), as_json.stdout
    table = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert "missing on disk" in table.stdout
    rebuilt = run_cli("-c", str(config), "mirror", "--json", cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert '"status": "rebuilt"' in rebuilt.stdout.replace('":"', '": "'), rebuilt.stdout
    assert "rebuilding the copy" in rebuilt.stderr
    assert _copy_index(copy) == before and len(_check_copy(copy)) == 7
    assert run_cli("-c", str(config), "status", "--check", cwd=tmp_path).returncode == 0
    again = run_cli("-c", str(config), "mirror", "--json", cwd=tmp_path)
    assert '"status": "unchanged"' in again.stdout.replace('":"', '": "'), again.stdout


def test_status_keeps_what_an_index_manifest_names_and_still_sees_each_damage(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """status keeps the parsed answer of a copy's index manifest under the bytes' sha256
    (mirrors/ondisk.py, so that it need not import the parser): every check still
    reads the manifest and looks at the blob and layout.json, and each damage shows."""
    config, _ = _made_copy(tmp_path, docroot, server)
    copy = tmp_path / "copy"
    manifest = copy / "v3/manifests/index/index.manifest.json"
    original = manifest.read_bytes()
    (record,) = json.loads(original)["data"]
    blob = copy / f"blobs/sha256/{record['checksum'][:2]}/{record['checksum']}"
    kept = Path(os.environ["XDG_CACHE_HOME"]) / "mirrorsync" / "index-manifests"
    kept.unlink(missing_ok=True)

    def check() -> list[str]:
        done = run_cli("-c", str(config), "status", "--check", cwd=tmp_path)
        assert done.returncode == (0 if not done.stdout else 1), done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return [
            ln.removesuffix(" (the next 'mirrorsync mirror' rebuilds it)")
            for ln in done.stdout.splitlines()
        ]

    assert check() == [] and kept.is_file()  # parsed once, kept
    assert check() == []  # from what was kept
    other = json.loads(original)
    other["data"][0]["checksum"] = "f" * 64
    manifest.write_text(json.dumps(other))  # valid, naming another index
    assert check() == [
        f"mirror local: copy damaged on disk: {manifest} names index ffffffffffff, the"
        f" published one is {record['checksum'][:12]}"
    ]
    manifest.write_bytes(original)
    assert check() == []
    index = blob.read_bytes()
    blob.write_bytes(index[:-1])
    size = record["contentLength"]
    assert check() == [
        f"mirror local: copy damaged on disk: its index blob {blob} is {size - 1} bytes,"
        f" the index manifest says {size}"
    ]
    blob.write_bytes(index)
    shutil.copy(copy / "v3/layout.json", tmp_path / "layout.json")
    (copy / "v3/layout.json").unlink()
    assert check() == [f"mirror local: copy damaged on disk: {copy}/v3/layout.json is gone"]
    shutil.copy(tmp_path / "layout.json", copy / "v3/layout.json")
    manifest.rename(tmp_path / "elsewhere.json")
    manifest.symlink_to(tmp_path / "elsewhere.json")  # its bytes are the kept ones
    (line,) = check()
    assert line.startswith(f"mirror local: copy unreadable on disk: {manifest}: a symbolic link")
    manifest.unlink()
    manifest.write_bytes(original + b" " * (1 << 20))  # an index manifest is not 1 MiB
    (line,) = check()
    assert line.startswith(f"mirror local: copy unreadable on disk: {manifest}: larger than")
    kept.write_bytes(b"\x00 not marshal")  # a damaged entry: parsed again, and kept again
    manifest.write_bytes(original)
    assert check() == []
    assert check() == []


def test_repair_rebuilds_a_copy_whose_index_is_gone(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    config, _ = _made_copy(tmp_path, docroot, server)
    copy = tmp_path / "copy"
    before = _copy_index(copy)
    manifest = json.loads((copy / INDEX_MANIFEST).read_bytes())
    checksum = manifest["data"][0]["checksum"]
    index_blob = f"blobs/sha256/{checksum[:2]}/{checksum}"
    (copy / index_blob).unlink()
    found = _verify(tmp_path, config, "--json")
    assert found.returncode == 1
    assert json_lines(found.stdout) == [
        {
            "mirror": "local",
            "path": index_blob,
            "kind": "missing",
            "spec": None,
            "problem": "index blob missing",
        }
    ]
    check = run_cli("-c", str(config), "status", "--check", cwd=tmp_path)
    assert check.returncode == 1 and "copy missing on disk: its index blob" in check.stdout
    repaired = _verify(tmp_path, config, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired: the published index was gone: rebuilt the copy" in repaired.stdout
    assert "(rebuilt, version 1)" in repaired.stdout
    assert _copy_index(copy) == before
    assert _verify(tmp_path, config, "--checksums").returncode == 0


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")
def test_repair_writes_the_key_files_again(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    home = tmp_path / "gnupg"
    make_signing_key(home)
    try:
        _publish_upstream(docroot, _graph(), home)
        (fingerprint,) = fingerprints(home)
    finally:
        stop_agent(home)
    text = _config_text(
        tmp_path,
        server,
        "",
        f"    verify_signatures: true\n    trusted_keys: [{fingerprint}]",
    )
    config = write_config(tmp_path / "c.yaml", text)
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "copy"
    key_index = copy / "v3/manifests/key/keys.manifest.json"
    key_manifest = copy / f"v3/manifests/key/{fingerprint}.key.manifest.json"
    written = key_index.read_bytes(), key_manifest.read_bytes()
    key_index.unlink()
    found = _verify(tmp_path, config)
    assert found.returncode == 1
    assert found.stdout.splitlines() == [
        "mirror local: v3/manifests/key/keys.manifest.json: key index manifest missing"
    ]
    repaired = _verify(tmp_path, config, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired: key files written again by the copy run (unchanged, version 1)" in (
        repaired.stdout
    )
    assert (key_index.read_bytes(), key_manifest.read_bytes()) == written


def test_the_health_model_reads_a_copy_missing_on_disk_from_facts(
    tmp_path: Path, server: FixtureServer
) -> None:
    """assess() does no I/O: what read() found on disk is handed to it."""
    from datetime import UTC, datetime

    from mirrorsync import health
    from mirrorsync.config import parse_config
    from mirrorsync.store.mirrors import MirrorStatus

    config = parse_config(_config_text(tmp_path, server, ""), str(tmp_path / "c.yaml"))
    at = "2026-12-01T00:00:00.000000Z"
    copy = MirrorStatus("local", "/srv/copy", "test", "develop", 2, 5, 100, at, at, None)
    now = datetime(2026, 12, 1, 1, tzinfo=UTC)
    fine = health.assess("db", config, now, [], {}, [copy], {}, [], max_age=None, whole=False)
    assert fine.healthy and fine.copies[0].state == "ok"
    gone = health.assess(
        "db",
        config,
        now,
        [],
        {},
        [copy],
        {},
        [],
        max_age=None,
        whole=False,
        on_disk={"local": "copy missing on disk: /srv/copy/v3/layout.json is gone"},
    )
    assert [(p.kind, p.line) for p in gone.problems] == [
        (
            "copy_missing",
            "mirror local: copy missing on disk: /srv/copy/v3/layout.json is gone"
            " (the next 'mirrorsync mirror' rebuilds it)",
        )
    ]
    assert gone.copies[0].state == "missing on disk" and gone.counts()["copy_missing"] == 1
