"""What ``status`` reads of the configuration, compiled once and cached (issue 31).

``status`` (a monitoring check, run every minute) and the health model read three
things of the configuration: the database, each source's name and manifest policy,
each copy's name and whether it is a directory (:class:`StatusConfig`). Reading
them by the full load (YAML, msgspec, every check) costs more than the rest of the
command together; so after a full load they are written to a small file, and
a later ``status`` whose inputs are all unchanged reads them back without importing
the parser at all.

The validation stays the one rule: a cache entry is the :class:`StatusConfig` of a
configuration that passed ``parse_config``, and it is used only while everything
that validation depended on is unchanged: the file's path and text (sha256), every
environment variable the text names (``$VAR``, ``${VAR}``) and ``HOME`` and
``STATE_DIRECTORY``, mirrorsync's version and its configuration code (size and
time of each module), the interpreter, and the answer to every question the
validation asked of the file system (a copy's real path, whether a key file
exists, the file's own mode: ``config_file.consult``), each asked again. A
configuration whose validation read a copy's lockfiles or keeplist is not cached,
nor is a PostgreSQL one. Anything else (a change, a file that does not parse, one
owned by another user or writable by others) is a miss: the full load runs.

Where: ``$XDG_CACHE_HOME/mirrorsync/`` (else ``~/.cache/mirrorsync/``), one file per
configuration path, the directory 0700 and the file 0600: per user, so nobody else
can plant an entry, and nothing is written beside a configuration in ``/etc``. An
entry is ``marshal``'s serialisation of plain values (strings, numbers, booleans,
None, lists, dicts), as the interpreter's own ``.pyc`` files are: read only from a
regular file of this user's that nobody else can write, then checked value by
value (``json`` would cost status another millisecond to import).
Written atomically (a temporary file, then a rename); a directory that cannot be
written (a read-only home, a service with none) is simply not used, never an
error. ``MIRRORSYNC_NO_CACHE=1`` turns it off; deleting the directory is always safe.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import re
import stat
import sys
from pathlib import Path

from mirrorsync import __version__
from mirrorsync.config_file import (
    QUESTIONS,
    find_config,
    read_config_text,
    recording,
    stop_recording,
)
from mirrorsync.records import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from mirrorsync.config import Config
    from mirrorsync.location import Location

#: The entry's layout; another one is a miss.
FORMAT = 1
#: The largest cache file read.
MAX_ENTRY_BYTES = 1 << 20
#: Read by the configuration besides the variables its text names (``~``, the default database).
ALWAYS_READ = ("HOME", "STATE_DIRECTORY")
#: Where the configuration's code is, below mirrorsync's directory: its own modules
#: and the ``config`` package's; each module's size and time are part of the key.
CODE_PACKAGES = ("", "config")
#: A variable as ``os.path.expandvars`` finds one (``$NAME``, ``${NAME}``).
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)


@record(frozen=True, slots=True)
class SourceView:
    """A source as the health model reads it."""

    name: str
    manifest_policy: str


@record(frozen=True, slots=True)
class CopyView:
    """A local copy (``mirrors:``) as the health model reads it."""

    name: str
    is_directory: bool


@record(frozen=True, slots=True)
class StatusConfig:
    """What ``status`` and the health model read of a validated configuration."""

    path: str
    database_path: Location
    sources: tuple[SourceView, ...]
    mirrors: tuple[CopyView, ...]

    @classmethod
    def of(cls, config: Config) -> StatusConfig:
        return cls(
            config.path,
            config.database_path,
            tuple(SourceView(s.name, s.manifest_policy) for s in config.sources),
            tuple(CopyView(m.name, m.is_directory) for m in config.mirrors),
        )


def load_status_config(explicit: str | None = None) -> StatusConfig:
    """The :class:`StatusConfig` of the configuration ``load_config(explicit)`` loads:
    from the cache when every input is unchanged, else by the full load (ConfigError
    as it raises), which then fills the cache."""
    path = find_config(explicit)
    text = read_config_text(path)
    where = None if os.environ.get("MIRRORSYNC_NO_CACHE") else _entry_file(path)
    key = _key(path, text) if where else None
    if where and key and (hit := _read(where, key)) is not None:
        return hit
    from mirrorsync.config import parse_config

    facts = recording()
    try:
        config = parse_config(text, str(path))
    finally:
        stop_recording()
    view = StatusConfig.of(config)
    if where and key and isinstance(view.database_path, Path) and None not in facts:
        _write(where, {"format": FORMAT, "key": key, "facts": facts, "config": _dump(view)})
    return view


def cache_directory() -> str | None:
    """``$XDG_CACHE_HOME/mirrorsync``, else ``~/.cache/mirrorsync``; None without either."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative: the XDG spec says ignore it
        home = os.environ.get("HOME", "")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "mirrorsync")


