"""Prometheus metrics in text format, for node_exporter's textfile collector.

At the end of every run (not a dry run) ``once`` writes ``metrics.textfile``
whole: figures of that run, and figures read from the database (per stack spec
count and version, events by type). ``mirror`` and ``webhooks retry/replay``
rewrite the database's figures too (:func:`refresh`), keeping the last run's. The file is written to a temporary name in
the same directory and renamed over the old one, so a scrape never sees half a
file. ``mirrorsync_last_run_success_timestamp_seconds`` is carried over from the
previous file when a run fails, so "time since the last good run" stays right.

Webhook endpoints get their pending and dead event counts, read from the
outbox in the same database.

``mirrorsync_healthy`` and ``mirrorsync_problems{kind}`` are the health model's
(``mirrorsync.health``): the same problems ``status --check`` prints.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from mirrorsync import __version__, health
from mirrorsync.config import Config
from mirrorsync.errors import MetricsError
from mirrorsync.health import Health
from mirrorsync.store import Store, eventlog, overview
from mirrorsync.store import webhooks as webhook_store
from mirrorsync.sync.report import RunReport

PREFIX = "mirrorsync_"
LAST_SUCCESS = f"{PREFIX}last_run_success_timestamp_seconds"

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Sample:
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: name, type, help, and its samples (one per label set)."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    samples: Sequence[Sample]

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        for sample in self.samples:
            for label in sample.labels:
                if not _LABEL_RE.match(label):
                    raise ValueError(f"invalid label name {label!r} in {self.name}")


def gauge(name: str, help_text: str, value: float) -> Family:
    return Family(PREFIX + name, "gauge", help_text, [Sample(value)])


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            raise ValueError(f"metric {family.name} given twice")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels.items())
            lines.append(
                f"{family.name}{{{labels}}} {_number(sample.value)}"
                if labels
                else f"{family.name} {_number(sample.value)}"
            )
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, families: Iterable[Family], *, kept: str = "") -> None:
    """Write atomically: a temporary file beside ``path``, fsynced, then renamed over it.

    The temporary name does not end in ``.prom``, so node_exporter never reads it.
    The file is made world-readable (0644): node_exporter runs as another user.
    ``kept``: families carried over from the previous file as they were written.
    """
    text = kept + render(families)
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise MetricsError(f"{path}: cannot write metrics: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), 0o644)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise MetricsError(f"{path}: cannot write metrics: {exc.strerror}") from None


def previous_value(path: Path, name: str) -> float | None:
    """The value of an unlabelled sample in an existing metrics file, if any."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        metric, _, value = line.partition(" ")
        if metric == name:
            try:
                return float(value.strip())
            except ValueError:
                return None
    return None


def _epoch(timestamp: str | None) -> float | None:
    """mirrorsync's ``2026-11-01T12:00:00.000000Z`` as Unix seconds."""
    if not timestamp:
        return None
    try:
        when = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return when.timestamp()


def build_info() -> Family:
    """Which mirrorsync wrote the file (``mirrorsync_build_info{version="..."} 1``), so a
    dashboard can tell when the fleet runs mixed versions."""
    return Family(
        PREFIX + "build_info",
        "gauge",
        "The mirrorsync version that wrote these metrics (always 1).",
        [Sample(1, {"version": __version__})],
    )


