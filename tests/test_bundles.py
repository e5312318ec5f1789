"""Bundles of a copy for air-gapped sites, end to end with real processes.

Copy A is synced and copied from a loopback upstream (the fixture server); bundles
are made and imported by ``python -m mirrorsync`` processes. The receiving site's
configuration holds only ``database:`` (no source, no server): the import needs
no network. Spack installing from a received copy is in test_bundle_spack.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, database_value, run_cli, write_config
from mirrorsync.bundles.manifest import (
    MAX_KEY_BYTES,
    BundleFile,
    BundleManifest,
    member_name,
    parse,
)
from mirrorsync.bundles.reader import open_bundle, read_members
from mirrorsync.bundles.state import read_state
from mirrorsync.errors import BundleError
from mirrorsync.fixture.build import write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.signing import export_public_key, make_signing_key, stop_agent
from mirrorsync.fixture.specs import synthetic_specs
from mirrorsync.formats.manifest import parse_index_manifest
from mirrorsync.mirrors.layout import INDEX_MANIFEST, blob_relpath

EXIT_DATA = 65
SPECS = synthetic_specs(40, seed=28)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under the directory, by relative path (what byte-equal compares)."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@dataclass
class Site:
    tmp: Path
    docroot: Path
    server: FixtureServer
    config: Path  # A's site: source and copy A
    receiver: Path  # B's site: database only
    a: Path
    b: Path

    def upstream(self, first: int, last: int) -> None:
        write_v3_mirror(self.docroot / "cache", SPECS[first:last])

    def follow(self) -> None:
        """A follows upstream: sync, then copy."""
        done = run_cli("-c", str(self.config), "once", cwd=self.tmp)
        assert done.returncode == 0, done.stderr

    def export(self, out: str, *extra: str, env: dict[str, str] | None = None) -> Path:
        path = self.tmp / out
        done = run_cli("-c", str(self.config), "bundle", "export", "A", str(path), *extra,
                       cwd=self.tmp, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return path

    def import_(self, bundle: Path | str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli("-c", str(self.receiver), "bundle", "import", str(bundle), str(self.b),
                       *extra, cwd=self.tmp)  # fmt: skip


@pytest.fixture
def site(tmp_path: Path, docroot: Path, server: FixtureServer) -> Site:
    config = write_config(
        tmp_path / "a.yaml",
        f"""
database: {tmp_path / "a.db"}
sources:
  - {{name: up, kind: mirror, url: "{server.url}/cache", manifests: new}}
mirrors:
  - {{name: A, path: "{tmp_path / "A"}", source: up}}
http: {{concurrency: 4, per_host_rate: 1000, timeout: 5,
        retries: {{attempts: 2, backoff_initial: 0.01, backoff_max: 0.02}}}}