def _sha256(data: bytes) -> str:
    try:  # the interpreter's own: hashlib (OpenSSL) costs more to import than status reads
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # another interpreter, or a later one (_sha2)
        from hashlib import sha256
    return str(sha256(data).hexdigest())


def _entry_file(path: Path) -> str | None:
    directory = cache_directory()
    if directory is None:
        return None
    name = _sha256(os.fsencode(os.path.abspath(path)))[:32]
    return os.path.join(directory, f"status-{name}")  # marshal's bytes, not JSON


def _key(path: Path, text: str) -> dict[str, object]:
    """Everything besides the file system's answers that the validation depends on."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = []
    for package in CODE_PACKAGES:  # the configuration's code (an edit in a checkout)
        with os.scandir(os.path.join(here, package)) as entries:
            for e in entries:
                if e.name.endswith(".py"):
                    st = e.stat()
                    code.append([os.path.join(package, e.name), st.st_size, st.st_mtime_ns])
    names = {m.strip("{}") for m in _VARIABLE.findall(text)} | set(ALWAYS_READ)
    return {
        "path": os.path.abspath(path),
        "sha256": _sha256(text.encode()),
        "environment": {n: os.environ.get(n) for n in sorted(names)},
        "mirrorsync": __version__,
        "code": sorted(code),
        "python": [sys.version, sys.executable],
    }


def _read(file: str, key: dict[str, object]) -> StatusConfig | None:
    """The entry in ``file`` if it is ours and ``key``'s and every fact in it still
    holds; None for anything else (absent, foreign, damaged, stale)."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid != os.getuid()
            or st.st_mode & 0o022
            or st.st_size > MAX_ENTRY_BYTES
        ):
            return None
        data = os.read(fd, MAX_ENTRY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        entry = marshal.loads(data)
        if not isinstance(entry, dict) or entry["format"] != FORMAT or entry["key"] != key:
            return None
        for question, argument, answer in entry["facts"]:
            if not isinstance(argument, str) or QUESTIONS[question](argument) != answer:
                return None
        return _load(entry["config"])
    except (ValueError, TypeError, KeyError, IndexError, EOFError, OSError):
        return None


def _dump(view: StatusConfig) -> dict[str, object]:
    return {
        "path": view.path,
        "database": str(view.database_path),
        "sources": [[s.name, s.manifest_policy] for s in view.sources],
        "mirrors": [[m.name, m.is_directory] for m in view.mirrors],
    }


def _load(data: object) -> StatusConfig:
    """:func:`_dump`'s inverse; ValueError for anything it would not have written."""
    if not isinstance(data, dict):
        raise ValueError(data)
    path, database = data["path"], data["database"]
    sources, mirrors = data["sources"], data["mirrors"]
    if not (isinstance(path, str) and isinstance(database, str) and database):
        raise ValueError(data)
    if not (isinstance(sources, list) and isinstance(mirrors, list)):
        raise ValueError(data)
    if not all(isinstance(s, list) and len(s) == 2 for s in sources + mirrors):
        raise ValueError(data)
    if not all(isinstance(n, str) and isinstance(p, str) for n, p in sources):
        raise ValueError(sources)
    if not all(isinstance(n, str) and isinstance(d, bool) for n, d in mirrors):
        raise ValueError(mirrors)
    return StatusConfig(
        path,
        Path(database),
        tuple(SourceView(n, p) for n, p in sources),
        tuple(CopyView(n, d) for n, d in mirrors),
    )


def _write(file: str, entry: dict[str, object]) -> None:
    """Write ``entry`` to ``file`` atomically, readable by its owner only; a directory
    that cannot be written is left alone (the cache is only ever a shortcut)."""
    directory = os.path.dirname(file)
    temporary = os.path.join(directory, f".{os.path.basename(file)}.{os.getpid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            data = marshal.dumps(entry)
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        os.replace(temporary, file)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
