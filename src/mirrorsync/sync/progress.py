"""Live figures of a run in progress, for a display to poll.

The sync only ever adds to these numbers; a progress display (``cli/progress.py``)
reads them a few times a second. Nothing here waits or prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mirrorsync.fetch import Tally


@dataclass
class RunProgress:
    stacks_total: int = 0  # grows as catalogues are read
    stacks_done: int = 0
    stacks_failed: int = 0
    manifests: int = 0  # manifest documents fetched (index manifests, spec manifests)
    http: Tally = field(default_factory=Tally)  # the HTTP client's own running tally
