"""Hostile local state (issue 25, items 3, 4, 13, 14 and the migration gap).

Links planted in a copy, at export's temporary names and at the lock file; a copy
onto its own source or inside another copy; configuration from special files and
with a key given twice; read-only commands before the first sync; a database path
that is a directory; a database whose recorded migrations skip a number. Real
processes, real files, real SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from conftest import QUICK_RETRIES, REPO, database_value, run_cli, write_config
from mirrorsync.config import HttpConfig, MirrorSource, load_config, parse_config
from mirrorsync.errors import EXIT_DAMAGED, EXIT_USAGE, ConfigError, CopyError, StoreError
from mirrorsync.fetch import HttpClient, Url
from mirrorsync.fixture.build import write_v2_mirror, write_v3_mirror
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import Node, fake_hash, spec_node
from mirrorsync.lock import RunLock, lock_path
from mirrorsync.mirrors import files, layout
from mirrorsync.store import Store
from mirrorsync.store.location import Location, PostgresUrl
from mirrorsync.store.schema import migrations

INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"


def _nodes() -> list[Node]:
    return [
        spec_node(name, "1.0", fake_hash(f"hostile-local:{name}")) for name in ("zlib", "bzip2")
    ]


def _mirror_config(tmp_path: Path, url: str, copy: str = "", *, database: str = "") -> Path:
    """A mirror source at ``url``; with ``copy``, one copy (delete_after 0) at that path."""
    text = (
        f"database: {database or tmp_path / 'state.db'}\n"
        "sources:\n"
        f"  - name: up\n    kind: mirror\n    url: {url}\n    manifests: new\n"
    )
    if copy:
        text += (
            f"mirrors:\n  - name: local\n    path: {copy}\n    source: up\n    delete_after: 0\n"
        )
    return write_config(tmp_path / "c.yaml", text + QUICK_RETRIES)


def _upstream_blobs(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "blobs").rglob("*") if p.is_file()}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _one_failure(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("mirrorsync: failed:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- item 3: links in a copy, at export's temporary name, at the lock file -------------------


def test_copy_blobs_linked_elsewhere_leaves_elsewhere_untouched(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "up", _nodes(), signed=False)
    copy = tmp_path / "copy"
    config = _mirror_config(tmp_path, f"{server.url}/up", str(copy))
    first = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (copy / INDEX_MANIFEST).is_file()
    # Someone points the copy's blobs/ at another directory holding files of its own.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sha256/aa").mkdir(parents=True)
    (elsewhere / "sha256/aa/precious").write_bytes(b"keep me")
    (elsewhere / "notes.txt").write_bytes(b"keep me too")
    before = _tree(elsewhere)
    blobs = copy / "blobs"
    os.rename(blobs, tmp_path / "old-blobs")
    os.symlink(elsewhere, blobs)

    done = run_cli("-c", str(config), "mirror", cwd=tmp_path)
    assert _tree(elsewhere) == before  # nothing deleted as unreferenced, nothing written
    assert done.returncode == 1, done.stderr
    line = _one_failure(done.stderr)
    assert f"{blobs}: a symbolic link inside the copy" in line
    assert os.path.islink(blobs)


def test_copy_prefix_directory_linked_elsewhere_writes_nothing_outside(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "up", _nodes(), signed=False)
    prefixes = {name[:2] for name in _upstream_blobs(docroot / "up")}
    copy = tmp_path / "copy"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for prefix in prefixes:  # every blob the copy will write lands in a linked directory
        (copy / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        os.symlink(elsewhere, copy / "blobs/sha256" / prefix)
    config = _mirror_config(tmp_path, f"{server.url}/up", str(copy))

    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "a symbolic link inside the copy" in _one_failure(done.stderr)
    assert list(elsewhere.iterdir()) == []
    assert all((copy / "blobs/sha256" / p).is_symlink() for p in prefixes)
    assert not (copy / INDEX_MANIFEST).exists()


def test_the_copy_file_helpers_never_follow_a_link(tmp_path: Path) -> None:
    """What a run checks first (every link refused) holds in each helper too."""
    copy, elsewhere = tmp_path / "copy", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "target").write_bytes(b"outside")
    (copy / "blobs/sha256").mkdir(parents=True)
    os.symlink(elsewhere, copy / "blobs/sha256/ab")
    os.symlink(elsewhere / "target", copy / "blobs/sha256/cd")
    os.mkfifo(copy / "blobs/sha256/ef")
    with pytest.raises(CopyError, match="ab: a symbolic link inside the copy"):
        files.write_atomic(copy / "blobs/sha256/ab/abcd", b"blob", files.DEFAULT_MODES)
    with pytest.raises(CopyError, match="cd: a symbolic link inside the copy"):
        layout.read_if_present(copy / "blobs/sha256/cd")
    with pytest.raises(CopyError, match="cd: a symbolic link inside the copy"):
        files.size_of(copy / "blobs/sha256/cd")
    with pytest.raises(CopyError, match="ef: not a regular file"):
        layout.read_if_present(copy / "blobs/sha256/ef")  # at once, not blocked on the FIFO
    with pytest.raises(CopyError, match="a symbolic link inside the copy"):
        list(files.walk(copy))
    assert sorted(p.name for p in elsewhere.iterdir()) == ["target"]
    assert (elsewhere / "target").read_bytes() == b"outside"
    # The copy's own path may be a link: only what is under it may not.
    os.symlink(copy, tmp_path / "alias")
    (copy / "blobs/sha256/ab").unlink()
    (copy / "blobs/sha256/cd").unlink()
    (copy / "blobs/sha256/ef").unlink()
    files.write_atomic(tmp_path / "alias/blobs/sha256/ab/abcd", b"blob", files.DEFAULT_MODES)
    assert layout.read_if_present(tmp_path / "alias/blobs/sha256/ab/abcd") == b"blob"
    assert [rel for rel, _ in files.walk(tmp_path / "alias")] == ["blobs/sha256/ab/abcd"]


def test_export_pages_never_writes_through_a_link_at_a_temporary_name(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    write_v3_mirror(docroot / "up", _nodes(), signed=False)
    config = _mirror_config(tmp_path, f"{server.url}/up")
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    out = tmp_path / "pages"
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"untouched")
    for name in ("zlib", "bzip2"):  # the temporary name export used before
        (out / "default" / name).mkdir(parents=True)
        os.symlink(victim, out / "default" / name / ".specs.md.tmp")

    done = run_cli(
        "-c", str(config), "export", "pages", "--release", "default", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert victim.read_bytes() == b"untouched"
    for name in ("zlib", "bzip2"):
        page = out / "default" / name / "specs.md"
        assert not page.is_symlink()
        assert (
            f"package: {name}".encode() in page.read_bytes() or name.encode() in page.read_bytes()
        )
        leftovers = {p.name for p in page.parent.iterdir()} - {"specs.md", ".specs.md.tmp"}
        assert leftovers == set()


def test_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    target = tmp_path / "precious.txt"
    target.write_bytes(b"not a lock file")
    os.symlink(target, lock_path(database))
    with pytest.raises(StoreError, match="the lock file is a symbolic link"):
        RunLock(database).try_acquire()
    assert target.read_bytes() == b"not a lock file"

    config = _mirror_config(tmp_path, "file:///nonexistent/up", database=str(database))
    done = run_cli("-c", str(config), "once", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"mirrorsync: error: {lock_path(database)}: the lock file is a symbolic link; "
        "mirrorsync never follows it: remove the link"
    ]
    assert target.read_bytes() == b"not a lock file"


# -- item 4: a copy onto its own source, or inside another copy ---------------------------


def test_copy_onto_its_own_file_source_is_refused_at_check_and_load(tmp_path: Path) -> None:
    upstream = tmp_path / "up"
    write_v3_mirror(upstream, _nodes(), signed=False)
    before = _tree(upstream)
    # The same directory under another name: only the resolved real paths tell.
    os.symlink(upstream, tmp_path / "alias")
    for path in (upstream, tmp_path / "alias", upstream / "v3"):
        config = _mirror_config(tmp_path, f"file://{upstream}", str(path))
        for command in (("config", "check"), ("once",), ("mirror",)):
            done = run_cli("-c", str(config), *command, cwd=tmp_path)
            assert done.returncode == EXIT_USAGE, done.stderr
            assert f"c.yaml: mirrors[0].path: {str(path)!r} ({os.path.realpath(path)})" in (
                done.stderr
            )
            assert "overlaps the directory of source 'up'" in done.stderr
    assert _tree(upstream) == before
    assert not (tmp_path / "state.db").exists()


def test_nested_copies_are_refused(tmp_path: Path) -> None:
    text = (
        f"database: {tmp_path / 'state.db'}\n"
        "sources:\n  - {name: up, kind: mirror, url: 'https://example.org/up'}\n"
        "mirrors:\n"
        f"  - {{name: outer, path: {tmp_path / 'outer'}, source: up}}\n"
        f"  - {{name: inner, path: {tmp_path / 'link' / 'v3' / 'inner'}, source: up}}\n"
    )
    (tmp_path / "outer").mkdir()
    os.symlink(tmp_path / "outer", tmp_path / "link")
    config = write_config(tmp_path / "c.yaml", text)
    with pytest.raises(
        ConfigError, match=r"mirrors\[1\]\.path: .* and mirrors\[0\]\.path .* nested"
    ):
        load_config(str(config))
    done = run_cli("-c", str(config), "config", "check", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    assert "are nested: each copy deletes what its index does not list" in done.stderr
    # Side by side is fine, even with a common prefix in their names.
    write_config(tmp_path / "c.yaml", text.replace("link' / 'v3' / 'inner", "x"))
    fine = text.replace(str(tmp_path / "link" / "v3" / "inner"), str(tmp_path / "outer2"))
    load_config(str(write_config(tmp_path / "c.yaml", fine)))


# -- item 13: configuration from special files, keys given twice ------------------------


@pytest.mark.parametrize("kind", ["fifo", "zero", "directory", "large"])
def test_configuration_that_is_not_a_small_regular_file_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        path = tmp_path / "config.fifo"
        os.mkfifo(path)
        expect = "cannot read: a FIFO, socket or device, not a regular file"
    elif kind == "zero":
        path = Path("/dev/zero")
        expect = "cannot read: a FIFO, socket or device, not a regular file"
    elif kind == "directory":
        path = tmp_path
        expect = "cannot read: a directory, not a regular file"
    else:
        path = tmp_path / "big.yaml"
        path.write_bytes(b"# padding\n" * ((1 << 20) // 10 + 1))
        expect = "cannot read: larger than 1 MiB, not a configuration file"
    started = time.monotonic()
    # A real process: before, a FIFO blocked it (deaf to SIGTERM) and /dev/zero filled memory.
    done = run_cli("-c", str(path), "status", cwd=tmp_path, timeout=20)
    assert time.monotonic() - started < 15
    assert done.returncode == EXIT_USAGE
    assert done.stderr.splitlines() == [f"mirrorsync: error: {path}: {expect}"]


@pytest.mark.parametrize("kind", ["secret_file", "password_file"])
def test_a_secret_or_password_file_that_is_a_fifo_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    """The same rule as the configuration's: a FIFO would block the run (deaf to signals)."""
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    command: tuple[str, ...]
    if kind == "secret_file":
        extra = f"webhooks:\n  - {{name: h, url: 'http://127.0.0.1:9/h', secret_file: {fifo}}}\n"
        database, key = f"database: {tmp_path / 'm.db'}\n", "webhooks[0].secret_file"
        command = ("webhooks", "test", "--name", "h")
    else:
        extra = ""
        database = f"database: {{url: 'postgresql://u@127.0.0.1:9/x', password_file: {fifo}}}\n"
        key, command = "database.password_file", ("status",)
    config = tmp_path / "c.yaml"
    config.write_text(
        database + "sources:\n  - {name: up, kind: mirror, url: 'https://example.org/up'}\n" + extra
    )
    started = time.monotonic()
    done = run_cli("-c", str(config), *command, cwd=tmp_path, timeout=20)
    assert time.monotonic() - started < 15
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.splitlines() == [
        f"mirrorsync: error: {config}: {key}: cannot read {fifo}: "
        "a FIFO, socket or device, not a regular file"
    ]


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    text = (
        "sources:\n"
        "  - name: up\n"
        "    kind: mirror\n"
        "    url: https://example.org/up\n"
        "    verify_signatures: true\n"
        "    trusted_keys: [" + "A" * 40 + "]\n"
        "    verify_signatures: false\n"
    )
    config = write_config(tmp_path / "c.yaml", text)
    done = run_cli("-c", str(config), "config", "check", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.splitlines() == [
        f"mirrorsync: error: {config}: invalid YAML at line 7, column 5: key "
        "'verify_signatures' given twice (lines 5 and 7); keep one"
    ]
    with pytest.raises(ConfigError, match=r"key 'http' given twice \(lines 1 and 3\)"):
        parse_config("http: {}\nsources: []\nhttp: {timeout: 1}\n")
    # Keys merged in with << may still be overridden, as YAML intends.
    merged = parse_config(
        "sources:\n"
        "  - &base {name: up, kind: mirror, url: 'https://example.org/up'}\n"
        "  - <<: *base\n    name: up2\n"
    )
    assert [(s.name, s.url) for s in merged.sources if isinstance(s, MirrorSource)] == [
        ("up", "https://example.org/up"),
        ("up2", "https://example.org/up"),
    ]


# -- item 14: read-only moments write nothing -------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("mirror", "--dry-run"),
        ("mirror",),
        ("status",),
        ("status", "--check"),
        ("webhooks", "retry"),
    ],
)
def test_before_the_first_sync_nothing_is_created(tmp_path: Path, command: tuple[str, ...]) -> None:
    database = tmp_path / "state" / "sub" / "state.db"
    config = _mirror_config(tmp_path, "https://example.org/up", str(tmp_path / "copy"))
    config.write_text(
        config.read_text().replace(str(tmp_path / "state.db"), str(database))
        + "webhooks:\n  - {name: hook, url: 'https://example.org/hook', secret_env: HOOK}\n"
    )
    env = {"HOOK": "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="}
    done = run_cli("-c", str(config), *command, cwd=tmp_path, env=env)
    assert done.returncode in (1, 66), done.stderr
    assert "no database yet" in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize(
    "command", [("status",), ("status", "--check"), ("once",), ("once", "--dry-run"), ("events",)]
)
def test_a_database_path_that_is_a_directory_is_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    database = tmp_path / "db"
    database.mkdir()
    config = _mirror_config(tmp_path, "https://example.org/up", database=str(database))
    done = run_cli("-c", str(config), *command, cwd=tmp_path)
    assert done.returncode == 2  # a configuration problem, as `config check` says (issue 30)
    assert done.stderr.splitlines() == [
        f"mirrorsync: error: {database}: cannot open database: a directory; "
        "'database:' names a file"
    ]
    assert list(database.iterdir()) == []


