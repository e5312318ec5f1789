"""What a copy holds: the selected binaries and their link/run dependency closure.

Pure: from the upstream indexes of the copy's stacks and its filters to the
install records its index will list. A binary the filters select brings every
spec it depends on through ``link`` or ``run`` (``parameters.deptypes``),
recursively; ``build``-only dependencies are left out. Records are upstream's,
unchanged: a dependency upstream lists with ``in_buildcache: false`` (an
external, or one never pushed) is listed so, and has no files to copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirrorsync.config import MirrorCopy
from mirrorsync.errors import CopyError
from mirrorsync.formats.rawindex import RawIndex, RawInstall


@dataclass(frozen=True, slots=True)
class StackIndex:
    """One upstream stack's index, with the root its files are fetched from."""

    label: str
    root: str
    index: RawIndex


@dataclass(frozen=True, slots=True)
class Selection:
    db_version: str
    records: dict[str, RawInstall]  # hash -> record: selected specs and their closure
    roots: dict[str, str]  # hash -> mirror root, for each binary (in_buildcache true)
    selected: int  # binaries the filters chose themselves
    missing: tuple[str, ...]  # link/run dependencies no index lists

    @property
    def binaries(self) -> frozenset[str]:
        return frozenset(self.roots)


def select(copy: MirrorCopy, stacks: list[StackIndex]) -> Selection:
    versions = {s.index.db_version for s in stacks}
    if len(versions) > 1:
        listed = ", ".join(f"{s.label} v{s.index.db_version}" for s in stacks)
        raise CopyError(
            f"mirror {copy.name}: its stacks have different database versions ({listed}); "
            "put them in separate copies"
        )
    # Every record by hash; a binary (in_buildcache true) wins over a bare listing.
    known: dict[str, tuple[RawInstall, str]] = {}
    for stack in stacks:
        for spec_hash, record in stack.index.installs.items():
            have = known.get(spec_hash)
            if have is None or (record.in_buildcache and not have[0].in_buildcache):
                known[spec_hash] = (record, stack.root)
    chosen = [
        h
        for h, (r, _) in known.items()
        if r.in_buildcache and copy.selects(r.name, r.os, r.target, r.platform)
    ]
    records: dict[str, RawInstall] = {}
    roots: dict[str, str] = {}
    missing: set[str] = set()
    todo = list(chosen)
    while todo:
        spec_hash = todo.pop()
        if spec_hash in records:
            continue
        entry = known.get(spec_hash)
        if entry is None:
            missing.add(spec_hash)
            continue
        record, root = entry
        records[spec_hash] = record
        if record.in_buildcache:
            roots[spec_hash] = root
        todo.extend(d for d in record.runtime_deps if d not in records)
    return Selection(next(iter(versions), "8"), records, roots, len(chosen), tuple(sorted(missing)))
