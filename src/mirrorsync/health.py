"""The health model: one assessment of everything mirrorsync keeps, read by
``status``, ``status --check``, ``status --json`` and the metrics alike.

:func:`read` loads the rows (the store answers every query) and :func:`assess`
decides, from those rows alone, each stack's, copy's, webhook's and source's
state and every problem. A problem is one line, ``SUBJECT: WHAT``; its
``kind`` is one of :data:`KINDS` (the ``kind`` label of
``mirrorsync_problems``). The README's "status --check" section documents each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from mirrorsync.errors import NoDatabaseError
from mirrorsync.records import record
from mirrorsync.store import Store, overview  # overview: status's readers alone (start-up)
from mirrorsync.store import health as store_health
from mirrorsync.store.health import UNFETCHED, ManifestCounts
from mirrorsync.store.overview import LeftOut
from mirrorsync.units import human_duration, human_time, parse_time, plural

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Protocol

    from mirrorsync.location import ReadLocation

    class SourceConfig(Protocol):
        @property
        def name(self) -> str: ...
        @property
        def manifest_policy(self) -> str: ...

    class CopyConfig(Protocol):
        @property
        def name(self) -> str: ...
        @property
        def is_directory(self) -> bool: ...

    class Config(Protocol):
        """What the health model reads of a configuration: a full ``config.Config``, or
        the ``config_cache.StatusConfig`` that ``status`` reads (its compiled cache)."""

        @property
        def database_path(self) -> ReadLocation: ...
        @property
        def sources(self) -> Sequence[SourceConfig]: ...
        @property
        def mirrors(self) -> Sequence[CopyConfig]: ...


#: How old the oldest undelivered event of a webhook may be (``--max-pending-age``).
DEFAULT_MAX_PENDING_AGE = 3600.0

#: Every kind of problem (``--check`` prints them by subject: sources, stacks, copies, webhooks).
KINDS = (
    "no_database",  # no database yet (none at the path, or an empty PostgreSQL database)
    "source_never_synced",  # a configured source with no stack in the database
    "source_failing",  # the source's catalogue (or pages) could not be read
    "stack_never_synced",  # a stack that has no version yet
    "stack_first_sync_failed",  # its first sync failed: no version yet
    "stack_sync_failed",  # its last sync failed (its last good version is kept)
    "manifests_bad_signature",
    "manifests_missing",
    "manifests_malformed",
    "manifests_failed",  # could not be fetched (HTTP error, wrong digest)
    "crawl_incomplete",  # manifests never fetched, or a pass stopped before its end
    "stack_stale",  # last checked longer ago than --max-age
    "copy_never_published",
    "copy_failed",  # its last publish failed: it keeps its last published state
    "copy_left_out",  # a spec left out of the copy, and why
    "copy_wanted_missing",  # its environments or hashes name a spec no synced stack holds
    "copy_missing",  # its published index or layout is not on disk as published (rm -rf)
    "copy_stale",  # last checked longer ago than --max-age
    "webhook_disabled",  # the receiver answered 410 Gone
    "webhook_dead",  # deliveries that failed past the webhook's max_age
    "webhook_pending_old",  # the oldest undelivered event is older than --max-pending-age
)

_MANIFEST_KINDS = (
    ("bad_signature", "manifests_bad_signature", "with a bad signature"),
    ("missing", "manifests_missing", "missing"),
    ("malformed", "manifests_malformed", "malformed"),
    ("error", "manifests_failed", "that could not be fetched"),
)


@record(frozen=True, slots=True)
class Problem:
    kind: str  # one of KINDS
    subject: str  # "src:release/stack", "source NAME", "mirror NAME", "webhook NAME", a database
    line: str  # "SUBJECT: WHAT", what ``--check`` prints

    @property
    def what(self) -> str:
        return self.line[len(self.subject) + 2 :]


@record(frozen=True, slots=True)
class StackHealth:
    row: overview.StackStatus
    state: (
        str  # ok | syncing | gone | never synced | failed | manifests failing | incomplete | stale
    )
    manifests: ManifestCounts | None  # None: the source crawls no manifests
    problems: tuple[Problem, ...]

    @property
    def subject(self) -> str:
        return f"{self.row.source}:{self.row.release}/{self.row.stack}"


@record(frozen=True, slots=True)
class CopyHealth:
    row: overview.MirrorStatus
    state: str  # ok | never published | failed | missing on disk | partial | stale | not in config
    left_out: tuple[LeftOut, ...]
    problems: tuple[Problem, ...]
    kept: tuple[overview.Kept, ...] = ()  # held although upstream deleted them (keep:)


@record(frozen=True, slots=True)
class WebhookHealth:
    row: overview.WebhookSummary
    state: str  # enabled | disabled | not in config | dead events | late
    problems: tuple[Problem, ...]


@record(frozen=True, slots=True)
class SourceHealth:
    name: str
    state: str  # ok | never synced | failing
    error: str | None


@record(frozen=True, slots=True)
class Health:
    database: str
    database_exists: bool
    stacks: tuple[StackHealth, ...] = ()
    copies: tuple[CopyHealth, ...] = ()
    webhooks: tuple[WebhookHealth, ...] = ()
    sources: tuple[SourceHealth, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Problems by kind, every kind present (0 when none)."""
        out = dict.fromkeys(KINDS, 0)
        for p in self.problems:
            out[p.kind] += 1
        return out


