"""The synced stacks a copy is made from (``mirrors[].stacks``, the layouts it
takes) and where each one's mirror is, credentials included: what the copy job
(``job.py``, ``oci_copy.py``) and the check of a copy (``check.py``) both start from."""

from __future__ import annotations

import fnmatch

from mirrorsync.config import CatalogSource, MirrorCopy, MirrorSource
from mirrorsync.errors import CopyError, CopySourceError
from mirrorsync.redact import Url, unmask
from mirrorsync.store.mirrors import SyncedStack


def choose_stacks(
    copy: MirrorCopy,
    source: str,
    release: str,
    stacks: list[SyncedStack],
    layouts: tuple[str, ...] = ("v3",),
) -> list[SyncedStack]:
    synced = [s for s in stacks if s.present and s.version > 0 and s.index_checksum]
    if copy.stacks is None:
        chosen = synced
    else:
        chosen = [s for s in synced if any(fnmatch.fnmatchcase(s.name, g) for g in copy.stacks)]
        for glob in copy.stacks:
            if not any(fnmatch.fnmatchcase(s.name, glob) for s in synced):
                raise CopyError(
                    f"no synced stack matching {glob!r} in {source}:{release}; "
                    "run 'mirrorsync once' first"
                )
    if not chosen:
        raise CopyError(f"no synced stack in {source}:{release}; run 'mirrorsync once' first")
    for s in chosen:
        if s.layout not in layouts:
            raise CopySourceError(
                f"{source}:{release}/{s.name} is a {s.layout} build cache; "
                + (
                    "copies are made from v3 stacks only"
                    if layouts == ("v3",)
                    else f"this copy is made from {' or '.join(layouts)} stacks only"
                )
            )
    return chosen


def real_root(source: CatalogSource | MirrorSource, stack: SyncedStack) -> str:
    """The stack's mirror root with credentials (the database keeps them masked)."""
    stored = Url(stack.mirror_root or "").rstrip("/").address  # a display form: as is
    if isinstance(source, MirrorSource):
        return Url(source.url).rstrip("/").address
    for base in source.buckets().values():
        configured = Url(base)
        if configured.display != configured.address:
            address = unmask(stored, configured)
            if address is not None:
                return address
    return stored
