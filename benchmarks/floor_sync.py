"""The floor of a whole-release sync: each step done the cheapest way, and nothing else.

Usage: python benchmarks/floor_sync.py BASE_URL DATABASE SCRATCH

Syncs every stack of every release of ``BASE_URL/cache_spack_io_index.json`` (v3
mirrors under ``BASE_URL``, as ``bench_release.py`` serves them) into DATABASE,
whose schema is mirrorsync's own (its bundled migrations), first sync or resync
alike. Steps, each timed:

  download  curl fetches the catalogue, then every stack's index manifest, then
            every index blob (``--parallel --parallel-max 8``) into SCRATCH
  sha256    of each blob as read back once, compared with its manifest
  decode    typed msgspec decode of what the database needs: each install's
            hash and ``in_buildcache`` with its node left raw, then the node's
            name, version, arch, parameters and compiler dependency only for
            hashes the database does not hold yet (the cyclic GC is off)
  insert    one transaction per stack: new specs, memberships opened and closed,
            the version row, one event per change (plain executemany, no checks)

No retries, limits, locks, signature or label checks, webhooks or progress. It
prints the seconds of each step, and what it wrote, as one JSON line.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from mirrorsync.formats.index import variants_from_parameters  # noqa: E402
from mirrorsync.store.schema import migrations  # noqa: E402

BUCKET = "s3://spack-binaries/"
LANGUAGES = ("c", "cxx", "fortran")


class Target(msgspec.Struct, gc=False):
    name: str


class Arch(msgspec.Struct, gc=False):
    platform: str = ""
    platform_os: str = ""
    target: str | Target = ""


class DepParams(msgspec.Struct, gc=False):
    virtuals: tuple[str, ...] = ()


class Dep(msgspec.Struct, gc=False):
    hash: str = ""
    parameters: DepParams | None = None


class Annotations(msgspec.Struct, gc=False):
    compiler: str | None = None


class Node(msgspec.Struct, gc=False):
    name: str
    version: str = ""
    arch: Arch | None = None
    parameters: msgspec.Raw = msgspec.Raw(b"{}")
    annotations: Annotations | None = None
    dependencies: tuple[Dep, ...] = ()


class NameVersion(msgspec.Struct, gc=False):
    name: str = ""
    version: str = ""


class Install(msgspec.Struct, gc=False):
    spec: msgspec.Raw
    in_buildcache: bool = False


class Database(msgspec.Struct, gc=False):
    installs: dict[str, Install]
    version: str = ""


class Document(msgspec.Struct, gc=False):
    database: Database


class Record(msgspec.Struct):
    mediaType: str
    checksum: str


class Manifest(msgspec.Struct):
    data: list[Record]


DOCUMENT = msgspec.json.Decoder(Document)
NODE = msgspec.json.Decoder(Node)
NAME_VERSION = msgspec.json.Decoder(NameVersion)
PARAMS = msgspec.json.Decoder(dict[str, Any])
MANIFEST = msgspec.json.Decoder(Manifest)


def curl(pairs: list[tuple[str, Path]]) -> None:
    config = "".join(f'url = "{url}"\noutput = "{path}"\n' for url, path in pairs)
    subprocess.run(
        ["curl", "--silent", "--fail", "--parallel", "--parallel-max", "8", "--config", "-"],
        input=config.encode(),
        check=True,
    )


def open_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        conn.execute("BEGIN")
        for number, _, sql in migrations():
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    return conn


def _statements(sql: str) -> list[str]:
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf)
            buf = ""
    return out


def main(base: str, database: str, scratch: str) -> int:
    gc.disable()
    steps = dict.fromkeys(("download", "sha256", "decode", "insert"), 0.0)
    work = Path(scratch)
    work.mkdir(parents=True, exist_ok=True)
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    started = time.perf_counter()
    curl([(f"{base}/cache_spack_io_index.json", work / "catalog.json")])
    catalog: dict[str, list[dict[str, str]]] = json.loads((work / "catalog.json").read_bytes())
    stacks = []  # (release, label, mirror root URL, scratch prefix)
    for release, entries in catalog.items():
        for k, entry in enumerate(entries):
            root = base + "/" + entry["url"].removeprefix(BUCKET).partition("/blobs/")[0]
            stacks.append((release, entry["label"], root, work / f"{k}-{release}"))
    curl(
        [
            (f"{root}/v3/manifests/index/index.manifest.json", Path(f"{p}.manifest"))
            for _, _, root, p in stacks
        ]
    )
    blobs = []
    for release, label, root, p in stacks:
        record = next(
            r
            for r in MANIFEST.decode(Path(f"{p}.manifest").read_bytes()).data
            if r.mediaType.startswith("application/vnd.spack.db")
        )
        c = record.checksum
        blobs.append((release, label, root, Path(f"{p}.index"), c))
    curl([(f"{root}/blobs/sha256/{c[:2]}/{c}", path) for _, _, root, path, c in blobs])
    steps["download"] = time.perf_counter() - started

    conn = open_db(database)
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO sources (name, kind, url) VALUES ('bench', 'catalog', ?)"
        " ON CONFLICT (name) DO NOTHING",
        (base,),
    )
    source_id = conn.execute("SELECT id FROM sources WHERE name = 'bench'").fetchone()[0]
    for release in catalog:
        if conn.execute(
            "INSERT INTO releases (source_id, name, present, added_at) VALUES (?, ?, 1, ?)"
            " ON CONFLICT DO NOTHING",
            (source_id, release, at),
        ).rowcount:
            conn.execute(
                "INSERT INTO event_rows (type, source_id, release, occurred_at)"
                " VALUES ('release.added', ?, ?, ?)",
                (source_id, release, at),
            )
    conn.execute("COMMIT")
    known: dict[str, int] = dict(conn.execute("SELECT hash, id FROM specs"))
    variants: dict[bytes, str] = {}
    wrote = {"specs": 0, "opened": 0, "closed": 0, "events": 0}

    for release, label, root, path, checksum in blobs:
        t0 = time.perf_counter()
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != checksum:
            sys.exit(f"{path}: sha256 is not {checksum}")
        t1 = time.perf_counter()
        installs = DOCUMENT.decode(data).database.installs
        cached = {h for h, i in installs.items() if i.in_buildcache}
        uncached = {h for h, i in installs.items() if not i.in_buildcache}
        row = conn.execute(
            "SELECT id, version, spec_count FROM stacks"
            " WHERE source_id = ? AND release = ? AND name = ?",
            (source_id, release, label),
        ).fetchone()
        stack_id, old_version, old_count = row if row else (None, 0, 0)
        current: dict[str, int] = {}
        if stack_id is not None:
            current = dict(
                conn.execute(
                    "SELECT s.hash, s.id FROM memberships m JOIN specs s ON s.id = m.spec_id"
                    " WHERE m.stack_id = ? AND m.left IS NULL",
                    (stack_id,),
                )
            )
        added = sorted(cached.difference(current))
        removed = sorted(set(current).difference(cached))
        compilers: dict[str, str | None] = {}
        new_rows = []
        for h in added:
            if h in known:
                continue
            node = NODE.decode(installs[h].spec)
            arch = node.arch or Arch()
            target = arch.target if isinstance(arch.target, str) else arch.target.name
            raw = bytes(node.parameters)
            text = variants.get(raw)
            if text is None:
                text = variants[raw] = json.dumps(
                    list(variants_from_parameters(PARAMS.decode(raw))), separators=(",", ":")
                )
            compiler = _compiler(node, installs, compilers)
            new_rows.append(
                (
                    h,
                    node.name,
                    node.version,
                    arch.platform,
                    arch.platform_os,
                    target,
                    compiler,
                    text,
                )
            )
        t2 = time.perf_counter()
        if row is not None and not added and not removed:  # as it was: no new version
            conn.execute(
                "UPDATE stacks SET index_checksum = ?, last_checked = ? WHERE id = ?",
                (checksum, at, stack_id),
            )
            steps["sha256"] += t1 - t0
            steps["decode"] += t2 - t1
            path.unlink()
            continue
        conn.execute("BEGIN")
        if stack_id is None:
            stack_id = conn.execute(
                "INSERT INTO stacks (source_id, release, name) VALUES (?, ?, ?) RETURNING id",
                (source_id, release, label),
            ).fetchone()[0]
        version = old_version + 1
        first = conn.execute("SELECT coalesce(max(id), 0) FROM specs").fetchone()[0] + 1
        conn.executemany(
            "INSERT INTO specs (hash, name, version, platform, os, target, compiler, variants,"
            f" first_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{at}')",
            new_rows,
        )
        for offset, new_row in enumerate(new_rows):
            known[new_row[0]] = first + offset
        conn.executemany(
            "INSERT INTO memberships (stack_id, spec_id, entered) VALUES (?, ?, ?)",
            ((stack_id, known[h], version) for h in added),
        )
        conn.executemany(
            "UPDATE memberships SET left = ? WHERE stack_id = ? AND spec_id = ? AND left IS NULL",
            ((version, stack_id, current[h]) for h in removed),
        )
        # As mirrorsync stores them (migration 0012): a version's spec events are one
        # row whose span of ids stands for the memberships it opened or closed.
        events: list[tuple[str, str, int | None]] = []
        if old_version == 0:
            events.append(("stack.added", release, None))
            conn.execute(
                "INSERT INTO event_rows (type, source_id, release, stack_id, stack_version,"
                f" occurred_at) VALUES ('stack.added', {source_id}, ?, {stack_id}, {version},"
                f" '{at}')",
                (release,),
            )
        for kind, span in (("spec.added", len(added)), ("spec.removed", len(removed))):
            if not span:
                continue
            (last,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'event_rows'"
            ).fetchone()
            conn.execute(
                "INSERT INTO event_rows (id, type, source_id, release, stack_id, stack_version,"
                f" occurred_at, span) VALUES (?, ?, {source_id}, ?, {stack_id}, {version},"
                f" '{at}', ?)",
                (last + 1, kind, release, span),
            )
            conn.execute(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = 'event_rows'", (last + span,)
            )
            events += [(kind, release, None)] * span
        old_uncached = {
            r[0]
            for r in conn.execute(
                "SELECT hash FROM listed_uncached WHERE stack_id = ?", (stack_id,)
            )
        }
        conn.executemany(
            "DELETE FROM listed_uncached WHERE stack_id = ? AND hash = ?",
            ((stack_id, h) for h in old_uncached - uncached),
        )
        conn.executemany(
            "INSERT INTO listed_uncached (stack_id, hash) VALUES (?, ?)",
            ((stack_id, h) for h in uncached - old_uncached),
        )
        count = old_count + len(added) - len(removed)
        conn.execute(
            "INSERT INTO stack_versions (stack_id, version, created_at, index_checksum,"
            " spec_count, added, removed) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (stack_id, version, at, checksum, count, len(added), len(removed)),
        )
        conn.execute(
            "UPDATE stacks SET present = 1, index_url = ?, mirror_root = ?, layout = 'v3',"
            " index_checksum = ?, version = ?, spec_count = ?, last_checked = ?,"
            " last_changed = ? WHERE id = ?",
            (f"{root}/blobs/sha256/{checksum[:2]}/{checksum}", root, checksum, version, count,
             at, at, stack_id),
        )  # fmt: skip
        conn.execute("COMMIT")
        t3 = time.perf_counter()
        del installs, data
        path.unlink()
        steps["sha256"] += t1 - t0
        steps["decode"] += t2 - t1
        steps["insert"] += t3 - t2
        wrote["specs"] += len(new_rows)
        wrote["opened"] += len(added)
        wrote["closed"] += len(removed)
        wrote["events"] += len(events)
    conn.close()
    print(json.dumps({"steps": steps, "stacks": len(blobs), **wrote}))
    return 0


def _compiler(node: Node, installs: dict[str, Install], memo: dict[str, str | None]) -> str | None:
    """FORMATS.md section 4: ``annotations.compiler``, else the dependency providing
    c, then cxx, then fortran, named by its own node's name and version."""
    if node.annotations is not None and node.annotations.compiler:
        return node.annotations.compiler.replace("@=", "@")
    chosen, rank = None, len(LANGUAGES)
    for dep in node.dependencies:
        if dep.parameters is None or not dep.parameters.virtuals:
            continue
        for i in range(rank):
            if LANGUAGES[i] in dep.parameters.virtuals:
                chosen, rank = dep.hash, i
                break
    if chosen is None:
        return None
    if chosen not in memo:
        install = installs.get(chosen)
        own = NAME_VERSION.decode(install.spec) if install else None
        memo[chosen] = f"{own.name}@{own.version}" if own and own.name and own.version else None
    return memo[chosen]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