def run_families(report: RunReport, last_success: float | None) -> list[Family]:
    """What this run did."""
    started = _epoch(report.started_at) or 0.0
    finished = _epoch(report.finished_at) or started + report.seconds
    if report.succeeded:
        last_success = finished
    statuses = ("changed", "unchanged", "removed", "failed", "skipped")
    families = [
        gauge(
            "last_run_start_timestamp_seconds",
            "When the last run started (Unix time).",
            started,
        ),
        gauge(
            "last_run_end_timestamp_seconds",
            "When the last run finished (Unix time).",
            finished,
        ),
        gauge("last_run_duration_seconds", "How long the last run took.", report.seconds),
        gauge(
            "last_run_success",
            "1 if the last run synced every source and stack, else 0.",
            1 if report.succeeded else 0,
        ),
        Family(
            PREFIX + "last_run_failures",
            "gauge",
            "Sources and stacks that failed in the last run.",
            [
                Sample(len(report.source_errors), {"kind": "source"}),
                Sample(sum(o.status == "failed" for o in report.stacks), {"kind": "stack"}),
                *(
                    [Sample(sum(m.status == "failed" for m in report.mirrors), {"kind": "mirror"})]
                    if report.mirrors
                    else []
                ),
            ],
        ),
        Family(
            PREFIX + "last_run_stacks",
            "gauge",
            "Stacks handled in the last run, by outcome.",
            [Sample(sum(o.status == s for o in report.stacks), {"status": s}) for s in statuses],
        ),
        gauge("last_run_events", "Events recorded by the last run.", report.events),
        gauge(
            "last_run_http_requests",
            "HTTP requests made by the last run, retries included.",
            report.tally.requests,
        ),
        gauge(
            "last_run_http_received_bytes",
            "Response body bytes downloaded by the last run.",
            report.tally.bytes,
        ),
        gauge("last_run_http_retries", "Requests retried in the last run.", report.tally.retries),
    ]
    if last_success is not None:
        families.append(
            gauge(
                "last_run_success_timestamp_seconds",
                "When the last run with no failure finished (Unix time).",
                last_success,
            )
        )
    return families


async def database_families(store: Store) -> list[Family]:
    """What the database holds after the run."""
    stacks = await overview.status(store)

    def per_stack(name: str, help_text: str, values: Iterable[float]) -> Family:
        return Family(
            PREFIX + name,
            "gauge",
            help_text,
            [
                Sample(v, {"source": s.source, "release": s.release, "stack": s.stack})
                for s, v in zip(stacks, values, strict=True)
            ],
        )

    families = [
        per_stack(
            "stack_specs", "Specs in the stack's current version.", (s.spec_count for s in stacks)
        ),
        per_stack(
            "stack_version", "The stack's current version number.", (s.version for s in stacks)
        ),
        per_stack(
            "stack_present",
            "1 while the catalogue lists the stack (or it is a mirror source), 0 once removed or never synced.",
            (int(s.present) for s in stacks),
        ),
        per_stack(
            "stack_failing",
            "1 if the stack's last check failed.",
            (int(s.last_error is not None) for s in stacks),
        ),
        per_stack(
            "stack_last_checked_timestamp_seconds",
            "When the stack was last checked (Unix time; 0 if never).",
            (_epoch(s.last_checked) or 0 for s in stacks),
        ),
        per_stack(
            "stack_last_changed_timestamp_seconds",
            "When the stack's content last changed (Unix time; 0 if never).",
            (_epoch(s.last_changed) or 0 for s in stacks),
        ),
    ]
    counts = await eventlog.event_counts(store)
    families.append(
        Family(
            PREFIX + "events_total",
            "counter",
            "Events recorded in the database, by type.",
            [Sample(n, {"type": t}) for t, n in sorted(counts.items())],
        )
    )
    families += await _mirror_families(store)
    hooks = [h for h in await webhook_store.summaries(store) if h.configured]
    for name, help_text, values in (
        (
            "webhook_pending_events",
            "Events queued for the webhook and not yet acknowledged (dead ones excluded).",
            [h.pending_events for h in hooks],
        ),
        (
            "webhook_dead_events",
            "Events whose delivery failed past max_age; 'webhooks retry --dead' resends them.",
            [h.dead_events for h in hooks],
        ),
        (
            "webhook_enabled",
            "0 once the receiver answered 410 Gone and the webhook was disabled.",
            [int(h.enabled) for h in hooks],
        ),
    ):
        samples = [Sample(v, {"webhook": h.name}) for h, v in zip(hooks, values, strict=True)]
        families.append(Family(PREFIX + name, "gauge", help_text, samples))
    families.append(
        Family(
            PREFIX + "webhook_oldest_pending_event_timestamp_seconds",
            "gauge",
            "When the oldest event still to be delivered to the webhook occurred (absent: none).",
            [
                Sample(at, {"webhook": h.name})
                for h in hooks
                if (at := _epoch(h.oldest_pending_at)) is not None
            ],
        )
    )
    return families


