"""What ``status`` reads of the store: the rows of the health model (``mirrorsync.health``).

The stacks' states, the copies' (with what each left out, kept and misses) and the
webhooks' summaries, and the count of distinct specs: the readers and row classes
that ``status``, ``status --check``, the metrics and the web view share, in a
module of their own, so that ``status`` (a monitoring check, run every minute)
does not load the store's writers, its event and history queries with them
(issue 31, start-up). ``queries`` (``status``, ``StackStatus``), ``mirrors`` and
``webhooks`` export their names here as they always did.
"""

from __future__ import annotations

from mirrorsync.records import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Sequence

    from mirrorsync.store.db import Store


@record(frozen=True, slots=True)
class StackStatus:
    source: str
    release: str
    stack: str
    present: bool
    version: int
    spec_count: int
    layout: str | None
    last_checked: str | None
    last_changed: str | None
    last_error: str | None
    syncing: str | None = None  # the instance that holds the stack's claim now (PostgreSQL)


#: The stored row holding event ``id`` (an SQL expression): its type, place and time.
def holding_row(event_id: str) -> str:
    return f"(SELECT x.id FROM event_rows x WHERE x.id <= {event_id} ORDER BY x.id DESC LIMIT 1)"


async def status(
    store: Store, *, release: str | None = None, stack: str | None = None
) -> list[StackStatus]:
    """Every stack (or those of ``release`` / named ``stack``), by source, release, name."""
    sql = (
        "SELECT src.name, st.release, st.name, st.present, st.version, st.spec_count, st.layout,"
        " st.last_checked, st.last_changed, st.last_error, st.id"
        " FROM stacks st JOIN sources src ON src.id = st.source_id WHERE 1 = 1"
    )
    params: list[object] = []
    for column, value in (("st.release", release), ("st.name", stack)):
        if value is not None:
            condition, param = name_filter(store, column, value)
            sql += f" AND {condition}"
            params.append(param)
    sql += " ORDER BY src.name, st.release, st.name"
    async with store.conn.execute(sql, params) as cursor:
        rows = await cursor.fetchall()
    held: dict[int, str] = {}
    if store.dialect.postgresql:  # who syncs each stack now; on SQLite one run holds all
        from mirrorsync.store import claims

        held = await claims.holders(store, claims.Kind.STACK)
    return [
        StackStatus(
            r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], held.get(int(r[10]))
        )
        for r in rows
    ]


async def distinct_specs(store: Store, stacks: Sequence[tuple[str, str, str]] | None = None) -> int:
    """How many different specs the stacks hold now (a spec in three stacks counts
    once): all stacks, or those ``(source, release, stack)`` named."""
    sql = "SELECT count(DISTINCT m.spec_id) FROM memberships m WHERE m.left IS NULL"
    params: list[object] = []
    if stacks is not None:
        wanted = set(stacks)
        async with store.conn.execute(
            "SELECT st.id, src.name, st.release, st.name FROM stacks st"
            " JOIN sources src ON src.id = st.source_id"
        ) as cursor:
            params = [r[0] for r in await cursor.fetchall() if (r[1], r[2], r[3]) in wanted]
        if not params:
            return 0
        sql += f" AND m.stack_id IN ({', '.join('?' for _ in params)})"
    async with store.conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def sql_glob(glob: str) -> str:
    """A command-line glob (fnmatch syntax, as in the configuration) as a SQL GLOB:
    the two differ only in how a set is negated (``[!...]`` and ``[^...]``)."""
    return glob.replace("[!", "[^")


def holds_nul(*names: str) -> bool:
    """Whether a name (from a URL, a query string) holds a NUL byte: no stored name
    does (PostgreSQL's text cannot, and psycopg refuses one in a parameter), so such
    a name matches nothing and is never sent to the database."""
    return any("\x00" in name for name in names)


def name_filter(store: Store, column: str, glob: str) -> tuple[str, str]:
    """SQL that ``column`` matches a name or glob, and its one parameter. A plain name
    is an equality (an index lookup on both databases), a glob the dialect's GLOB;
    one holding NUL matches nothing (SQLite's GLOB would stop at the NUL)."""
    if holds_nul(glob):
        return f"0 = 1 AND {column} = ?", ""
    if not any(ch in glob for ch in "*?["):
        return f"{column} = ?", glob
    return store.dialect.glob(column, "?"), sql_glob(glob)


#: The columns of a kept spec (``mirror_kept``), in :class:`Kept`'s order.
KEPT_COLUMNS = (
    "hash, name, left_upstream_at, stack_id, manifest_sha256, signer, record_json, left_copy_at"
)


@record(frozen=True, slots=True)
class LeftOut:
    """A spec a copy's last run left out, and why."""

    hash: str
    name: str
    reason: str


@record(frozen=True, slots=True)
class MirrorStatus:
    name: str
    path: str
    source: str
    release: str
    version: int
    binaries: int
    bytes: int
    last_published: str | None
    last_checked: str | None
    last_error: str | None
    index_checksum: str | None = None  # the published index blob (None: nothing yet)


