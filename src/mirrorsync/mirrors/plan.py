"""What a copy holds: the selected binaries and their link/run dependency closure.

Pure: from the upstream indexes of the copy's stacks and its filters to the
install records its index will list. A binary the filters select brings every
spec it depends on through ``link`` or ``run`` (``parameters.deptypes``),
recursively. Records are upstream's, unchanged: a dependency upstream lists
with ``in_buildcache: false`` (an external, or one never pushed) is listed so,
and has no files to copy. ``build``-only dependencies (and what they depend on)
bring no binary: they are listed as Spack's own index lists them, upstream's
record with ``in_buildcache: false``, so that every dependency hash the copy's
index names has a record (Spack warns on each one that has none). Only specs an
:class:`Admission` lets in are selected (see ``mirrors/admit.py``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from mirrorsync.config import MirrorCopy
from mirrorsync.errors import CopyError
from mirrorsync.formats.rawindex import RawIndex, RawInstall
from mirrorsync.mirrors.admit import Admission


@dataclass(frozen=True, slots=True)
class StackIndex:
    """One upstream stack's index, with the root its files are fetched from."""

    label: str
    root: str
    index: RawIndex
    stack_id: int = 0


@dataclass(frozen=True, slots=True)
class Selection:
    db_version: str
    records: dict[str, RawInstall]  # hash -> record: selected specs and their closure
    roots: dict[str, str]  # hash -> mirror root, for each binary (in_buildcache true)
    selected: int  # binaries the filters chose themselves (left out ones included)
    missing: tuple[str, ...]  # link/run dependencies no index lists
    stacks: dict[str, int] = field(default_factory=dict)  # hash -> stack id, each binary
    chosen: tuple[str, ...] = ()  # the binaries the filters chose, still in
    #: Hashes the copy's environments or ``hashes`` name that no index lists as a binary
    #: (nor a kept spec): "wanted but not in upstream".
    wanted_missing: tuple[str, ...] = ()

    @property
    def binaries(self) -> frozenset[str]:
        return frozenset(self.roots)

    def without(self, admission: Admission) -> Selection:
        """The selection once ``admission`` left more specs out (and what needs them)."""
        known = {
            h: (r, self.roots.get(h, ""), self.stacks.get(h, 0)) for h, r in self.records.items()
        }
        return _close(
            self.db_version, self.chosen, known, admission, self.selected, self.wanted_missing
        )


_Known = dict[str, tuple[RawInstall, str, int]]  # hash -> (record, root, stack id)


@dataclass(frozen=True, slots=True)
class Keepable:
    """A spec upstream no longer lists that the copy still holds: its record as the
    copy published it, and where its files came from."""

    record: RawInstall
    root: str
    stack_id: int
    always: bool  # keep: DURATION, within it: stays whatever the selection says