def no_database(config: Config) -> Health:
    where = str(config.database_path)
    return Health(
        where,
        database_exists=False,
        problems=(
            Problem("no_database", where, f"{where}: no database yet: nothing has been synced"),
        ),
    )


@asynccontextmanager
async def assessed(
    config: Config,
    now: datetime,
    *,
    max_age: float | None = None,
    max_pending_age: float = DEFAULT_MAX_PENDING_AGE,
    release: str | None = None,
    stack: str | None = None,
    opener: Callable[[ReadLocation], Awaitable[Store]] = Store.open_read_only,
) -> AsyncIterator[tuple[Health, Store | None]]:
    """Open the database read-only (with ``opener``: ``Store.open_read_only``, or
    ``store.readonly.opened`` for a SQLite file read with no event loop) and
    :func:`read` it: the health, and the store, open until the block ends (status
    reads the count of distinct specs on it). With no database yet (no file, or a
    PostgreSQL database without mirrorsync's schema), the one problem ``no database
    yet``, and no store."""
    try:
        store = await opener(config.database_path)
    except NoDatabaseError:
        yield no_database(config), None
        return
    async with store:
        health = await read(
            store, config, now, max_age, max_pending_age, release=release, stack=stack
        )
        yield health, store


async def read(
    store: Store,
    config: Config,
    now: datetime,
    max_age: float | None,
    max_pending_age: float = DEFAULT_MAX_PENDING_AGE,
    *,
    release: str | None = None,
    stack: str | None = None,
) -> Health:
    """Every row the assessment needs, then :func:`assess`."""
    rows = await overview.status(store, release=release, stack=stack)
    manifests = await store_health.manifest_counts(store)
    copies = await overview.statuses(store)
    hooks = await overview.summaries(store)
    left_out = await overview.left_out_by_copy(store)  # what each copy's last run refused
    kept = await overview.kept_by_copy(store)
    wanted_missing = await overview.wanted_missing_by_copy(store)
    on_disk = _copies_on_disk(config, copies)
    return assess(
        str(store.path),
        config,
        now,
        rows,
        manifests,
        copies,
        left_out,
        hooks,
        max_age=max_age,
        max_pending_age=max_pending_age,
        whole=release is None and stack is None,
        kept=kept,
        wanted_missing=wanted_missing,
        on_disk=on_disk,
    )


def _copies_on_disk(config: Config, copies: Sequence[overview.MirrorStatus]) -> dict[str, str]:
    """Copy name -> what is wrong with its published state on disk (a cheap check: the
    index manifest, its blob's length, layout.json), for each configured, published copy."""
    configured = {m.name: m for m in config.mirrors}
    out: dict[str, str] = {}
    for m in copies:
        if m.name not in configured or not m.version:
            continue
        if not configured[m.name].is_directory:
            continue  # an object store or registry: verify --mirror reads it, not this check
        from mirrorsync.mirrors.ondisk import disk_problem  # reads files; no copy machinery

        if problem := disk_problem(m.path, m.index_checksum):
            out[m.name] = problem
    return out


def assess(
    database: str,
    config: Config,
    now: datetime,
    rows: Sequence[overview.StackStatus],
    manifests: Mapping[tuple[str, str, str], ManifestCounts],
    copies: Sequence[overview.MirrorStatus],
    left_out: Mapping[str, Sequence[LeftOut]],
    hooks: Sequence[overview.WebhookSummary],
    *,
    max_age: float | None,
    max_pending_age: float = DEFAULT_MAX_PENDING_AGE,
    whole: bool = True,
    kept: Mapping[str, Sequence[overview.Kept]] | None = None,
    wanted_missing: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    on_disk: Mapping[str, str] | None = None,
) -> Health:
    """The health of everything, from rows alone (no I/O). ``whole``: ``rows`` are
    every stack (not a ``--release``/``--stack`` selection), so a configured
    source with none of them has never synced. ``on_disk``: copy name -> what is
    wrong with its files (read by :func:`read`; absent: fine)."""
    policies = {s.name: s.manifest_policy for s in config.sources}
    sources, source_problems = _sources(config, rows, whole)
    failing_sources = {s.name for s in sources if s.state == "failing"}
    stacks = tuple(_stack(r, manifests, policies, failing_sources, now, max_age) for r in rows)
    configured_copies = {m.name for m in config.mirrors}
    copy_states = tuple(
        _copy(
            m,
            m.name in configured_copies,
            left_out.get(m.name, ()),
            now,
            max_age,
            (kept or {}).get(m.name, ()),
            (wanted_missing or {}).get(m.name, ()),
            (on_disk or {}).get(m.name),
        )
        for m in copies
    )
    hook_states = tuple(_webhook(h, now, max_pending_age) for h in hooks)
    problems = (
        *source_problems,
        *(p for s in stacks for p in s.problems),
        *(p for c in copy_states for p in c.problems),
        *(p for h in hook_states for p in h.problems),
    )
    return Health(database, True, stacks, copy_states, hook_states, tuple(sources), problems)


