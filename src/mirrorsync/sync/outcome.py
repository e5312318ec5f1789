"""What a run did, stack by stack: the record the CLI prints and logs summarise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mirrorsync.delivery import WebhookResult
from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL
from mirrorsync.fetch import Tally

Status = Literal["changed", "unchanged", "failed", "removed"]


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

    @property
    def failures(self) -> list[str]:
        """One line per failed source, stack or webhook delivery, naming it and why."""
        lines = [f"source {name}: {message}" for name, message in self.source_errors]
        lines += [f"{o.label}: {o.error}" for o in self.stacks if o.status == "failed"]
        lines += [r.failure for r in self.webhooks if r.failure]
        return lines

    @property
    def events(self) -> int:
        return self.release_events + sum(o.events for o in self.stacks)

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failures else EXIT_OK
