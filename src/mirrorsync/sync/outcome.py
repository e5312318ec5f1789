"""What a sync did, stack by stack: the record the CLI prints and logs summarise.

The whole run's report (stacks, copies, webhooks) is ``sync.report``, a layer up:
the sync engine and the copies that reuse it need only these."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from mirrorsync.fetch import Tally
from mirrorsync.logs import fields
from mirrorsync.units import Verbatim, human_duration, human_size, plural

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
        log.error("%s failed: %s (%s)", Verbatim(o.label), o.error, figures, extra=extra)
    elif o.status == "skipped":
        log.info("%s skipped: %s", Verbatim(o.label), o.skipped, extra=extra)
    else:  # a dry run kept nothing: say what would have been, not what was
        status = DRY_RUN_WORDS.get(o.status, o.status) if o.dry_run else o.status
        log.info("%s %s: %s", Verbatim(o.label), status, figures, extra=extra)


#: How a dry run's log lines say a stack's status: nothing was changed or removed.
DRY_RUN_WORDS = {"changed": "would change", "removed": "would be removed"}