def _sources(
    config: Config, rows: Sequence[overview.StackStatus], whole: bool
) -> tuple[list[SourceHealth], list[Problem]]:
    """A source is failing when its planning failed: ``sync_source`` records that
    as ``source NAME: ERROR`` on each of its stacks, said here once."""
    out: list[SourceHealth] = []
    problems: list[Problem] = []
    for source in config.sources:
        mine = [r for r in rows if r.source == source.name]
        prefix = f"source {source.name}: "
        errors = [r.last_error for r in mine if r.last_error and r.last_error.startswith(prefix)]
        subject = f"source {source.name}"
        if errors:
            error = errors[0][len(prefix) :]
            out.append(SourceHealth(source.name, "failing", error))
            problems.append(
                Problem("source_failing", subject, f"{subject}: catalogue failing: {error}")
            )
        elif not mine and whole:
            out.append(SourceHealth(source.name, "never synced", None))
            problems.append(
                Problem(
                    "source_never_synced",
                    subject,
                    f"{subject}: never synced: no stack of it in the database "
                    "(the log of 'mirrorsync once' says why)",
                )
            )
        else:
            out.append(SourceHealth(source.name, "ok", None))
    return out, problems


def _stack(
    r: overview.StackStatus,
    manifests: Mapping[tuple[str, str, str], ManifestCounts],
    policies: Mapping[str, str],
    failing_sources: set[str],
    now: datetime,
    max_age: float | None,
) -> StackHealth:
    subject = f"{r.source}:{r.release}/{r.stack}"
    problems: list[Problem] = []

    def problem(kind: str, what: str) -> None:
        problems.append(Problem(kind, subject, f"{subject}: {what}"))

    policy = policies.get(r.source, "none")  # a source no longer configured: no crawl
    counts = manifests.get((r.source, r.release, r.stack)) if policy != "none" else None
    source_error = r.source in failing_sources and bool(
        r.last_error and r.last_error.startswith(f"source {r.source}: ")
    )
    if not r.present and r.version:
        # Retired by its catalogue: its history stays, it is not watched any more.
        return StackHealth(r, "syncing" if r.syncing else "gone", counts, ())
    if r.version == 0:
        if r.last_error and not source_error:
            problem("stack_first_sync_failed", f"first sync failed: {r.last_error}")
        elif not r.syncing and not source_error:
            problem("stack_never_synced", "never synced")
        state = "failed" if r.last_error else "never synced"
    else:
        state = "ok"
        if r.last_error:
            state = "failed"
            if not source_error:  # said once, for its source
                problem("stack_sync_failed", f"last sync failed: {r.last_error}")
        if counts is not None:
            for status, kind, words in _MANIFEST_KINDS:
                n = counts.by_status.get(status, 0)
                if n:
                    sample = counts.sample.get(status)
                    problem(
                        kind,
                        f"{plural(n, 'spec manifest')} {words}"
                        + (f" (first: {sample})" if sample else ""),
                    )
                    state = "manifests failing" if state == "ok" else state
            if not r.syncing:
                unfetched = counts.by_status.get(UNFETCHED, 0)
                if unfetched or counts.behind_pass:
                    parts = []
                    if unfetched:
                        parts.append(
                            f"{unfetched} of {counts.members} spec manifests never fetched"
                        )
                    if counts.pass_started and counts.behind_pass:
                        parts.append(
                            f"the pass begun {human_time(counts.pass_started)} stopped with "
                            f"{counts.behind_pass} not fetched again"
                        )
                    problem(
                        "crawl_incomplete",
                        f"spec manifest crawl incomplete: {'; '.join(parts)}"
                        " (the next 'mirrorsync once' resumes it)",
                    )
                    state = "incomplete" if state == "ok" else state
        stale = None if r.syncing else _stale(r.last_checked, now, max_age)
        if stale:
            problem("stack_stale", stale)
            state = "stale" if state == "ok" else state
    if r.syncing:
        state = "syncing"
    return StackHealth(r, state, counts, tuple(problems))


