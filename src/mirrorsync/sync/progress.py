"""Live figures of a run in progress, for a display to poll.

The sync only ever adds to these numbers; a progress display (``cli/progress.py``
at a terminal, ``cli/progress_log.py`` elsewhere) reads them a few times a
second or every half minute. Nothing here waits or prints.

A run goes through three phases, each with its own done/total, rate and time
left (:class:`Phase`): the stacks' indexes, the spec-manifest crawl, and the
webhook deliveries. Their totals grow as the work becomes known (a catalogue
read, a stack's crawl begun, an endpoint's backlog counted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mirrorsync.fetch import Tally
from mirrorsync.phase import Phase


@dataclass
class RunProgress:
    stacks_failed: int = 0
    manifests: int = 0  # manifest documents fetched (index manifests, spec manifests)
    http: Tally = field(default_factory=Tally)  # the HTTP client's own running tally
    started: float = field(default_factory=time.monotonic)
    # Stacks whose index is synced (or failed, or that were retired) of those the
    # catalogues list so far; spec manifests fetched of those to fetch; webhook
    # events delivered of those due.
    indexes: Phase = field(default_factory=Phase)
    crawl: Phase = field(default_factory=Phase)
    copies: Phase = field(default_factory=Phase)  # local copies brought up to date
    webhooks: Phase = field(default_factory=Phase)

    @property
    def stacks_total(self) -> int:
        return self.indexes.total

    @property
    def stacks_done(self) -> int:
        return self.indexes.done
