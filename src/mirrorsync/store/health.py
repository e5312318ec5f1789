"""What the health model (``mirrorsync.health``) reads beyond the status rows:
the spec manifests of each stack's current members, counted by status.

One query, grouped per stack and status, so its cost is one pass over the
current memberships, whatever the number of problems.
"""

from __future__ import annotations

from mirrorsync.records import field, record
from mirrorsync.store.db import Store

#: The status of a current member that has no manifest on record at all.
UNFETCHED = "unfetched"


@record(slots=True)
class ManifestCounts:
    """One stack's current members by manifest status (``ok``, ``missing``,
    ``malformed``, ``bad_signature``, ``error`` or ``unfetched``)."""

    members: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    #: One problem text per status (the smallest, so the answer is stable).
    sample: dict[str, str] = field(default_factory=dict)
    #: When the unfinished ``manifests: all`` pass began, if one was stopped.
    pass_started: str | None = None
    #: Members whose manifest was last fetched before that pass began.
    behind_pass: int = 0


async def manifest_counts(store: Store) -> dict[tuple[str, str, str], ManifestCounts]:
    """Per (source, release, stack) with current members: their manifests by status."""
    sql = (
        f"SELECT src.name, st.release, st.name, coalesce(sm.status, '{UNFETCHED}'), count(*),"
        " count(*) FILTER (WHERE c.started_at IS NOT NULL AND sm.fetched_at < c.started_at),"
        " min(sm.problem), min(c.started_at)"
        " FROM stacks st JOIN sources src ON src.id = st.source_id"
        " JOIN memberships m ON m.stack_id = st.id AND m.left IS NULL"
        " LEFT JOIN spec_manifests sm ON sm.stack_id = st.id AND sm.spec_id = m.spec_id"
        " LEFT JOIN manifest_crawls c ON c.stack_id = st.id AND c.finished_at IS NULL"
        " GROUP BY 1, 2, 3, 4"
    )
    out: dict[tuple[str, str, str], ManifestCounts] = {}
    async with store.conn.execute(sql) as cursor:
        for source, release, stack, status, n, behind, problem, started in await cursor.fetchall():
            counts = out.setdefault((str(source), str(release), str(stack)), ManifestCounts())
            counts.members += int(n)
            counts.by_status[str(status)] = int(n)
            counts.behind_pass += int(behind)
            if problem is not None:
                counts.sample[str(status)] = str(problem)
            if started is not None:
                counts.pass_started = str(started)
    return out