def _stale(checked: str | None, now: datetime, max_age: float | None) -> str | None:
    """The problem of a stack or copy last checked longer than ``max_age`` ago, if it is."""
    if max_age is None or not checked:
        return None
    age = (now - parse_time(checked)).total_seconds()
    if age <= max_age:
        return None
    return (
        f"last checked {human_duration(age)} ago ({human_time(checked)}),"
        f" more than {human_duration(max_age)}"
    )


def _copy(
    m: overview.MirrorStatus,
    configured: bool,
    left_out: Iterable[LeftOut],
    now: datetime,
    max_age: float | None,
    kept: Iterable[overview.Kept] = (),
    wanted_missing: Iterable[tuple[str, str]] = (),
    on_disk: str | None = None,
) -> CopyHealth:
    subject = f"mirror {m.name}"
    problems: list[Problem] = []
    left = tuple(left_out)
    if not configured:  # no longer in the configuration: not updated any more
        return CopyHealth(m, "not in config", left, (), tuple(kept))

    def problem(kind: str, what: str) -> None:
        problems.append(Problem(kind, subject, f"{subject}: {what}"))

    state = "ok"
    if m.last_error:
        state = "failed"
        problem(
            "copy_failed",
            f"last publish failed: {m.last_error}"
            + (" (it keeps its last published state)" if m.version else ""),
        )
    elif not m.version:
        state = "never published"
        problem("copy_never_published", "never published")
    if on_disk:
        state = "missing on disk" if state == "ok" else state
        problem("copy_missing", f"{on_disk} (the next 'mirrorsync mirror' rebuilds it)")
    for spec in left:
        problem("copy_left_out", f"left out {spec.name}/{spec.hash[:7]}: {spec.reason}")
    for spec_hash, name in wanted_missing:  # an environment needs what upstream lacks
        problem("copy_wanted_missing", f"wanted but not in upstream: {name or '?'}/{spec_hash}")
    if left and state == "ok":
        state = "partial"
    checked = m.last_checked or m.last_published
    stale = None if m.last_error else _stale(checked, now, max_age)
    if stale:
        problem("copy_stale", stale)
        state = "stale" if state == "ok" else state
    return CopyHealth(m, state, left, tuple(problems), tuple(kept))


def _webhook(h: overview.WebhookSummary, now: datetime, max_pending_age: float) -> WebhookHealth:
    subject = f"webhook {h.name}"
    problems: list[Problem] = []

    def problem(kind: str, what: str) -> None:
        problems.append(Problem(kind, subject, f"{subject}: {what}"))

    if not h.configured:  # no longer in the configuration: nothing is sent to it
        return WebhookHealth(h, "not in config", ())
    state = "enabled" if h.enabled else "disabled"
    if not h.enabled:
        problem(
            "webhook_disabled",
            f"disabled: {h.disabled_reason or 'by an earlier answer'}"
            f" ({plural(h.pending_events, 'event')} pending);"
            f" 'mirrorsync webhooks retry --name {h.name}' enables it again",
        )
    if h.dead_events:
        problem(
            "webhook_dead",
            f"{plural(h.dead_events, 'event')} in "
            f"{plural(h.dead_deliveries, 'delivery', 'deliveries')} are dead "
            f"(oldest from {human_time(h.oldest_dead_at)}); "
            f"'mirrorsync webhooks retry --name {h.name} --dead' sends them again",
        )
        state = "dead events" if state == "enabled" else state
    if h.enabled and h.oldest_pending_at:
        age = (now - parse_time(h.oldest_pending_at)).total_seconds()
        if age > max_pending_age:
            problem(
                "webhook_pending_old",
                f"{plural(h.pending_events, 'event')} pending, the oldest from "
                f"{human_time(h.oldest_pending_at)} ({human_duration(age)} ago, more than "
                f"{human_duration(max_pending_age)})"
                + (f"; last error: {h.current_error}" if h.current_error else ""),
            )
            state = "late" if state == "enabled" else state
    return WebhookHealth(h, state, tuple(problems))


def stack_json(s: StackHealth) -> dict[str, object]:
    """One stack in the JSON vocabulary of ``status --json`` and the web view's API."""
    r = s.row
    return {
        "source": r.source,
        "release": r.release,
        "stack": r.stack,
        "present": r.present,
        "version": r.version,
        "spec_count": r.spec_count,
        "layout": r.layout,
        "last_checked_at": r.last_checked,
        "last_changed_at": r.last_changed,
        "last_error": r.last_error,
        "syncing": r.syncing,
        "state": s.state,
        "manifests": dict(sorted(s.manifests.by_status.items())) if s.manifests else None,
        "problems": [{"kind": p.kind, "problem": p.what} for p in s.problems],
    }
