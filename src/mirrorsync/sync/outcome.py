"""What a run did, stack by stack: the record the CLI prints and logs summarise."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL
from mirrorsync.fetch import Tally
from mirrorsync.logs import fields
from mirrorsync.units import human_duration, human_size, plural

if TYPE_CHECKING:
    from mirrorsync.delivery import WebhookResult
    from mirrorsync.mirrors import MirrorOutcome

log = logging.getLogger("mirrorsync.sync")

Status = Literal["changed", "unchanged", "failed", "removed", "skipped"]


@dataclass
class ManifestTally:
    """What one stack's spec-manifest crawl found."""

    fetched: int = 0
    ok: int = 0
    missing: int = 0
    malformed: int = 0
    bad_signature: int = 0
    errors: int = 0  # fetches that failed for good (after retries)
    events: int = 0
    failure: str | None = None  # what stopped the crawl before it began
    first_problem: str | None = None  # of a bad signature or failed fetch

    def add(self, status: str, problem: str | None) -> None:
        self.fetched += 1
        if status in ("ok", "missing", "malformed", "bad_signature"):
            setattr(self, status, getattr(self, status) + 1)
        else:
            self.errors += 1
        if status in ("bad_signature", "error") and self.first_problem is None:
            self.first_problem = problem

    @property
    def problem(self) -> str | None:
        """Why this crawl counts as a failure: bad signatures or failed fetches (not missing)."""
        if self.failure:
            return self.failure
        parts = []
        if self.bad_signature:
            parts.append(f"{self.bad_signature} with a bad signature")
        if self.errors:
            parts.append(f"{self.errors} could not be fetched")
        if not parts:
            return None
        return f"spec manifests: {', '.join(parts)} (first: {self.first_problem})"


@dataclass
class StackOutcome:
    source: str
    release: str
    stack: str
    status: Status
    version: int = 0
    spec_count: int = 0
    added: int = 0
    removed: int = 0
    events: int = 0
    error: str | None = None
    seconds: float = 0.0
    tally: Tally = field(default_factory=Tally)
    manifests: ManifestTally | None = None  # None: no crawl (policy none, dry run, failed sync)
    # A dry run's plan: the hashes the index would add and remove (None otherwise).
    added_hashes: list[str] | None = None
    removed_hashes: list[str] | None = None
    skipped: str | None = None  # why another instance has it (status "skipped"): not a failure
    dry_run: bool = False  # nothing was kept: "changed" is what would change

    @property
    def label(self) -> str:
        return f"{self.source}:{self.release}/{self.stack}"


@dataclass
class RunReport:
    started_at: str
    finished_at: str = ""
    seconds: float = 0.0
    dry_run: bool = False
    stacks: list[StackOutcome] = field(default_factory=list)
    source_errors: list[tuple[str, str]] = field(default_factory=list)  # (source, message)
    release_events: int = 0
    tally: Tally = field(default_factory=Tally)
    webhooks: list[WebhookResult] = field(default_factory=list)
    interrupted: bool = False  # stopped by a signal before it finished
    fatal: str | None = None  # the error that ended the run for every stack (a full disk)
    fatal_exit: int = EXIT_PARTIAL  # its exit status (the database server gone: 69)
    metrics_error: str | None = None  # the metrics file could not be written
    mirrors: list[MirrorOutcome] = field(default_factory=list)  # local copies, after the sync

    @property
    def failures(self) -> list[str]:
        """One line per failed source, stack or webhook delivery, naming it and why."""
        lines = [self.fatal] if self.fatal else []
        lines += [f"source {name}: {message}" for name, message in self.source_errors]
        lines += [f"{o.label}: {o.error}" for o in self.stacks if o.status == "failed"]
        lines += [r.failure for r in self.webhooks if r.failure]
        lines += [
            f"{o.label}: {o.manifests.problem}"
            for o in self.stacks
            if o.manifests is not None and o.manifests.problem
        ]
        if self.metrics_error:
            lines.append(self.metrics_error)
        lines += [m.failure for m in self.mirrors if m.failure]
        return lines

    @property
    def succeeded(self) -> bool:
        """Finished, and nothing failed."""
        return not self.failures and not self.interrupted

    @property
    def events(self) -> int:
        return (
            self.release_events
            + sum(o.events + (o.manifests.events if o.manifests else 0) for o in self.stacks)
            + sum(m.status == "published" for m in self.mirrors)
        )

    @property
    def exit_code(self) -> int:
        if self.fatal:
            return self.fatal_exit
        return EXIT_PARTIAL if self.failures else EXIT_OK

    def add_stack(
        self,
        source: str,
        release: str,
        stack: str,
        status: Status,
        version: int,
        spec_count: int,
        started: float,
        tally: Tally | None = None,
    ) -> StackOutcome:
        """Record a stack's outcome, timed from ``started`` (a ``time.monotonic()`` reading)."""
        outcome = StackOutcome(
            source,
            release,
            stack,
            status,
            version=version,
            spec_count=spec_count,
            seconds=time.monotonic() - started,
            tally=tally if tally is not None else Tally(),
            dry_run=self.dry_run,
        )
        self.stacks.append(outcome)
        return outcome


def log_outcome(o: StackOutcome) -> None:
    """Each stack's outcome, once: INFO, or ERROR when it failed."""
    figures = (
        f"version {o.version}, {plural(o.spec_count, 'spec')}, +{o.added} -{o.removed}, "
        f"{plural(o.tally.requests, 'request')}, {human_size(o.tally.bytes)}, "
        f"{human_duration(o.seconds)}"
    )
    extra = fields(
        event="stack",
        source=o.source,
        release=o.release,
        stack=o.stack,
        status=o.status,
        version=o.version,
        specs=o.spec_count,
        added=o.added,
        removed=o.removed,
        events=o.events,
        requests=o.tally.requests,
        bytes=o.tally.bytes,
        retries=o.tally.retries,
        seconds=round(o.seconds, 3),
        error=o.error,
        skipped=o.skipped,
        **({"dry_run": True} if o.dry_run else {}),
    )
    if o.status == "failed":
        log.error("%s failed: %s (%s)", o.label, o.error, figures, extra=extra)
    elif o.status == "skipped":
        log.info("%s skipped: %s", o.label, o.skipped, extra=extra)
    else:  # a dry run kept nothing: say what would have been, not what was
        status = DRY_RUN_WORDS.get(o.status, o.status) if o.dry_run else o.status
        log.info("%s %s: %s", o.label, status, figures, extra=extra)


#: How a dry run's log lines say a stack's status: nothing was changed or removed.
DRY_RUN_WORDS = {"changed": "would change", "removed": "would be removed"}
