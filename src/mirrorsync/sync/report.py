"""What a run did as a whole: its stacks (``sync.outcome``), then the local copies and the
webhook deliveries that followed. Above the engine, beside the copies and the outbox
whose results it holds, so neither of those imports the run to share a type."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mirrorsync.errors import EXIT_OK, EXIT_PARTIAL
from mirrorsync.fetch import Tally
from mirrorsync.sync.outcome import StackOutcome, Status

if TYPE_CHECKING:
    from collections.abc import Callable

    from mirrorsync.delivery.outbox import WebhookResult
    from mirrorsync.mirrors.run import MirrorOutcome


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
        return self.failure_lines()

    def failure_lines(self, shown: Callable[[str], str] = str) -> list[str]:
        """:attr:`failures`, each name (source, stack, webhook, copy) as ``shown`` gives
        it: the CLI's lines for people mark them (``units.verbatim``)."""
        lines = [self.fatal] if self.fatal else []
        lines += [f"source {shown(name)}: {message}" for name, message in self.source_errors]
        lines += [f"{shown(o.label)}: {o.error}" for o in self.stacks if o.status == "failed"]
        lines += [line for r in self.webhooks if (line := r.failure_line(shown))]
        lines += [
            f"{shown(o.label)}: {o.manifests.problem}"
            for o in self.stacks
            if o.manifests is not None and o.manifests.problem
        ]
        if self.metrics_error:
            lines.append(self.metrics_error)
        lines += [line for m in self.mirrors if (line := m.failure_line(shown))]
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