""",
    )
    receiver = write_config(tmp_path / "b.yaml", f"database: {tmp_path / 'b.db'}\n")
    s = Site(tmp_path, docroot, server, config, receiver, tmp_path / "A", tmp_path / "B")
    s.upstream(0, 15)
    s.follow()
    return s


@pytest.mark.usefixtures("backend")
def test_full_then_incremental_bundles_make_b_equal_a_with_only_the_changes_carried(
    site: Site,
) -> None:
    # The receiver's database is the backend's (SQLite, then PostgreSQL).
    write_config(site.receiver, f"database: {database_value(site.tmp)}\n")
    full = site.export("full.tar")
    done = site.import_(full)
    assert done.returncode == 0, done.stderr
    assert "imported version 1 of A (full)" in done.stdout
    assert tree(site.b) == tree(site.a) != {}

    # Upstream changes: 5 specs go, 5 come; A follows; the next bundle defaults to --since 1.
    old = read_state(site.a)
    site.upstream(5, 20)
    site.follow()
    new = read_state(site.a)
    changed = {p for p, v in new.items() if old.get(p) != v}
    listed = run_cli("-c", str(site.config), "bundle", "show", "--json", "--files",
                     str(site.export("week2.tar")), cwd=site.tmp)  # fmt: skip
    shown = json.loads(listed.stdout)
    assert (shown["from"], shown["to"], shown["full"]) == (1, 2, False)
    assert {f["path"] for f in shown["paths"]} == changed
    # Exactly the changes: 5 new specs' manifest and 2 blobs each, the new index and its
    # manifest; nothing of the 10 specs B holds already.
    assert len(changed) == 5 * 3 + 2
    assert len(shown["added"]) == 5 and len(shown["removed"]) == 5
    carried = run_cli("-c", str(site.config), "bundle", "list", str(site.tmp / "week2.tar"),
                      "--json", cwd=site.tmp)  # fmt: skip
    assert {f["path"] for f in json.loads(carried.stdout)} == changed
    with tarfile.open(site.tmp / "week2.tar") as tar:
        names = tar.getnames()
    assert names[0] == "bundle.json"
    assert len(names) - 1 == len({f["sha256"] for f in shown["paths"]})

    before = tree(site.b)
    dry = site.import_(site.tmp / "week2.tar", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would import version 2 of A (from version 1)" in dry.stdout
    assert tree(site.b) == before
    done = site.import_(site.tmp / "week2.tar", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["status"], report["from"], report["to"], report["version"]) == (
        "imported",
        1,
        2,
        2,
    )
    assert tree(site.b) == tree(site.a)  # the 5 specs that left wait out delete_after on both

    again = site.import_(site.tmp / "week2.tar")
    assert again.returncode == 0, again.stderr
    assert "already holds version 2 of A: nothing to import" in again.stdout
    assert tree(site.b) == tree(site.a)

    # The received copy is a copy: status, verify --mirror, its history and events.
    status = run_cli("-c", str(site.receiver), "status", cwd=site.tmp)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "no stack synced yet" not in status.stdout + status.stderr
    assert re.search(r"^A\s+\S+\s+2\s", status.stdout, re.M), status.stdout
    checked = run_cli("-c", str(site.receiver), "status", "--check", cwd=site.tmp)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checker = write_config(
        site.tmp / "b-check.yaml",
        f"database: {database_value(site.tmp)}\nmirrors:\n  - {{name: A, path: {site.b}}}\n",
    )
    verified = run_cli("-c", str(checker), "verify", "--mirror", "A", "--checksums",
                       cwd=site.tmp)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    events = run_cli("-c", str(site.receiver), "events", "--json", cwd=site.tmp)
    assert events.returncode == 0, events.stderr
    updated = [json.loads(line) for line in events.stdout.splitlines() if line.strip()]
    assert [(e["type"], e["source"], e["mirror"]["added"], e["mirror"]["removed"])
            for e in updated] == [("mirror.updated", "bundle:A", 15, 0),
                                  ("mirror.updated", "bundle:A", 5, 5)]  # fmt: skip
    listed = run_cli("-c", str(site.receiver), "bundle", "list", "--json", cwd=site.tmp)
    assert [(r["direction"], r["from"], r["to"]) for r in json.loads(listed.stdout)] == [
        ("import", 0, 1),
        ("import", 1, 2),
    ]
    # Nothing new since: the next export says so and writes nothing.
    nothing = run_cli("-c", str(site.config), "bundle", "export", "A", str(site.tmp / "w3.tar"),
                      cwd=site.tmp)  # fmt: skip
    assert nothing.returncode == 0 and "nothing new" in nothing.stderr
    assert not (site.tmp / "w3.tar").exists()


def test_paths_only_lists_what_the_receiver_lacks_and_dir_and_split_bundles_import(
    site: Site,
) -> None:
    full = site.export("full", "--dir")
    assert (full / "bundle.json").is_file()
    assert site.import_(full).returncode == 0
    old = read_state(site.a)
    site.upstream(5, 30)
    site.follow()
    paths = run_cli("-c", str(site.config), "bundle", "export", "A", "--paths-only",
                    cwd=site.tmp)  # fmt: skip
    assert paths.returncode == 0, paths.stderr
    new = read_state(site.a)
    assert paths.stdout.splitlines() == sorted(p for p, v in new.items() if old.get(p) != v)
    split = site.export("week2", "--since", "1", "--split", "40KiB")
    volumes = sorted(site.tmp.glob("week2.*"))
    assert len(volumes) >= 2 and all(v.stat().st_size <= 40 << 10 for v in volumes)
    for volume in volumes:  # each volume is a whole tar by itself
        with tarfile.open(volume) as tar:
            assert all(m.isfile() for m in tar.getmembers())
    # A truncated volume (the last one, cut in the middle of a member) is refused.
    before = tree(site.b)
    for i, volume in enumerate(volumes):
        cut = volume.read_bytes()
        if i == len(volumes) - 1:
            cut = cut[: len(cut) // 2]
        (site.tmp / f"cut.{i:03d}").write_bytes(cut)
    _refused(site, site.tmp / "cut", before, "truncated", "cut.")
    done = site.import_(split)
    assert done.returncode == 0, done.stderr
    assert tree(site.b) == tree(site.a)


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[tuple[Path, Path, str, str]]:
    """Two gpg homes, each with a signing key: the trusted one and another."""
    trusted, other = tmp_path / "gnupg-trusted", tmp_path / "gnupg-other"
    yield trusted, other, make_signing_key(trusted), make_signing_key(other)
    stop_agent(trusted)
    stop_agent(other)


def _refused(site: Site, bundle: Path, before: dict[str, bytes], *words: str) -> None:
    done = site.import_(bundle)
    assert done.returncode == EXIT_DATA, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirrorsync: error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert tree(site.b) == before


def test_gap_damaged_truncated_untrusted_and_hostile_bundles_are_refused_b_unchanged(
    site: Site, keys: tuple[Path, Path, str, str]
) -> None:
    trusted_home, other_home, trusted, other = keys
    key_file = site.tmp / "trusted.asc"
    key_file.write_bytes(export_public_key(trusted_home, trusted))
    site.export("v1.tar")
    site.upstream(5, 20)
    site.follow()
    v2 = site.export("v2.tar", "--sign", trusted, env={"GNUPGHOME": str(trusted_home)})
    site.upstream(10, 25)
    site.follow()
    v3 = site.export("v3.tar", "--sign", trusted, env={"GNUPGHOME": str(trusted_home)})
    write_config(site.receiver, f"database: {site.tmp / 'b.db'}\n")
    assert site.import_(site.tmp / "v1.tar").returncode == 0  # unsigned: no trusted_keys yet
    write_config(
        site.receiver,
        f"database: {site.tmp / 'b.db'}\nbundle: {{trusted_keys: [{key_file}]}}\n",
    )
    before = tree(site.b)

    # A gap: B is at version 1, this bundle joins 2 -> 3.
    _refused(site, v3, before, "versions 2 -> 3 of A", "at version 1", "gap")
    # One flipped byte in a blob: named, by its path in the copy.
    data = bytearray(v2.read_bytes())
    with tarfile.open(v2) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("files/") and m.size > 1000)
    data[member.offset_data + 100] ^= 0x01
    flipped = site.tmp / "flipped.tar"
    flipped.write_bytes(bytes(data))
    manifest = json.loads(tar_member(v2, "bundle.json"))
    path = next(f["path"] for f in manifest["files"] if member.name.endswith(f["sha256"]))
    _refused(site, flipped, before, path, "does not match its sha256")
    # Truncated: the volume ends inside a member.
    truncated = site.tmp / "truncated.tar"
    truncated.write_bytes(v2.read_bytes()[: member.offset_data + 700])
    _refused(site, truncated, before, "truncated", member.name)
    # Signed by a key B does not trust.
    untrusted = site.export("untrusted.tar", "--since", "1", "--sign", other,
                            env={"GNUPGHOME": str(other_home)})  # fmt: skip
    _refused(site, untrusted, before, "bundle.json.sig", "not in trusted_keys")
    # Unsigned, while trusted_keys is set.
    _refused(site, site.export("unsigned.tar", "--since", "1"), before, "not signed")
    # Hostile members: a path out of the copy, a link, a device, an oversize member. Refused
    # by the reader the import streams through, before a byte is written (in this process).
    for name, kind, problem in (
        ("../../evil", tarfile.REGTYPE, "not in the bundle manifest"),
        ("/etc/evil", tarfile.REGTYPE, "not in the bundle manifest"),
        ("files/" + "0" * 64, tarfile.SYMTYPE, "a symbolic link"),
        ("files/" + "0" * 64, tarfile.LNKTYPE, "a hard link"),
        ("files/" + "0" * 64, tarfile.CHRTYPE, "a character device"),
        (member.name, tarfile.REGTYPE, "larger than"),
    ):
        hostile = site.tmp / "hostile.tar"
        with tarfile.open(v2) as src, tarfile.open(hostile, "w", format=tarfile.GNU_FORMAT) as out:
            first = src.getmember("bundle.json")
            out.addfile(first, src.extractfile(first))
            for m in src.getmembers():
                if m.name == "bundle.json.sig" or m.name == "bundle.key.asc":
                    out.addfile(m, src.extractfile(m))
            bad = tarfile.TarInfo(name)
            bad.type = kind
            bad.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            bad.size = member.size + 1 if problem == "larger than" else 0
            out.addfile(bad, io.BytesIO(b"x" * bad.size) if bad.size else None)
        with pytest.raises(BundleError, match=problem):
            read_members(open_bundle(hostile), lambda d, w: lambda chunk: None, lambda d, w: None)
    assert tree(site.b) == before
    assert not (site.tmp / "evil").exists() and not Path("/etc/evil").exists()

    # In order, signed by the trusted key: both import, and B is A.
    assert site.import_(v2).returncode == 0
    assert site.import_(v3).returncode == 0
    assert tree(site.b) == tree(site.a)
    # An older bundle after a newer one: out of order.
    _refused(site, v2, tree(site.b), "versions 1 -> 2 of A", "at version 3", "out of order")


def tar_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_sigkill_during_import_leaves_b_old_or_new_and_a_clean_run_completes(site: Site) -> None:
    site.export("v1.tar")
    assert site.import_(site.tmp / "v1.tar").returncode == 0
    old_tree, old = tree(site.b), read_state(site.b)
    site.upstream(5, 40)
    site.follow()
    v2 = site.export("v2.tar")
    new = read_state(site.a)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MIRRORSYNC_TEST_IMPORT_DELAY": "0.02"}
    command = [sys.executable, "-m", "mirrorsync", "-c", str(site.receiver), "bundle", "import",
               str(v2), str(site.b)]  # fmt: skip
    rng = random.Random(28)
    states, kills = [], 0
    for _ in range(6):
        process = subprocess.Popen(
            command, cwd=site.tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.4, 1.8))  # ~90 members and ~90 renames at 0.02 s each
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
        now = read_state(site.b)  # what a reader of B's index finds: all of one version
        assert now in (old, new)
        states.append("new" if now == new else "old")
    assert kills >= 4 and "old" in states  # the kills landed mid-way
    done = site.import_(v2)
    assert done.returncode == 0, done.stderr
    assert tree(site.b) == tree(site.a) != old_tree
    listed = run_cli("-c", str(site.receiver), "bundle", "list", "--json", cwd=site.tmp)
    assert [r["to"] for r in json.loads(listed.stdout)] == [1, 2]


def test_a_site_without_sources_imports_says_once_needs_one_and_its_webhooks_hear_of_it(
    site: Site,
) -> None:
    from receiver import Receiver, new_secret

    done = run_cli("-c", str(site.receiver), "once", cwd=site.tmp)
    assert done.returncode == 2
    assert "sources: expected at least one source to sync" in done.stderr
    assert "bundle import" in done.stderr
    assert not (site.tmp / "b.db").exists()  # the refusal creates nothing
    secret = new_secret()
    with Receiver(secret) as receiver:
        write_config(
            site.receiver,
            f"database: {site.tmp / 'b.db'}\n"
            f"webhooks:\n  - name: closed\n    url: {receiver.url}\n    secret_env: HOOK_SECRET\n",
        )
        done = run_cli("-c", str(site.receiver), "bundle", "import", str(site.export("v1.tar")),
                       str(site.b), cwd=site.tmp, env={"HOOK_SECRET": secret})  # fmt: skip
        assert done.returncode == 0, done.stderr
        events = [e for r in receiver.acknowledged for e in r.events]
    (event,) = events
    assert (event["type"], event["source"], event["mirror"]["name"]) == (
        "mirror.updated",
        "bundle:A",
        "A",
    )
    assert event["mirror"]["added"] == 15


def _tar_header(name: str, size: int) -> bytes:
    """A GNU tar header for ``name``; a negative ``size`` written in base-256."""
    info = tarfile.TarInfo(name)
    info.size = max(size, 0)
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    if size < 0:
        block[124:136] = b"\xff" + (size % (1 << 88)).to_bytes(11, "big")
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_a_tar_member_of_negative_size_is_refused_before_a_byte_is_read(tmp_path: Path) -> None:
    bundle = tmp_path / "negative.tar"
    bundle.write_bytes(_tar_header("bundle.json", -5) + b"x" * (4 << 20) + b"\0" * 1024)
    with pytest.raises(BundleError, match="negative size"):
        open_bundle(bundle)


def test_a_control_member_past_the_first_ones_is_bounded_as_they_are(tmp_path: Path) -> None:
    index = b"{}"
    index_sha = hashlib.sha256(index).hexdigest()
    manifest_sha = hashlib.sha256(b"x").hexdigest()
    manifest = BundleManifest(
        "a", 0, None, 1, index_sha, "mirrorsync 0", "2026-01-01T00:00:00Z",
        (BundleFile(INDEX_MANIFEST, 1, manifest_sha),
         BundleFile(f"blobs/sha256/{index_sha[:2]}/{index_sha}", 2, index_sha)),
    )  # fmt: skip
    bundle = tmp_path / "late-key.tar"
    with tarfile.open(bundle, "w", format=tarfile.GNU_FORMAT) as out:
        for name, data in (
            ("bundle.json", manifest.render()),
            (member_name(manifest_sha), b"x"),
            ("bundle.key.asc", b"k" * (MAX_KEY_BYTES + 1)),  # past the leading control members
            (member_name(index_sha), index),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    opened = open_bundle(bundle)
    with pytest.raises(BundleError, match=r"bundle\.key\.asc oversize"):
        read_members(opened, lambda d, w: lambda chunk: None, lambda d, w: None)


def test_a_manifest_whose_state_counts_are_out_of_range_is_refused() -> None:
    index_sha = hashlib.sha256(b"{}").hexdigest()
    files = (BundleFile(INDEX_MANIFEST, 1, hashlib.sha256(b"x").hexdigest()),
             BundleFile(f"blobs/sha256/{index_sha[:2]}/{index_sha}", 2, index_sha))  # fmt: skip
    for state_files, state_bytes in ((-1, 0), (0, -1), (1 << 40, 0)):
        manifest = BundleManifest(
            "a", 0, None, 1, index_sha, "mirrorsync 0", "2026-01-01T00:00:00Z", files,
            state_files=state_files, state_bytes=state_bytes,
        )  # fmt: skip
        with pytest.raises(BundleError, match=r"state\.files or state\.bytes out of range"):
            parse(manifest.render())
    parse(BundleManifest("a", 0, None, 1, index_sha, "mirrorsync 0", "2026-01-01T00:00:00Z",
                         files, state_files=2, state_bytes=3).render())  # fmt: skip


def test_a_wrong_blob_of_the_right_size_already_in_the_copy_is_replaced(site: Site) -> None:
    # A file left in the receiving directory is trusted by its content, never by its
    # name and size: a blob with the right name and length but other bytes is rewritten.
    full = site.export("full.tar")
    blob = next(p for p in sorted(site.a.rglob("*")) if p.is_file() and "/blobs/" in p.as_posix())
    rel = blob.relative_to(site.a)
    planted = site.b / rel
    planted.parent.mkdir(parents=True)
    planted.write_bytes(bytes(len(blob.read_bytes())))  # zeros, the same length
    done = site.import_(full)
    assert done.returncode == 0, done.stderr
    assert planted.read_bytes() == blob.read_bytes()
    assert tree(site.b) == tree(site.a)


#: Loaded by the importing process (``sitecustomize``): every file under the receiving
#: directory opened for reading, one path a line, as the interpreter's audit hook sees it.
_READS_HOOK = """
import os, sys
_ROOT = os.environ["READS_UNDER"] + os.sep
_LOG = open(os.environ["READS_LOG"], "a", buffering=1)