async def _mirror_families(store: Store) -> list[Family]:
    """Per local copy (config ``mirrors:``): what its published index holds, and its health."""
    from mirrorsync.store import mirrors as mirror_store

    copies = await mirror_store.statuses(store)
    if not copies:
        return []
    kept = await mirror_store.kept_by_copy(store)
    wanted_missing = await mirror_store.wanted_missing_by_copy(store)
    out = []
    for name, help_text, values in (
        (
            "mirror_binaries",
            "Binaries the copy's published index lists.",
            [m.binaries for m in copies],
        ),
        (
            "mirror_bytes",
            "Bytes of every file the copy's published index references.",
            [m.bytes for m in copies],
        ),
        ("mirror_version", "Published states of the copy so far.", [m.version for m in copies]),
        (
            "mirror_failing",
            "1 if the copy's last update failed.",
            [int(m.last_error is not None) for m in copies],
        ),
        (
            "mirror_last_published_timestamp_seconds",
            "When the copy's index was last replaced (Unix time; 0 if never).",
            [_epoch(m.last_published) or 0 for m in copies],
        ),
        (
            "mirror_kept_specs",
            "Specs the copy holds although upstream deleted them (keep: selected or a duration).",
            [len(kept.get(m.name, ())) for m in copies],
        ),
        (
            "mirror_wanted_missing_specs",
            "Hashes the copy's environments or hashes name that no synced stack holds.",
            [len(wanted_missing.get(m.name, ())) for m in copies],
        ),
    ):
        samples = [Sample(v, {"mirror": m.name}) for m, v in zip(copies, values, strict=True)]
        out.append(Family(PREFIX + name, "gauge", help_text, samples))
    return out


def health_families(health: Health) -> list[Family]:
    """What ``status --check`` says, as numbers: the same model (``mirrorsync.health``)."""
    return [
        gauge(
            "healthy",
            "1 if 'status --check' finds no problem (with no --max-age), else 0.",
            1 if health.healthy else 0,
        ),
        Family(
            PREFIX + "problems",
            "gauge",
            "Problems 'status --check' reports, by kind (README, 'status --check').",
            [Sample(n, {"kind": kind}) for kind, n in health.counts().items()],
        ),
    ]


def _last_run_text(path: Path) -> str:
    """The ``mirrorsync_last_run_*`` families of an existing metrics file, as written."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    kept = []
    for line in text.splitlines():
        words = line.split()
        name = words[2] if line.startswith("# ") and len(words) > 2 else re.split(r"[{ ]", line)[0]
        if name.startswith(PREFIX + "last_run_"):
            kept.append(line + "\n")
    return "".join(kept)


async def refresh(config: Config) -> Path | None:
    """Rewrite the metrics file after a command other than ``once`` changed what it
    reports (``mirror``, ``webhooks retry/replay``): the database's and the health
    model's figures anew, the last sync run's (``mirrorsync_last_run_*``) kept as
    they were. None when metrics are off."""
    path = config.metrics.textfile_path
    if path is None:
        return None
    families = [build_info()]
    async with await Store.open_read_only(config.database_path) as store:
        families += await database_families(store)
        families += health_families(await health.read(store, config, datetime.now(UTC), None))
    write_textfile(path, families, kept=_last_run_text(path))
    return path


async def export(config: Config, report: RunReport) -> Path | None:
    """Write the configured metrics file after a run; None when metrics are off.

    Raises :class:`MetricsError` naming the file when it cannot be written.
    """
    path = config.metrics.textfile_path
    if path is None or report.dry_run:
        return None
    families = [build_info(), *run_families(report, previous_value(path, LAST_SUCCESS))]
    async with await Store.open_read_only(config.database_path) as store:
        families += await database_families(store)
        families += health_families(await health.read(store, config, datetime.now(UTC), None))
    write_textfile(path, families)
    return path