async def left_out_by_copy(store: Store) -> dict[str, list[LeftOut]]:
    """Every copy's left-out specs (its last run's), by copy name."""
    found: dict[str, list[LeftOut]] = {}
    async with store.conn.execute(
        "SELECT m.name, l.hash, l.name, l.reason FROM mirror_left_out l"
        " JOIN mirrors m ON m.id = l.mirror_id ORDER BY m.name, l.name, l.hash"
    ) as cursor:
        for copy, *row in await cursor.fetchall():
            found.setdefault(copy, []).append(LeftOut(*row))
    return found


async def statuses(store: Store) -> list[MirrorStatus]:
    async with store.conn.execute(
        "SELECT m.name, m.path, src.name, m.release, m.version, m.binaries, m.bytes,"
        " m.last_published, m.last_checked, m.last_error, m.index_checksum"
        " FROM mirrors m JOIN sources src ON src.id = m.source_id"
        " WHERE m.forgotten_at IS NULL ORDER BY m.name"
    ) as cursor:
        return [MirrorStatus(*tuple(r)) for r in await cursor.fetchall()]


@record(frozen=True, slots=True)
class Kept:
    """A spec the copy held when upstream stopped listing it (``mirror_kept``)."""

    hash: str
    name: str
    left_upstream_at: str
    stack_id: int
    manifest_sha256: str | None
    signer: str | None
    record_json: str
    left_copy_at: str | None = None


async def kept_by_copy(store: Store) -> dict[str, list[Kept]]:
    """Every copy's kept specs, by copy name (name, then hash)."""
    found: dict[str, list[Kept]] = {}
    async with store.conn.execute(
        "SELECT m.name, "
        + ", ".join(f"k.{c.strip()}" for c in KEPT_COLUMNS.split(","))
        + " FROM mirror_kept k JOIN mirrors m ON m.id = k.mirror_id"
        " WHERE k.left_copy_at IS NULL AND k.back_upstream_at IS NULL"
        " ORDER BY m.name, k.name, k.hash"
    ) as cursor:
        for copy, *row in await cursor.fetchall():
            found.setdefault(copy, []).append(Kept(*row))
    return found


async def wanted_missing_by_copy(store: Store) -> dict[str, list[tuple[str, str]]]:
    """Every copy's wanted-but-not-in-upstream hashes (hash, name), by copy name."""
    found: dict[str, list[tuple[str, str]]] = {}
    async with store.conn.execute(
        "SELECT m.name, w.hash, w.name FROM mirror_wanted_missing w"
        " JOIN mirrors m ON m.id = w.mirror_id ORDER BY m.name, w.name, w.hash"
    ) as cursor:
        for copy, spec_hash, name in await cursor.fetchall():
            found.setdefault(str(copy), []).append((str(spec_hash), str(name)))
    return found


@record(frozen=True, slots=True)
class WebhookSummary:
    name: str
    url: str
    configured: bool
    enabled: bool
    disabled_reason: str | None
    pending_events: int
    pending_deliveries: int  # batches already formed and waiting
    dead_events: int
    dead_deliveries: int
    oldest_dead_at: str | None
    failures: int
    next_attempt_at: str | None
    last_success_at: str | None
    last_error: str | None
    last_error_at: str | None
    oldest_pending_at: str | None = None  # when the oldest event still to send occurred

    @property
    def current_error(self) -> str | None:
        """The last error, unless a delivery has succeeded since."""
        if self.last_error_at and (
            not self.last_success_at or self.last_error_at > self.last_success_at
        ):
            return self.last_error
        return None


async def summaries(store: Store) -> list[WebhookSummary]:
    """Every registered webhook with its pending and dead counts."""
    async with store.conn.execute(
        "SELECT w.name, w.url, w.configured, w.enabled, w.disabled_reason,"
        " (SELECT count(*) FROM webhook_outbox o"
        "   LEFT JOIN webhook_deliveries d ON d.id = o.delivery_id"
        "   WHERE o.webhook_id = w.id AND (o.delivery_id IS NULL OR d.state = 'pending')),"
        " (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id"
        "   AND d.state = 'pending'),"
        " (SELECT count(*) FROM webhook_outbox o JOIN webhook_deliveries d"
        "   ON d.id = o.delivery_id WHERE o.webhook_id = w.id AND d.state = 'dead'),"
        " (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id"
        "   AND d.state = 'dead'),"
        " (SELECT min(d.oldest_event_at) FROM webhook_deliveries d WHERE d.webhook_id = w.id"
        "   AND d.state = 'dead'),"
        " w.failures, w.next_attempt_at, w.last_success_at, w.last_error, w.last_error_at,"
        " (SELECT min(e.occurred_at) FROM webhook_outbox o"
        f" JOIN event_rows e ON e.id = {holding_row('o.event_id')}"
        "   LEFT JOIN webhook_deliveries d ON d.id = o.delivery_id"
        "   WHERE o.webhook_id = w.id AND (o.delivery_id IS NULL OR d.state = 'pending'))"
        " FROM webhooks w WHERE w.forgotten_at IS NULL ORDER BY w.name"
    ) as cursor:
        return [
            WebhookSummary(r[0], r[1], bool(r[2]), bool(r[3]), *r[4:])
            for r in await cursor.fetchall()
        ]