def test_a_failed_sqlite_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    """aiosqlite's thread reported to a closed event loop: a traceback after the error."""
    code = (
        "import anyio, sys\n"
        "from pathlib import Path\n"
        "from mirrorsync.errors import StoreError\n"
        "from mirrorsync.store.db import _connect\n"
        "async def main() -> None:\n"
        "    path = Path(sys.argv[1])\n"
        "    try:\n"
        "        await _connect(path, f'file:{path}?mode=ro', uri=True)\n"
        "    except StoreError as exc:\n"
        "        print(exc)\n"
        "anyio.run(main)\n"
    )
    missing = tmp_path / "no" / "such.db"
    done = subprocess.run(
        [sys.executable, "-c", code, str(missing)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"{missing}: cannot open database: unable to open database file"
    assert done.stderr == ""


# -- migrations refuse a gap ------------------------------------------------------------


def test_bundled_migrations_are_numbered_without_a_gap() -> None:
    numbers = [number for number, _, _ in migrations()]
    assert numbers == list(range(1, len(numbers) + 1))


def _rows(database: Location) -> list[tuple[int, str]]:
    """schema_migrations as it is on disk or on the server."""
    if isinstance(database, PostgresUrl):
        import psycopg

        with psycopg.connect(database.url) as conn:
            got = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
            return [(int(v), str(n)) for v, n in got]
    with contextlib.closing(sqlite3.connect(database)) as conn:
        got = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
        return [(int(v), str(n)) for v, n in got]


@pytest.mark.usefixtures("backend")
def test_a_database_whose_migrations_skip_a_number_is_refused(tmp_path: Path) -> None:
    copy = str(tmp_path / "copy")
    config = _mirror_config(
        tmp_path, "https://example.org/up", copy, database=database_value(tmp_path)
    )
    database = load_config(str(config)).database_path

    async def make() -> None:
        # As a side branch left it: its own migration took number 4, ours is missing.
        async with await Store.open(database) as store, store.transaction() as conn:
            await conn.execute("DELETE FROM schema_migrations WHERE version = 4")

    anyio.run(make)
    before = _rows(database)
    newest = migrations()[-1][0]
    assert [v for v, _ in before] == [v for v in range(1, newest + 1) if v != 4]
    data = (tmp_path / "state.db").read_bytes() if isinstance(database, Path) else b""
    name = next(n for v, n, _ in migrations() if v == 4)
    for command in (("once",), ("status",), ("mirror",), ("events",)):
        done = run_cli("-c", str(config), *command, cwd=tmp_path)
        assert done.returncode == EXIT_DAMAGED, (command, done.stderr)
        assert done.stderr.splitlines() == [
            f"mirrorsync: error: {database}: the database records migrations up to {newest} "
            f"but not 0004_{name}; it was made by another branch of mirrorsync: open it with "
            "that one, or restore it from a backup (nothing was written)"
        ], command
    assert _rows(database) == before
    if isinstance(database, Path):  # the file itself, byte for byte
        assert (tmp_path / "state.db").read_bytes() == data


def test_a_download_never_writes_through_a_link_at_its_temporary_name(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """A link planted at a blob's temporary name during a run: refused, its target kept."""
    (docroot / "blob").write_bytes(b"upstream's bytes")
    outside = tmp_path / "outside"
    outside.write_bytes(b"not mirrorsync's")
    dest = tmp_path / "blob.tmp"
    dest.symlink_to(outside)

    async def fetch() -> None:
        async with HttpClient(HttpConfig()) as client:
            await client.download(Url(f"{server.url}/blob"), dest)

    with pytest.raises(OSError, match="symbolic links"):
        anyio.run(fetch)
    assert outside.read_bytes() == b"not mirrorsync's"


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_copy_of_a_v2_source_is_a_configuration_error(
    tmp_path: Path, docroot: Path, server: FixtureServer, dry_run: bool
) -> None:
    """Exit 2 from mirror (issue 30: one exit-code table): the configuration asks for what
    cannot be done; the run that synced the v2 source is not what failed."""
    write_v2_mirror(docroot / "v2", [spec_node("zlib", "1.3", fake_hash("v2copy"))])
    config = tmp_path / "c.yaml"
    config.write_text(
        f"database: {tmp_path / 'm.db'}\n"
        f"sources:\n  - {{name: old, kind: mirror, url: '{server.url}/v2', manifests: all}}\n"
        f"mirrors:\n  - {{name: c, path: {tmp_path / 'copy'}, source: old}}\n"
        f"{QUICK_RETRIES}"
    )
    run_cli("-c", str(config), "once", cwd=tmp_path)
    done = run_cli("-c", str(config), "mirror", *(["--dry-run"] if dry_run else []), cwd=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert (
        "mirrorsync: failed: mirror c: old:default/root is a v2 build cache; copies are made"
        in (done.stderr)
    )


def test_a_keeplist_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "keep.fifo"
    os.mkfifo(fifo)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"database: {tmp_path / 'm.db'}\n"
        "sources:\n  - {name: s, kind: mirror, url: 'https://example.org/up', manifests: all}\n"
        f"mirrors:\n  - {{name: c, path: {tmp_path / 'copy'}, source: s, hashes: {fifo}}}\n"
    )
    done = run_cli("-c", str(config), "status", cwd=tmp_path, timeout=20)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.splitlines() == [
        f"mirrorsync: error: {config}: mirrors[0].hashes: cannot read the keeplist {fifo}: "
        "a FIFO, socket or device, not a regular file"
    ]
