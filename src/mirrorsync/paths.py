"""Files named by the configuration: how a path is written (``~``, ``$VAR``) and how
a small file is read without blocking. Below the configuration, so that what reads
such files (the copies' lockfiles and keeplists, key and secret files) needs only this."""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from pathlib import Path


def expand_path(text: str) -> Path:
    """A path from the configuration: ``~`` and ``$VAR``/``${VAR}`` expanded, the same
    for every path (database, copies, keys, keeplists, lockfiles, secret and password
    files, the metrics file). ``parse_config`` refuses an unset variable in the paths
    it needs (:func:`_unset_variable`); a secret's file is checked when it is read."""
    from pathlib import Path  # the configuration's paths; status reads them as text

    return Path(os.path.expandvars(os.path.expanduser(text)))


def read_regular_file(path: Path | str, limit: int, too_large: str | None) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; ValueError (why,
    one phrase) if it is a FIFO, device or directory, or larger; OSError as raised.

    Opened ``O_NONBLOCK`` and checked on the open descriptor before a byte is read,
    so a FIFO or a device never blocks the process or fills its memory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
            raise ValueError(f"{kind}, not a regular file")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit and too_large is not None:  # None: the caller judges limit + 1 bytes
        raise ValueError(too_large)
    return data
