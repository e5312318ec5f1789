"""One run at a time per database: an ``flock`` on ``<database>.lock``.

On PostgreSQL there is no file to sit beside: the run holds a session-level
advisory lock on the database instead (``store.postgres.AdvisoryLock``), which
the server releases when the session ends, however the process ends. A sync
(``once``) takes none there (:func:`hold_for_sync`): several instances sync one
PostgreSQL database at once, each claiming a stack or a webhook endpoint before
it works on it (``store.claims``).

The lock belongs to an open file description, so the kernel releases it when
the process exits, however it exits (a crash or SIGKILL included): nothing is
left behind to clean up. The file itself stays; it holds the PID and start time
of the last holder, which is what a refused run reports. It is never deleted,
because unlinking a lock file while another process waits on it would let two
runs hold "the" lock on two different inodes.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mirrorsync.errors import LockHeldError, NoDatabaseError, StoreError
from mirrorsync.store import utcnow
from mirrorsync.store.location import Location, PostgresUrl
from mirrorsync.units import human_time

if TYPE_CHECKING:  # psycopg is imported only for a PostgreSQL database
    from mirrorsync.store.postgres import AdvisoryLock

log = logging.getLogger("mirrorsync.lock")

#: How often a waiting run tries again.
POLL_SECONDS = 0.2


#: A time as utcnow() writes it into the lock file (which anyone could have edited).
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds (or last held) a lock, as written in the lock file."""

    pid: int | None
    since: str | None

    def describe(self) -> str:
        since = human_time(self.since) if _STAMP.match(self.since or "") else "an unknown time"
        pid = self.pid if self.pid is not None else "unknown"
        return f"since {since}, PID {pid}"


def lock_path(database: Path) -> Path:
    """The lock file beside ``database``: ``state.db`` -> ``state.db.lock``."""
    return database.with_name(database.name + ".lock")


def read_holder(path: Path) -> Holder:
    """Parse ``pid=N`` / ``since=TIME`` lines; missing or garbled values are None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return Holder(None, None)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return Holder(None, None)
        text = os.read(fd, 4096).decode("utf-8", errors="replace")
    except OSError:
        return Holder(None, None)
    finally:
        os.close(fd)
    values = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    pid_text = values.get("pid", "").strip()
    return Holder(
        int(pid_text) if pid_text.isdigit() else None,
        values.get("since", "").strip() or None,
    )


class RunLock:
    """An exclusive, non-blocking ``flock`` on one file. Use :func:`hold` to take it."""

    def __init__(self, database: Path, *, create: bool = True) -> None:
        self.database = database
        self.path = lock_path(database)
        #: False for a command that needs an existing database: it creates no
        #: directory and no lock file where there is no database yet.
        self.create = create
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; on success write our PID and start time."""
        if self._fd is not None:
            return True
        # Never through a link: a planted DB.lock -> elsewhere would have its target
        # truncated. O_NONBLOCK: a FIFO planted there cannot make the open wait.
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            if self.create or self.database.exists():
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # as the store
                flags |= os.O_CREAT
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:  # no database, and no run holds (or held) the lock
            raise self._no_database() from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(
                    f"{self.path}: the lock file is a symbolic link; mirrorsync never "
                    "follows it: remove the link"
                ) from None
            reason = exc.strerror
            if exc.errno == errno.EEXIST and not self.path.parent.is_dir():
                # mkdir(exist_ok) says "File exists" for a parent that is a file
                reason = f"Not a directory ({_first_file(self.path.parent)} is a file)"
            raise StoreError(f"{self.path}: cannot open lock file: {reason}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreError(f"{self.path}: the lock file is not a regular file: remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise StoreError(f"{self.path}: cannot lock: {exc.strerror}") from None
        if not self.create and not self.database.exists():  # the last holder made none
            os.close(fd)
            raise self._no_database()
        # Ours now: record who we are (the file may still hold a dead holder's lines).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()}\nsince={utcnow()}\n".encode(), 0)
        self._fd = fd
        return True

    def _no_database(self) -> NoDatabaseError:
        return NoDatabaseError(f"no database yet at {self.database}; run 'mirrorsync once' first")

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def holder(self) -> Holder:
        """Who holds the lock now. Retries briefly: a new holder writes just after locking."""
        for _ in range(10):
            found = read_holder(self.path)
            if found.pid is not None and found.since is not None:
                return found
            time.sleep(0.02)
        return read_holder(self.path)

    def refusal(self) -> LockHeldError:
        return LockHeldError(
            f"another run holds the lock on {self.database} {self.holder().describe()}"
        )


@asynccontextmanager
async def hold(
    database: Location, *, wait: float = 0.0, create: bool = True
) -> AsyncIterator[RunLock | AdvisoryLock]:
    """Hold the run lock of ``database`` for the body of the ``async with``.

    Without ``wait`` a held lock raises :class:`LockHeldError` at once; with it,
    the lock is retried every :data:`POLL_SECONDS` for up to ``wait`` seconds.
    Every command that writes the database takes this lock. Without ``create``
    (a command that needs a database already there) nothing is created where
    there is none yet: NoDatabaseError, unless a run holds the lock (it may be
    creating the database), which is waited for or refused as usual.
    """
    if isinstance(database, PostgresUrl):
        async with _hold_postgres(database, wait=wait) as held:
            yield held
        return
    lock = RunLock(database, create=create)
    if not lock.try_acquire():
        if wait <= 0:
            raise lock.refusal()
        log.info("waiting up to %gs for the lock held %s", wait, lock.holder().describe())
        deadline = time.monotonic() + wait
        while not lock.try_acquire():
            left = deadline - time.monotonic()
            if left <= 0:
                raise lock.refusal()
            await anyio.sleep(min(POLL_SECONDS, left))
    log.debug("holding the run lock %s", lock.path)
    try:
        yield lock
    finally:
        lock.release()


@asynccontextmanager
async def _hold_postgres(database: PostgresUrl, *, wait: float) -> AsyncIterator[AdvisoryLock]:
    from mirrorsync.store.postgres import AdvisoryLock

    lock = AdvisoryLock(database)

    async def refusal() -> LockHeldError:
        pid, since = await lock.holder()
        return LockHeldError(
            f"another run holds the lock on {database} {Holder(pid, since).describe()}"
        )

    if not await lock.try_acquire():
        if wait <= 0:
            raise await refusal()
        log.info("waiting up to %gs for the run lock on %s", wait, database)
        deadline = time.monotonic() + wait
        while not await lock.try_acquire():
            left = deadline - time.monotonic()
            if left <= 0:
                raise await refusal()
            await anyio.sleep(min(POLL_SECONDS, left))
    log.debug("holding the run lock (advisory) on %s", database)
    try:
        yield lock
    finally:
        with anyio.CancelScope(shield=True):
            await lock.release()


@asynccontextmanager
async def hold_for_sync(database: Location, *, wait: float = 0.0) -> AsyncIterator[None]:
    """The lock a sync takes: the run lock on SQLite; none on PostgreSQL, where each
    stack and webhook endpoint is claimed on its own (``store.claims``), so that
    several instances share the work instead of waiting for each other."""
    if isinstance(database, PostgresUrl):
        yield
        return
    async with hold(database, wait=wait):
        yield


def _first_file(path: Path) -> Path:
    """The first of a path's ancestors (or itself) that exists and is not a directory."""
    for part in reversed((path, *path.parents)):
        if part.exists() and not part.is_dir():
            return part
    return path
