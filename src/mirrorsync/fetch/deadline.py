"""Deadlines for requests without a timer each: one watchdog timer for all of them.

Every attempt runs under a deadline (``http.deadline`` once it has its slot,
``http.run_deadline`` always). A cancel scope or ``asyncio.timeout`` arms and
disarms an event-loop timer per attempt, and reschedules it when the deadline
moves; on a crawl of small manifests that was 13% of a request's CPU (README,
"Performance"). :class:`Watchdog` keeps the attempts in flight with their
deadlines and one timer, armed for the soonest of them: an attempt that ends
before that moment costs a dictionary entry, not a timer. When the timer
fires, the task of every attempt past its deadline is cancelled, and the
attempt's ``with`` block turns that cancellation into ``expired`` (as
``asyncio.timeout`` does: a cancellation that came from elsewhere, an outer
cancel scope, say, is never swallowed). A request that misses a deadline fails
with :class:`DeadlineError` (the run's: :class:`RunDeadlineError`).
"""

from __future__ import annotations

import asyncio
import math

from mirrorsync.errors import FetchError


class Watchdog:
    """The attempts in flight on one event loop, and one timer for the soonest deadline."""

    def __init__(self) -> None:
        self._attempts: dict[Attempt, None] = {}  # ordered, hashed by identity
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed = math.inf  # when the timer fires (the loop's clock)

    def attempt(self, seconds: float) -> Attempt:
        """A context manager for one attempt of the current task that must end
        within ``seconds`` (:meth:`Attempt.move` changes its deadline)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop: nothing of the old one applies
            self._loop, self._timer, self._armed = loop, None, math.inf
            self._attempts.clear()
        return Attempt(self, loop, loop.time() + seconds)

    def _watch(self, attempt: Attempt) -> None:
        self._attempts[attempt] = None
        self._due(attempt.deadline)

    def _due(self, when: float) -> None:
        """An attempt must end by ``when``: the timer fires then, if not sooner."""
        if when < self._armed:
            self._arm(when)

    def _forget(self, attempt: Attempt) -> None:
        # The timer stays armed: re-arming it for every attempt is the cost this
        # saves. It fires at most once per deadline's length, finding nothing due.
        self._attempts.pop(attempt, None)  # gone if the loop changed meanwhile

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_at(when, self._fire)
        self._armed = when

    def _fire(self) -> None:
        self._timer, self._armed = None, math.inf
        assert self._loop is not None
        now = self._loop.time()
        soonest = math.inf
        for attempt in self._attempts:
            if attempt.expired:
                continue
            if attempt.deadline <= now:
                attempt.expired = True
                attempt.task.cancel()
            elif attempt.deadline < soonest:
                soonest = attempt.deadline
        if soonest < math.inf:
            self._arm(soonest)


class Attempt:
    """``with watchdog.attempt(deadline) as a:`` -- the block is cancelled at its
    deadline; after the block, ``a.expired`` tells whether it was."""

    __slots__ = ("_cancelling", "_loop", "_watchdog", "deadline", "expired", "task")

    def __init__(
        self, watchdog: Watchdog, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> None:
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs a task to cancel")
        self._watchdog = watchdog
        self._loop = loop
        self.task = task
        self.deadline = deadline
        self.expired = False
        self._cancelling = 0

    def now(self) -> float:
        """The clock of deadlines (the event loop's)."""
        return self._loop.time()

    def move(self, deadline: float) -> None:
        """A new deadline (on :meth:`now`'s clock) for the attempt in flight."""
        self.deadline = deadline
        self._watchdog._due(deadline)

    def __enter__(self) -> Attempt:
        self._cancelling = self.task.cancelling()
        self._watchdog._watch(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        self._watchdog._forget(self)
        if not self.expired:
            return False
        # This watchdog cancelled the task once: take that back. Swallow the
        # CancelledError only if nothing else asked to cancel the task meanwhile.
        return self.task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError


class DeadlineError(FetchError):
    """A request ran past ``http.deadline``, or the run past ``http.run_deadline``."""


class RunDeadlineError(DeadlineError):
    """The run reached ``http.run_deadline``: no request is sent or finished after it."""
