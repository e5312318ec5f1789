"""One phase of a long piece of work, as progress displays show it: done/total, rate, ETA.

Kept apart from the sync so that every layer that does such work (the sync's
indexes and crawl, the delivery of webhooks) can count into one without
importing the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Phase:
    """One phase's work: ``done`` of ``total`` since ``started`` (a ``time.monotonic()``)."""

    done: int = 0
    total: int = 0
    started: float | None = None  # when its first work became known
    last: float | None = None  # when the last of it was done

    def add_work(self, n: int) -> None:
        """``n`` more to do (negative: work that will not be done after all)."""
        if self.started is None:
            self.started = time.monotonic()
        self.total += n

    def advance(self, n: int = 1) -> None:
        """``n`` more done."""
        self.done += n
        self.last = time.monotonic()

    @property
    def complete(self) -> bool:
        return self.started is not None and self.done >= self.total

    def rate(self, now: float | None = None) -> float:
        """Units done per second since the phase began (0 before); once complete, over
        the time it took, so the figure does not decay while the next phases run."""
        if self.started is None:
            return 0.0
        end = self.last if self.complete and self.last is not None else now
        elapsed = (end if end is not None else time.monotonic()) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far; 0 when done, None when there is no rate yet."""
        if self.started is None:
            return None
        left = self.total - self.done
        if left <= 0:
            return 0.0
        rate = self.rate(now)
        return left / rate if rate > 0 else None