def _hook(event, args):
    if event != "open" or isinstance(args[0], int):
        return
    path, mode, flags = os.fsdecode(os.fspath(args[0])), args[1], args[2]
    writes = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & 3
    if path.startswith(_ROOT) and not writes:
        _LOG.write(path[len(_ROOT):] + "\\n")

sys.addaudithook(_hook)
"""


def test_an_import_reads_each_file_of_the_new_state_once(site: Site) -> None:
    # The new state is read back to check it holds what its index names (before its
    # index manifest is put in place) and to record it: one reading does both.
    full = site.export("full.tar")
    hook = site.tmp / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_READS_HOOK)
    log = site.tmp / "reads.txt"
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{REPO / 'src'}", "READS_UNDER": str(site.b),
           "READS_LOG": str(log)}  # fmt: skip
    done = run_cli("-c", str(site.receiver), "bundle", "import", str(full), str(site.b),
                   cwd=site.tmp, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert tree(site.b) == tree(site.a)
    reads = log.read_text().splitlines()
    index_rel = blob_relpath(
        "sha256", parse_index_manifest((site.b / INDEX_MANIFEST).read_bytes()).checksum
    )
    manifests = [r for r in reads if r.endswith(".spec.manifest.json")]
    assert reads.count(index_rel) == 1, reads
    assert len(manifests) == len(set(manifests)) == 15, reads  # the copy's 15 specs
    held = tree(site.b).keys()  # its files (not a directory opened to sync it, a temporary)
    twice = sorted({r for r in reads if r in held and reads.count(r) > 1})
    assert twice == [], twice
    # What B recorded of its state (binaries, bytes of every file the index references)
    # is what A recorded of the same state, read back after publishing.
    recorded = "SELECT binaries, bytes FROM mirrors WHERE path LIKE ?"
    with contextlib.closing(sqlite3.connect(site.tmp / "a.db")) as a:
        expected = a.execute(recorded, (f"%{site.a.name}",)).fetchall()
    with contextlib.closing(sqlite3.connect(site.tmp / "b.db")) as b:
        assert b.execute(recorded, (f"%{site.b.name}",)).fetchall() == expected != []
