"""What ``status`` reads of the configuration, compiled once and cached (issue 31).

``status`` (a monitoring check, run every minute) and the health model read three
things of the configuration: the database, each source's name and manifest policy,
each copy's name and whether it is a directory; shell completion (``_names``, at
every TAB) the names of its webhooks too (:class:`StatusConfig`). Reading
them by the full load (YAML, msgspec, every check) costs more than the rest of the
command together; so after a full load they are written to a small file, and
a later ``status`` whose inputs are all unchanged reads them back without importing
the parser at all.

The validation stays the one rule: a cache entry is the :class:`StatusConfig` of a
configuration that passed ``parse_config``, and it is used only while everything
that validation depended on is unchanged: the file's path and text (sha256), every
environment variable the text names (``$VAR``, ``${VAR}``) and ``HOME`` and
``STATE_DIRECTORY``, mirrorsync's version and its configuration code (size and
time of each module), the interpreter, PyYAML's and msgspec's package directories
(their inode and time: an upgrade makes them anew), and the answer to every question the
validation asked of the file system (a copy's real path, whether a key file
exists, the file's own mode: ``config_file.consult``), each asked again. A
configuration whose validation read a copy's lockfiles or keeplist is not cached,
nor is a PostgreSQL one. Anything else (a change, a file that does not parse, one
owned by another user or writable by others) is a miss: the full load runs.

Where and how: one entry per configuration path in the user's cache
(:mod:`mirrorsync.usercache`: per user, 0600, read only from this user's own file,
written atomically; ``MIRRORSYNC_NO_CACHE=1`` turns it off), checked here value by
value.
"""

from __future__ import annotations

import os
import re
import sys

from mirrorsync import __version__
from mirrorsync.config_file import (
    QUESTIONS,
    find_config,
    read_config_text,
    recording,
    stop_recording,
)
from mirrorsync.location import PostgresUrl
from mirrorsync.records import record
from mirrorsync.usercache import code_stamp, entry_file, load, save, sha256_hex

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from mirrorsync.config import Config

#: The entry's layout; another one is a miss.
FORMAT = 2
#: The libraries whose code validates the configuration besides mirrorsync's own.
LIBRARIES = ("yaml", "msgspec")
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
    """What ``status``, the health model and shell completion read of a validated
    configuration; a SQLite database by its name as text, however it was read (no
    ``pathlib``)."""

    path: str
    database_path: str | PostgresUrl
    sources: tuple[SourceView, ...]
    mirrors: tuple[CopyView, ...]
    webhooks: tuple[str, ...]

    @classmethod
    def of(cls, config: Config) -> StatusConfig:
        database = config.database_path
        return cls(
            config.path,
            database if isinstance(database, PostgresUrl) else str(database),
            tuple(SourceView(s.name, s.manifest_policy) for s in config.sources),
            tuple(CopyView(m.name, m.is_directory) for m in config.mirrors),
            tuple(h.name for h in config.webhooks),
        )


def load_status_config(explicit: str | None = None) -> StatusConfig:
    """The :class:`StatusConfig` of the configuration ``load_config(explicit)`` loads:
    from the cache when every input is unchanged, else by the full load (ConfigError
    as it raises), which then fills the cache."""
    path = find_config(explicit)
    text = read_config_text(path)
    where = _entry_file(path)
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
    if where and key and not isinstance(view.database_path, PostgresUrl) and None not in facts:
        save(where, {"format": FORMAT, "key": key, "facts": facts, "config": _dump(view)})
    return view


def _entry_file(path: str) -> str | None:
    return entry_file(f"status-{sha256_hex(os.fsencode(os.path.abspath(path)))[:32]}")


def _key(path: str, text: str) -> dict[str, object] | None:
    """Everything besides the file system's answers that the validation depends on;
    None when the configuration's code cannot be stamped (a zip): nothing is cached."""
    code = code_stamp(os.path.dirname(os.path.abspath(__file__)), CODE_PACKAGES)
    if code is None:
        return None
    names = {m.strip("{}") for m in _VARIABLE.findall(text)} | set(ALWAYS_READ)
    return {
        "path": os.path.abspath(path),
        "sha256": sha256_hex(text.encode()),
        "environment": {n: os.environ.get(n) for n in sorted(names)},
        "mirrorsync": __version__,
        "code": code,
        "python": [sys.version, sys.executable],
        "libraries": _libraries(),
    }


def _libraries() -> list[object]:
    """Where each of :data:`LIBRARIES` would be imported from (its package directory
    in the first directory of ``sys.path`` that holds one) and that directory's inode
    and time: an upgrade (pip removes the package and writes it anew) changes them.
    A stat or two each; nothing is imported. The rest of ``sys.path`` does not count:
    processes started with another ``PYTHONPATH`` share the entry."""
    found: list[object] = []
    for name in LIBRARIES:
        for directory in sys.path:
            package = os.path.join(directory or ".", name)
            try:
                st = os.stat(package)
            except OSError:
                continue
            found.append([package, st.st_ino, st.st_mtime_ns])
            break
        else:
            found.append([name, None, None])
    return found


def _read(file: str, key: dict[str, object]) -> StatusConfig | None:
    """The entry in ``file`` if it is ``key``'s and every fact in it still holds;
    None for anything else (absent, foreign, damaged, stale)."""
    entry = load(file)
    try:
        if not isinstance(entry, dict) or entry["format"] != FORMAT or entry["key"] != key:
            return None
        for question, argument, answer in entry["facts"]:
            if not isinstance(argument, str) or QUESTIONS[question](argument) != answer:
                return None
        return _load(entry["config"])
    except (ValueError, TypeError, KeyError, IndexError, OSError):
        return None


def _dump(view: StatusConfig) -> dict[str, object]:
    return {
        "path": view.path,
        "database": str(view.database_path),
        "sources": [[s.name, s.manifest_policy] for s in view.sources],
        "mirrors": [[m.name, m.is_directory] for m in view.mirrors],
        "webhooks": list(view.webhooks),
    }


def _load(data: object) -> StatusConfig:
    """:func:`_dump`'s inverse; ValueError for anything it would not have written."""
    if not isinstance(data, dict):
        raise ValueError(data)
    path, database = data["path"], data["database"]
    sources, mirrors, webhooks = data["sources"], data["mirrors"], data["webhooks"]
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
    if not (isinstance(webhooks, list) and all(isinstance(n, str) for n in webhooks)):
        raise ValueError(webhooks)
    return StatusConfig(
        path,
        database,
        tuple(SourceView(n, p) for n, p in sources),
        tuple(CopyView(n, d) for n, d in mirrors),
        tuple(webhooks),
    )
