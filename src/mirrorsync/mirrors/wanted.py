"""The hashes a copy is asked for by name: its environments' lockfiles and ``hashes``.

Each entry of ``environments`` is a Spack environment directory (its
``spack.lock`` is read) or a lockfile; what it wants is what ``spack buildcache
push`` of the environment pushes: the roots and their link/run closure (see
``formats/lockfile.py``). ``hashes`` is a list of hashes, or the path of a
keeplist as ``spack buildcache prune --keeplist`` reads it. Read at config check
and again at every copy run (a lockfile changes when its environment is
concretized again); a file that cannot be read is a :class:`ConfigError`
naming it (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mirrorsync.errors import ConfigError, FormatError
from mirrorsync.formats._common import is_spec_hash, shown
from mirrorsync.formats.lockfile import MAX_KEEPLIST, MAX_LOCKFILE, parse_keeplist, parse_lockfile
from mirrorsync.paths import expand_path, read_regular_file

if TYPE_CHECKING:  # the configuration calls this module to check a copy: no import back
    from mirrorsync.config import MirrorCopy

LOCKFILE = "spack.lock"


@dataclass(frozen=True, slots=True)
class Wanted:
    hashes: frozenset[str] = frozenset()
    names: dict[str, str] = field(default_factory=dict)  # hash -> name, as lockfiles say


def _read(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes (the parser refuses more) of a regular file (a FIFO
    never blocks the load); OSError if unreadable."""
    if "\x00" in str(path):
        raise OSError(0, "not a file name (holds a NUL byte)")
    try:
        return read_regular_file(path, limit, None)
    except ValueError as exc:  # a FIFO, device or directory
        raise OSError(0, str(exc)) from None


def wanted(copy: MirrorCopy, config_path: str, key: str) -> Wanted:
    """Every hash the copy's environments and ``hashes`` name (empty if neither is given)."""
    hashes: set[str] = set()
    names: dict[str, str] = {}
    for i, entry in enumerate(copy.environments or []):
        path = expand_path(entry)
        if "\x00" not in entry and path.is_dir():
            path = path / LOCKFILE
        try:
            lockfile = parse_lockfile(_read(path, MAX_LOCKFILE), str(path))
        except OSError as exc:
            raise ConfigError(
                config_path,
                f"{key}.environments[{i}]",
                f"cannot read the lockfile {path}: {exc.strerror or exc}",
            ) from None
        except FormatError as exc:
            raise ConfigError(config_path, f"{key}.environments[{i}]", str(exc)) from None
        hashes |= lockfile.wanted
        names.update({h: n for h, n in lockfile.names.items() if h in lockfile.wanted})
    if isinstance(copy.hashes, str):
        path = expand_path(copy.hashes)
        try:
            hashes |= parse_keeplist(_read(path, MAX_KEEPLIST), str(path))
        except OSError as exc:
            raise ConfigError(
                config_path,
                f"{key}.hashes",
                f"cannot read the keeplist {path}: {exc.strerror or exc}",
            ) from None
        except FormatError as exc:
            raise ConfigError(config_path, f"{key}.hashes", str(exc)) from None
    elif copy.hashes is not None:
        for j, given in enumerate(copy.hashes):
            spec_hash = given.strip().lstrip("/")
            if not is_spec_hash(spec_hash):
                raise ConfigError(
                    config_path,
                    f"{key}.hashes[{j}]",
                    f"expected a 32-character spec hash, got {shown(given)}",
                )
            hashes.add(spec_hash)
    return Wanted(frozenset(hashes), names)
