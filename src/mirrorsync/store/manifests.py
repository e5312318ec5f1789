"""Spec manifests: what the crawler still has to fetch, what it found, and what pages show.

Work lists are read a page at a time by spec id (keyset pagination over the
memberships' primary key (stack_id, spec_id, ...) on SQLite, over slices of the
ascending arrays of membership_groups on PostgreSQL), so a stack of 100,000 specs
never sits in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from mirrorsync.errors import UsageError
from mirrorsync.formats.index import SpecInfo
from mirrorsync.store.db import Store
from mirrorsync.store.events import Where, record
from mirrorsync.store.overview import name_filter
from mirrorsync.store.specs import SPEC_COLUMNS, spec_from_row
from mirrorsync.text import bounded

OK = "ok"
MISSING = "missing"
MALFORMED = "malformed"
BAD_SIGNATURE = "bad_signature"
ERROR = "error"
STATUSES = (OK, MISSING, MALFORMED, BAD_SIGNATURE, ERROR)
MISSING_EVENT = "spec.manifest_missing"


@dataclass(frozen=True, slots=True)
class SpecRef:
    """One spec of a stack, with what it takes to name its files."""

    spec_id: int
    hash: str
    name: str
    version: str
    platform: str
    os: str
    target: str
    compiler: str | None  # "gcc@13.2.0"; None for a spec without one


@dataclass(frozen=True, slots=True)
class ManifestResult:
    """What one fetch of a spec's manifest found."""

    spec_id: int
    status: str
    problem: str | None = None
    tarball_size: int | None = None
    tarball_algorithm: str | None = None
    tarball_checksum: str | None = None
    spec_algorithm: str | None = None
    spec_checksum: str | None = None
    manifest_sha256: str | None = None  # of the bytes read and verified
    signer: str | None = None  # primary fingerprint of the key gpg accepted; None: unchecked


@dataclass(frozen=True, slots=True)
class StackTarget:
    """A stack to crawl or verify: where its mirror is and how many specs it holds."""

    id: int
    source: str
    release: str
    name: str
    mirror_root: str
    layout: str
    spec_count: int

    @property
    def label(self) -> str:
        return f"{self.source}:{self.release}/{self.name}"


_REF_COLUMNS = "s.id, s.hash, s.name, s.version, s.platform, s.os, s.target, s.compiler"


# -- crawl state ---------------------------------------------------------------


