"""What one copy did (``MirrorOutcome``), and the line it logs when it is done."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from mirrorsync.errors import EXIT_PARTIAL
from mirrorsync.fetch import Tally
from mirrorsync.logs import fields
from mirrorsync.mirrors.download import CopyTally
from mirrorsync.store.mirrors import Kept, LeftOut
from mirrorsync.units import Verbatim, human_duration, human_size, plural

log = logging.getLogger("mirrorsync.mirror")

#: ``rebuilt``: the published state's index was gone from the disk (``rm -rf`` of the
#: copy): its files were fetched again and the same state written back.
MirrorStatus = Literal["published", "unchanged", "rebuilt", "failed", "dry run", "skipped"]


@dataclass
class MirrorOutcome:
    name: str
    status: MirrorStatus
    version: int = 0
    binaries: int = 0
    bytes: int = 0  # the whole copy: tarballs, spec manifests, keys, the index
    matched: int = 0  # binaries the filters (or environments, hashes) chose themselves
    tarball_bytes: int = 0  # the binaries' tarballs alone
    added: int = 0
    removed: int = 0
    copied: CopyTally = field(default_factory=CopyTally)
    deleted: int = 0
    deleted_bytes: int = 0
    waiting: int = 0  # unreferenced files kept until delete_after has passed
    waiting_bytes: int = 0
    error: str | None = None
    seconds: float = 0.0
    tally: Tally = field(default_factory=Tally)
    left_out: list[LeftOut] = field(default_factory=list)  # specs refused, and why
    kept: list[Kept] = field(default_factory=list)  # held although upstream deleted them
    wanted_missing: list[tuple[str, str]] = field(default_factory=list)  # (hash, name)
    exit_code: int = EXIT_PARTIAL  # of its error: 2 when the configuration asks the impossible

    @property
    def failure(self) -> str | None:
        return self.failure_line()

    def failure_line(self, shown: Callable[[str], str] = str) -> str | None:
        """:attr:`failure`, the copy's name as ``shown`` gives it (``units.verbatim``)."""
        return f"mirror {shown(self.name)}: {self.error}" if self.error else None


def log_outcome(o: MirrorOutcome) -> None:
    c = o.copied
    dry = o.status == "dry run"  # nothing was fetched or deleted: say what would be
    figures = (
        f"version {o.version}, {plural(o.binaries, 'binary', 'binaries')}, "
        f"{human_size(o.bytes)}, +{o.added} -{o.removed}, "
        f"{'would fetch' if dry else 'fetched'} {plural(c.blobs_fetched, 'blob')} "
        f"({human_size(c.bytes_fetched)}) and {plural(c.manifests_fetched, 'manifest')}, "
        f"{plural(c.blobs_present, 'blob')} already there, "
        f"{'would delete up to' if dry else 'deleted'} {plural(o.deleted, 'file')} "
        f"({human_size(o.deleted_bytes)}), "
        + ("" if dry else f"{o.waiting} waiting, ")
        + f"{plural(o.tally.requests, 'request')}, {human_duration(o.seconds)}"
    )
    extra = fields(
        event="mirror",
        mirror=o.name,
        status=o.status,
        version=o.version,
        binaries=o.binaries,
        bytes=o.bytes,
        added=o.added,
        removed=o.removed,
        blobs_fetched=c.blobs_fetched,
        bytes_fetched=c.bytes_fetched,
        deleted=o.deleted,
        requests=o.tally.requests,
        seconds=round(o.seconds, 3),
        error=o.error,
    )
    if o.status == "failed":
        log.error("mirror %s failed: %s", Verbatim(o.name), o.error, extra=extra)
    else:
        log.info("mirror %s %s: %s", Verbatim(o.name), o.status, figures, extra=extra)
