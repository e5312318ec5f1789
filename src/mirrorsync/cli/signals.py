"""SIGINT, SIGTERM and SIGHUP end any command the same way: one line, a documented status.

systemd stops a service with SIGTERM (and SIGHUP on some paths), a person with
Ctrl-C. Each cancels the running command, so its cleanup runs (scratch files
removed, transactions rolled back), then the CLI prints one line and exits with
128 + the signal's number. A command that can end more gracefully, ``once``,
asks for the signal as an event instead (:meth:`Signals.as_event`): the run
stops, keeps what it committed and still writes its metrics. A second signal
always cancels at once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:  # the event loop is imported by the commands that run in it
    from typing import TypeVar

    import anyio

    T = TypeVar("T")
    A = TypeVar("A")

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: What the CLI prints, as shells do for these signals.
WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


class Signals:
    """The signals a command received, and what the next one does."""

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.received: signal.Signals | None = None
        self._scope = scope
        self._event: anyio.Event | None = None

    def deliver(self, signum: signal.Signals) -> None:
        first = self.received is None
        self.received = self.received or signum
        if first and self._event is not None:
            self._event.set()
        else:
            self._scope.cancel()

    @contextmanager
    def as_event(self) -> Iterator[anyio.Event]:
        """Within this block a first signal sets the event instead of cancelling."""
        import anyio

        event = self._event = anyio.Event()
        if self.received is not None:
            event.set()
        try:
            yield event
        finally:
            self._event = None

    def handled(self) -> None:
        """The command ended as the signal asked, gracefully (``serve`` on SIGTERM):
        it exits with its own status, and the CLI prints nothing more for it."""
        self.received = None

    @property
    def exit_code(self) -> int:
        assert self.received is not None
        return 128 + int(self.received)

    @property
    def message(self) -> str:
        assert self.received is not None
        return f"mirrorsync: {WORDS[self.received]}"


CURRENT: ContextVar[Signals | None] = ContextVar("mirrorsync_signals", default=None)


@contextmanager
def stop_event() -> Iterator[anyio.Event | None]:
    """The running command's signals as an event (None outside the CLI)."""
    signals = CURRENT.get()
    if signals is None:
        yield None
        return
    with signals.as_event() as event:
        yield event


class Stopped(BaseException):
    """One of :data:`HANDLED` ended a command that runs with no event loop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signal.Signals(signum)


def run_stoppable(command: Callable[[A], T], args: A) -> T | int:
    """``command(args)`` with no event loop (``status`` of a SQLite file): a signal of
    :data:`HANDLED` ends it with its one line and 128 + N, as it ends a command run
    in the loop (nothing to clean up: it only reads)."""
    from mirrorsync.logs import print_line

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in HANDLED}
    try:
        return command(args)
    except Stopped as stopped:
        print_line(f"mirrorsync: {WORDS[stopped.signum]}")
        return 128 + int(stopped.signum)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