async def begin_crawl(store: Store, stack_id: int, policy: str, at: str) -> str:
    """The cutoff of this crawl: manifests fetched (ok) at or after it are not fetched again.

    ``new``: the empty string, so every ok manifest counts. ``all``: the start
    of the unfinished pass if a run was stopped during one, else ``at``.
    """
    if policy != "all":
        return ""
    async with store.transaction() as conn:
        async with conn.execute(
            "SELECT started_at, finished_at FROM manifest_crawls WHERE stack_id = ?", (stack_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None and row[1] is None:
            return str(row[0])
        await conn.execute(
            "INSERT INTO manifest_crawls (stack_id, started_at, finished_at) VALUES (?, ?, NULL)"
            " ON CONFLICT (stack_id) DO UPDATE"
            " SET started_at = excluded.started_at, finished_at = NULL",
            (stack_id, at),
        )
    return at


async def finish_crawl(store: Store, stack_id: int, at: str) -> None:
    async with store.transaction() as conn:
        await conn.execute(
            "UPDATE manifest_crawls SET finished_at = ? WHERE stack_id = ?", (at, stack_id)
        )


async def pending(
    store: Store, stack_id: int, cutoff: str, *, page: int = 500, signed: bool = False
) -> AsyncIterator[SpecRef]:
    """Current members of the stack without an ok manifest fetched at or after ``cutoff``
    (with its checksum on record, and with ``signed`` its signer: a manifest read
    before either was recorded, or before signatures were checked, is read again)."""
    params = {"cutoff": cutoff, "signed": int(signed)}
    async for ref in _current_members(store, stack_id, page, _UNFETCHED, params):
        yield ref


_UNFETCHED = (
    " AND NOT EXISTS (SELECT 1 FROM spec_manifests sm WHERE sm.stack_id = :stack"
    "   AND sm.spec_id = m.spec_id AND sm.status = 'ok' AND sm.fetched_at >= :cutoff"
    "   AND sm.manifest_sha256 IS NOT NULL AND (:signed = 0 OR sm.signer IS NOT NULL))"
)


async def count_pending(store: Store, stack_id: int, cutoff: str, *, signed: bool = False) -> int:
    """How many specs ``pending`` would give now: the crawl's total, for its progress."""
    async with store.conn.execute(
        "SELECT count(*) FROM memberships m WHERE m.stack_id = :stack AND m.left IS NULL"
        f"{_UNFETCHED}",
        {"stack": stack_id, "cutoff": cutoff, "signed": int(signed)},
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def members(store: Store, stack_id: int, *, page: int = 500) -> AsyncIterator[SpecRef]:
    """Every current member of the stack, by spec id, a page at a time."""
    async for ref in _current_members(store, stack_id, page, "", {}):
        yield ref


async def _current_members(
    store: Store, stack_id: int, page: int, condition: str, params: dict[str, object]
) -> AsyncIterator[SpecRef]:
    """Keyset pagination over the stack's current members: memory stays one page."""
    if store.dialect.postgresql:
        async for ref in _grouped_members(store, stack_id, page, condition, params):
            yield ref
        return
    after = 0
    while True:
        async with store.conn.execute(
            f"SELECT {_REF_COLUMNS} FROM memberships m JOIN specs s ON s.id = m.spec_id"
            " WHERE m.stack_id = :stack AND m.left IS NULL AND m.spec_id > :after"
            f"{condition} ORDER BY m.spec_id LIMIT :page",
            {**params, "stack": stack_id, "after": after, "page": page},
        ) as cursor:
            rows = list(await cursor.fetchall())
        for row in rows:
            yield SpecRef(*row)
        if len(rows) < page:
            return
        after = int(rows[-1][0])


async def _grouped_members(
    store: Store, stack_id: int, page: int, condition: str, params: dict[str, object]
) -> AsyncIterator[SpecRef]:
    """PostgreSQL's pages (migration 0015): the ``page`` least ids after the last
    page's of all the stack's open rows of membership_groups, each array searched
    by halves and sliced (ascending), so a page costs its own size, not the
    stack's; then those of them ``condition`` keeps."""
    ids = "g.spec_ids"
    start = f"width_bucket(CAST(:after AS INTEGER), {ids})"
    after = 0
    while True:
        async with store.conn.execute(
            f"SELECT {_REF_COLUMNS}, (TRUE{condition}) FROM (SELECT x.spec_id"
            f" FROM membership_groups g CROSS JOIN LATERAL unnest({ids}[{start} + 1"
            f" : {start} + :page]) AS x(spec_id) WHERE g.stack_id = :stack AND g.left IS NULL"
            " ORDER BY x.spec_id LIMIT :page) m JOIN specs s ON s.id = m.spec_id"
            " ORDER BY m.spec_id",
            {**params, "stack": stack_id, "after": after, "page": page},
        ) as cursor:
            rows = list(await cursor.fetchall())
        for row in rows:
            if row[-1]:
                yield SpecRef(*row[:-1])
        if len(rows) < page:
            return
        after = int(rows[-1][0])


async def record_results(
    store: Store, stack_id: int, results: Sequence[ManifestResult], at: str
) -> int:
    """Store a batch of fetch results in one transaction; return the events written.

    A manifest found missing that was not already known to be missing records a
    ``spec.manifest_missing`` event for the stack's current version.
    """
    if not results:
        return 0
    async with store.transaction() as conn:
        missing = [r.spec_id for r in results if r.status == MISSING]
        events = 0
        if missing:
            async with conn.execute(
                "SELECT source_id, release, version FROM stacks WHERE id = ?", (stack_id,)
            ) as cursor:
                row = await cursor.fetchone()
            assert row is not None, f"stack {stack_id} vanished"
            source_id, release, version = row
            # Once per stay missing: not again while the last fetch also found it missing.
            ids, id_param = store.dialect.id_list(missing)
            events = await record(
                conn,
                MISSING_EVENT,
                Where(source_id, release, stack_id, version, at),
                specs=f"FROM {ids} WHERE NOT EXISTS (SELECT 1 FROM spec_manifests sm"
                " WHERE sm.stack_id = ? AND sm.spec_id = j.value AND sm.status = 'missing')"
                " ORDER BY j.key",
                spec_id="j.value",
                params=(id_param, stack_id),
            )
        await conn.executemany(
            "INSERT INTO spec_manifests (stack_id, spec_id, status, problem,"
            " tarball_size, tarball_algorithm, tarball_checksum, spec_algorithm, spec_checksum,"
            " manifest_sha256, signer, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (stack_id, spec_id) DO UPDATE SET status = excluded.status,"
            " problem = excluded.problem, tarball_size = excluded.tarball_size,"
            " tarball_algorithm = excluded.tarball_algorithm,"
            " tarball_checksum = excluded.tarball_checksum,"
            " spec_algorithm = excluded.spec_algorithm, spec_checksum = excluded.spec_checksum,"
            " manifest_sha256 = excluded.manifest_sha256, signer = excluded.signer,"
            " fetched_at = excluded.fetched_at",
            [
                (
                    stack_id,
                    r.spec_id,
                    r.status,
                    None if r.problem is None else bounded(r.problem),
                    r.tarball_size,
                    r.tarball_algorithm,
                    r.tarball_checksum,
                    r.spec_algorithm,
                    r.spec_checksum,
                    r.manifest_sha256,
                    r.signer,
                    at,
                )
                for r in results
            ],
        )
    return events


# -- stacks to verify ----------------------------------------------------------


#: The status of a pages source's row: the size its page gives, never a fetched manifest.
PAGE = "page"


async def record_page_sizes(
    store: Store, stack_id: int, sizes: Mapping[str, int | None], at: str
) -> None:
    """The tarball sizes a pages source's pages give for a stack's specs (by hash), kept
    where a crawl keeps what a manifest says, with status ``page``."""
    async with store.transaction() as conn:
        await conn.executemany(
            "INSERT INTO spec_manifests (stack_id, spec_id, status, tarball_size, fetched_at)"
            # Cast: PostgreSQL types a parameter in a SELECT list from nothing else.
            f" SELECT CAST(? AS bigint), id, '{PAGE}', CAST(? AS bigint), CAST(? AS text)"
            " FROM specs WHERE hash = ?"
            " ON CONFLICT (stack_id, spec_id) DO UPDATE SET status = excluded.status,"
            " tarball_size = excluded.tarball_size, fetched_at = excluded.fetched_at",
            [(stack_id, size, at, spec_hash) for spec_hash, size in sorted(sizes.items())],
        )


async def stack_targets(
    store: Store,
    *,
    source: str | None = None,
    release: str | None = None,
    stack: str | None = None,
) -> list[StackTarget]:
    """Present, synced stacks matching the filters (names or globs), in a stable order."""
    sql = (
        "SELECT st.id, src.name, st.release, st.name, st.mirror_root, st.layout, st.spec_count"
        " FROM stacks st JOIN sources src ON src.id = st.source_id"
        " WHERE st.present = 1 AND st.mirror_root IS NOT NULL AND st.layout IS NOT NULL"
    )
    params: list[object] = []
    for column, value in (("src.name", source), ("st.release", release), ("st.name", stack)):
        if value is not None:
            condition, param = name_filter(store, column, value)
            sql += f" AND {condition}"
            params.append(param)
    sql += " ORDER BY src.name, st.release, st.name"
    async with store.conn.execute(sql, params) as cursor:
        return [StackTarget(*row) for row in await cursor.fetchall()]


# -- pages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageRow:
    """One spec of a package in a release, with the stacks that hold it now."""

    spec: SpecInfo
    stacks: tuple[str, ...]
    size: int | None


@dataclass(frozen=True, slots=True)
class ReleaseView:
    """The present stacks of one release of one source, and those whose specs a page lists."""

    source_id: int
    release: str
    stacks: dict[int, str]  # stack id -> label
    listed: tuple[int, ...]  # the root stack; without one, every stack


async def release_view(store: Store, release: str, source: str | None) -> ReleaseView:
    """The release's stacks; UsageError if no source or several sources have it."""
    sql = (
        "SELECT src.id, src.name, st.id, st.name FROM stacks st"
        " JOIN sources src ON src.id = st.source_id WHERE st.release = ? AND st.present = 1"
    )
    params: list[object] = [release]
    if source is not None:
        sql += " AND src.name = ?"
        params.append(source)
    async with store.conn.execute(sql, params) as cursor:
        rows = list(await cursor.fetchall())
    where = f"{source}:{release}" if source else release
    if not rows:
        raise UsageError(f"no synced release {where} in {store.path}")
    sources = {int(r[0]): str(r[1]) for r in rows}
    if len(sources) > 1:
        names = ", ".join(sorted(sources.values()))
        raise UsageError(f"release {release} exists in several sources ({names}); pass --source")
    stacks = {int(r[2]): str(r[3]) for r in rows}
    root = tuple(i for i, name in stacks.items() if name == "root")
    return ReleaseView(next(iter(sources)), release, stacks, root or tuple(sorted(stacks)))


async def release_packages(store: Store, view: ReleaseView) -> list[str]:
    """Names of every package the release's pages list, sorted."""
    marks = ", ".join("?" for _ in view.listed)
    async with store.conn.execute(
        "SELECT DISTINCT s.name FROM memberships m JOIN specs s ON s.id = m.spec_id"
        f" WHERE m.stack_id IN ({marks}) AND m.left IS NULL ORDER BY s.name",
        view.listed,
    ) as cursor:
        return [str(row[0]) for row in await cursor.fetchall()]


_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit


async def package_rows(store: Store, view: ReleaseView, package: str) -> list[PageRow]:
    """The specs of one package in the release, by hash, with stacks and tarball sizes.

    A spec's stacks are, as the generator has them, those holding it and those
    whose index lists it only with in_buildcache false. A size comes from an ok manifest of the root stack if it has one, else from
    the first stack by name that has one.
    """
    # The package's current memberships in the release's stacks (PostgreSQL reads no
    # other), in one query: its specs are those held by a listed stack.
    stack_marks = ", ".join("?" for _ in view.stacks)
    among = store.dialect.memberships_among(
        "m",
        "SELECT id FROM specs WHERE name = ?",
        f"g.left IS NULL AND g.stack_id IN ({stack_marks})",
    )
    held: dict[int, set[str]] = {}
    listed: set[int] = set()  # specs a listed stack holds: the page's
    async with store.conn.execute(
        f"WITH {among} SELECT spec_id, stack_id FROM m", (*view.stacks, package)
    ) as cursor:
        for spec_id, stack_id in await cursor.fetchall():
            held.setdefault(spec_id, set()).add(view.stacks[stack_id])
            if stack_id in view.listed:
                listed.add(spec_id)
    listed_ids, param = store.dialect.id_list(sorted(listed))
    async with store.conn.execute(
        f"SELECT s.id, {SPEC_COLUMNS} FROM specs s"
        f" WHERE s.id IN (SELECT j.value FROM {listed_ids}) ORDER BY s.hash",
        (param,),
    ) as cursor:
        specs = list(await cursor.fetchall())
    ids = [int(r[0]) for r in specs]
    id_of = {str(r[1]): int(r[0]) for r in specs}
    sizes: dict[int, tuple[bool, str, int]] = {}  # spec -> best (not root, stack, size)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        spec_marks = ", ".join("?" for _ in chunk)
        hashes = [str(r[1]) for r in specs[start : start + _CHUNK]]
        async with store.conn.execute(
            f"SELECT hash, stack_id FROM listed_uncached WHERE hash IN ({spec_marks})", hashes
        ) as cursor:
            for spec_hash, stack_id in await cursor.fetchall():
                if stack_id in view.stacks:
                    held[id_of[spec_hash]].add(view.stacks[stack_id])
        async with store.conn.execute(
            "SELECT spec_id, stack_id, tarball_size FROM spec_manifests"
            f" WHERE spec_id IN ({spec_marks}) AND status = 'ok' AND tarball_size IS NOT NULL",
            chunk,
        ) as cursor:
            for spec_id, stack_id, size in await cursor.fetchall():
                label = view.stacks.get(stack_id)
                if label is None:
                    continue
                candidate = (label != "root", label, int(size))
                if spec_id not in sizes or candidate < sizes[spec_id]:
                    sizes[spec_id] = candidate
    return [
        PageRow(
            spec=spec_from_row(r[1:]),
            stacks=tuple(sorted(held[r[0]])),
            size=sizes[r[0]][2] if r[0] in sizes else None,
        )
        for r in specs
    ]
