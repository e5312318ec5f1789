"""Which configuration file, its text, and what its validation reads besides the text.

Below :mod:`mirrorsync.config` and free of its parser (yaml, msgspec), so that
``status`` can find and read the file, and check the cache of its compiled form
(:mod:`mirrorsync.config_cache`), without paying for them (issue 31, start-up).

Validation reads a few things besides the text and the environment: the real path
of each copy's directory (nested copies), whether a key file exists, the mode of
the file itself (an inline secret), a copy's lockfiles and keeplist. Each goes
through :func:`consult`, which records it while :func:`recording` is on; the cache
asks each recorded question again on a hit, and a configuration whose validation
read files it cannot ask again cheaply (:func:`unrepeatable`) is not cached.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mirrorsync.errors import ConfigError
from mirrorsync.paths import read_regular_file

DEFAULT_LOCATIONS = ("mirrorsync.yaml", "/etc/mirrorsync/mirrorsync.yaml")

#: The largest configuration file read; anything larger is not one (``-c /dev/zero``).
MAX_CONFIG_BYTES = 1 << 20


def find_config(explicit: str | None) -> str:
    """Pick the configuration file by the documented order; its name as given."""
    if explicit:
        return explicit
    env = os.environ.get("MIRRORSYNC_CONFIG")
    if env:
        return env
    for candidate in DEFAULT_LOCATIONS:
        if os.path.exists(candidate):
            return candidate
    tried = ", ".join(DEFAULT_LOCATIONS)
    raise ConfigError(
        "no configuration file",  # once: 'mirrorsync: error: ' is the printer's
        None,
        f"give -c PATH or MIRRORSYNC_CONFIG (looked at {tried}); "
        "'mirrorsync config init PATH' writes a starter",
    )


def read_config_text(path: str) -> str:
    """The file's text: a regular UTF-8 file of at most :data:`MAX_CONFIG_BYTES`, else
    ConfigError saying why."""
    try:
        data = read_regular_file(
            path, MAX_CONFIG_BYTES, "larger than 1 MiB, not a configuration file"
        )
        return data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError; a FIFO, a directory, too large
        raise ConfigError(path, None, f"cannot read: {exc}") from None


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


#: The questions validation asks of the file system, by name: each answer is a
#: function of its one argument and of nothing the cache's key does not hold.
QUESTIONS: dict[str, Callable[[str], object]] = {
    "realpath": os.path.realpath,  # links resolved (and the working directory, if relative)
    "isfile": os.path.isfile,
    "mode": _mode,  # None: no such file
}

#: What validation consulted, while :func:`recording`: (question, argument, answer);
#: ``None`` in it: something that cannot be asked again cheaply (a lockfile's content).
_record: list[tuple[str, str, object] | None] | None = None


def consult(question: str, argument: str) -> object:
    """The answer to ``question`` (a key of :data:`QUESTIONS`) about ``argument``,
    recorded while :func:`recording`."""
    answer = QUESTIONS[question](argument)
    if _record is not None:
        _record.append((question, argument, answer))
    return answer


def unrepeatable() -> None:
    """Validation read something (a lockfile, a keeplist) whose answer the cache
    cannot check again without reading it: this configuration is not cached."""
    if _record is not None:
        _record.append(None)


def recording() -> list[tuple[str, str, object] | None]:
    """Start recording what :func:`consult` answers; the list it fills."""
    global _record
    _record = []
    return _record


def stop_recording() -> None:
    global _record
    _record = None
