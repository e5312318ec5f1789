"""The user's cache of work ``status`` would otherwise repeat at every start (issue 31).

Two kinds of entry live here: the compiled view of a configuration
(:mod:`mirrorsync.config_cache`) and what a copy's index manifest says
(:mod:`mirrorsync.mirrors.ondisk`). Each is a shortcut only: a missing, foreign,
damaged or stale entry is a miss, and the work is done again.

Where: ``$XDG_CACHE_HOME/mirrorsync/`` (else ``~/.cache/mirrorsync/``), the
directory 0700 and each file 0600: per user, so nobody else can plant an entry,
and nothing is written beside a configuration in ``/etc``. An entry is
``marshal``'s serialisation of plain values (strings, numbers, booleans, None,
lists, dicts), as the interpreter's own ``.pyc`` files are: read only from a
regular file of this user's that nobody else can write (``O_NOFOLLOW``: never a
link), at most :data:`MAX_ENTRY_BYTES`, then checked value by value by its reader
(``json`` would cost status another millisecond to import). Written atomically
(a temporary file, then a rename); a directory that cannot be written (a
read-only home, a service with none) is simply not used, never an error.
``MIRRORSYNC_NO_CACHE=1`` turns it off; deleting the directory is always safe.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

#: The largest entry read.
MAX_ENTRY_BYTES = 1 << 20


def cache_directory() -> str | None:
    """``$XDG_CACHE_HOME/mirrorsync``, else ``~/.cache/mirrorsync``; None without either."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative: the XDG spec says ignore it
        home = os.environ.get("HOME", "")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "mirrorsync")


def sha256_hex(data: bytes) -> str:
    """sha256 of ``data`` in hex, by the interpreter's own module: hashlib (OpenSSL)
    costs more to import than ``status`` reads."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # another interpreter, or a later one (_sha2)
        from hashlib import sha256
    return str(sha256(data).hexdigest())


def code_stamp(root: str, packages: Iterable[str]) -> list[list[object]] | None:
    """The name (below ``root``), size and time of each module in the ``packages``
    directories of ``root`` (``""``: ``root`` itself), sorted: what an entry made by
    that code is keyed by, so that an edit in a checkout is a miss. None when a
    directory cannot be listed (a zip): nothing made by that code is then kept."""
    stamps: list[list[object]] = []
    try:
        for package in packages:
            with os.scandir(os.path.join(root, package)) as entries:
                for e in entries:
                    if e.name.endswith(".py"):
                        st = e.stat()
                        stamps.append([os.path.join(package, e.name), st.st_size, st.st_mtime_ns])
    except OSError:
        return None
    return sorted(stamps)


def entry_file(name: str) -> str | None:
    """The file of the entry ``name``; None when the cache is off or has no directory."""
    if os.environ.get("MIRRORSYNC_NO_CACHE"):
        return None
    directory = cache_directory()
    return None if directory is None else os.path.join(directory, name)


def load(file: str) -> object:
    """The value in ``file`` if it is this user's own regular file that nobody else can
    write; None for anything else (absent, a link, foreign, too large, damaged)."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not _ours(st, stat.S_ISREG) or st.st_size > MAX_ENTRY_BYTES:
            return None
        data = os.read(fd, MAX_ENTRY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return marshal.loads(data)
    except (ValueError, TypeError, EOFError):
        return None


def _ours(st: os.stat_result, kind: Callable[[int], bool]) -> bool:
    """Whether ``st`` is of ``kind`` (a regular file, a directory), this user's, and
    writable by nobody else."""
    return kind(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def save(file: str, value: dict[str, object]) -> None:
    """Write ``value`` to ``file`` atomically, readable by its owner only; a directory
    that cannot be written, or is not this user's own (a link, another user's, one
    others may write), is left alone (the cache is only ever a shortcut)."""
    directory = os.path.dirname(file)
    temporary = os.path.join(directory, f".{os.path.basename(file)}.{os.getpid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _ours(os.lstat(directory), stat.S_ISDIR):  # a link, someone else's, shared
            return
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            data = marshal.dumps(value)
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        os.replace(temporary, file)
    except (OSError, ValueError):  # ValueError: a value marshal cannot write
        with contextlib.suppress(OSError):
            os.unlink(temporary)