def select(
    copy: MirrorCopy,
    stacks: list[StackIndex],
    admission: Admission,
    wanted: frozenset[str] = frozenset(),
    keepable: dict[str, Keepable] | None = None,
) -> Selection:
    """The copy's binaries: those the globs choose (``copy.by_glob``), those ``wanted``
    names (environments, hashes), and kept specs, that ``admission`` lets in, less
    ``exclude_packages``; and their link/run closure. A spec needing one left out is
    left out too. A ``keepable`` spec is known only where no index lists its hash: it
    stays if chosen or needed by one chosen."""
    versions = {s.index.db_version for s in stacks}
    if len(versions) > 1:
        listed = ", ".join(f"{s.label} v{s.index.db_version}" for s in stacks)
        raise CopyError(
            f"mirror {copy.name}: its stacks have different database versions ({listed}); "
            "put them in separate copies"
        )
    # Every record by hash; a binary (in_buildcache true) wins over a bare listing,
    # and a binary the admission lets in over one it does not (another stack's copy).
    known: _Known = {}
    for stack in stacks:
        for spec_hash, record in stack.index.installs.items():
            have = known.get(spec_hash)
            if (
                have is None
                or (record.in_buildcache and not have[0].in_buildcache)
                or (
                    record.in_buildcache
                    and admission.check(have[2], have[0]) is not None
                    and admission.check(stack.stack_id, record) is None
                )
            ):
                known[spec_hash] = (record, stack.root, stack.stack_id)
    upstream = {h for h, (r, _, _) in known.items() if r.in_buildcache}
    for spec_hash, kept in (keepable or {}).items():
        if spec_hash not in known:
            known[spec_hash] = (kept.record, kept.root, kept.stack_id)
    picked = {
        h
        for h in upstream
        if copy.by_glob
        and copy.selects(known[h][0].name, known[h][0].os, known[h][0].target, known[h][0].platform)
    }
    picked |= {h for h in wanted if h in known and known[h][0].in_buildcache}
    picked |= {h for h, k in (keepable or {}).items() if k.always and known[h][0] is k.record}
    excluded = copy.exclude_packages
    chosen = tuple(sorted(h for h in picked if not _selected_out(known[h][0].name, excluded)))
    missing = tuple(sorted(h for h in wanted if h not in known or not known[h][0].in_buildcache))
    return _close(next(iter(versions), "8"), chosen, known, admission, len(chosen), missing)


def _selected_out(name: str, excluded: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in excluded)


def _close(
    db_version: str,
    chosen: tuple[str, ...],
    known: _Known,
    admission: Admission,
    selected: int,
    wanted_missing: tuple[str, ...] = (),
) -> Selection:
    """The closure of ``chosen`` without the specs ``admission`` leaves out, nor any
    spec whose closure holds one (each such spec is left out in turn, with why)."""
    while True:
        records: dict[str, RawInstall] = {}
        missing: set[str] = set()
        needs: dict[str, list[str]] = {}  # hash -> hashes in the closure that need it
        todo = list(chosen)
        while todo:
            spec_hash = todo.pop()
            if spec_hash in records:
                continue
            entry = known.get(spec_hash)
            if entry is None:
                missing.add(spec_hash)
                continue
            record, _, stack_id = entry
            records[spec_hash] = record
            if record.in_buildcache and spec_hash not in admission.left:
                reason = admission.check(stack_id, record)
                if reason is not None:
                    admission.leave_out(record, reason)
            for dep in record.runtime_deps:
                needs.setdefault(dep, []).append(spec_hash)
                if dep not in records:
                    todo.append(dep)
        out = [h for h in records if h in admission.left]
        if not out:
            break
        # Everything in the closure that needs a left-out spec, recursively.
        queue = list(out)
        while queue:
            gone = queue.pop()
            for dependent in needs.get(gone, ()):
                if dependent in admission.left:
                    continue
                cause = admission.left[gone]
                admission.leave_out(
                    records[dependent], f"needs {cause.name} {cause.hash[:7]}, left out"
                )
                queue.append(dependent)
        chosen = tuple(h for h in chosen if h not in admission.left)
    roots = {h: known[h][1] for h, r in records.items() if r.in_buildcache}
    stacks = {h: known[h][2] for h in roots}
    _list_build_deps(records, known)
    return Selection(
        db_version,
        records,
        roots,
        selected,
        tuple(sorted(missing)),
        stacks,
        chosen,
        wanted_missing,
    )


def _list_build_deps(records: dict[str, RawInstall], known: _Known) -> None:
    """Add to ``records`` every spec its records reach only through other than
    link/run edges (build-only dependencies, recursively), as listings: upstream's
    record with ``in_buildcache: false``. A hash no index lists stays unlisted."""
    todo = [d for r in records.values() for d in r.other_deps if d not in records]
    while todo:
        spec_hash = todo.pop()
        if spec_hash in records or spec_hash not in known:
            continue
        record = known[spec_hash][0].listing()
        records[spec_hash] = record
        todo.extend(d for d in (*record.runtime_deps, *record.other_deps) if d not in records)
