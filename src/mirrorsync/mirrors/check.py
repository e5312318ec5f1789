"""A copy on disk against its published state: ``verify --mirror`` and ``status --check``.

The published state is what the store recorded when the copy last published:
the checksum of its index blob (``mirrors.index_checksum``). That blob, found
at its content address and matching its sha256, names every install record;
each binary's spec manifest names its blobs with their lengths and digests;
the key index names the key files. :func:`check_copy` compares every one of
them with the directory, and lists the files nothing references (orphans) once
their ``delete_after`` has passed (or that no run ever saw). Nothing in the copy
is followed through a symbolic link: a link where a file or directory should be
is a problem, never read.

:func:`repair` fetches again what is missing or damaged through the copy's own
path (:class:`~mirrorsync.mirrors.download.Copier` under the crawl's
:class:`~mirrorsync.mirrors.admit.Admission`: lengths and digests against the
manifest, the manifest against the sha256 the crawl recorded), removes the
orphans, and says what it did; a spec upstream no longer has is unrepairable.

:func:`disk_problem` is the cheap check of ``status --check``: the index
manifest names the published index blob, which is there with its length, and
``layout.json`` is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mirrorsync.config import CatalogSource, Config, MirrorCopy, MirrorSource
from mirrorsync.errors import FormatError, MirrorsyncError, NotFoundError
from mirrorsync.fetch import HttpClient, Tally
from mirrorsync.formats.manifest import (
    parse_index_manifest,
    parse_manifest,
    spec_manifest_records,
)
from mirrorsync.formats.rawindex import RawInstall, parse_raw_index
from mirrorsync.formats.specfile import (
    KEY_INDEX_MEDIA_PREFIX,
    PUBLIC_KEY_MEDIA_TYPE,
    parse_key_index,
    v3_key_manifest,
)
from mirrorsync.mirrors import files
from mirrorsync.mirrors.admit import Admission, path_safe
from mirrorsync.mirrors.download import Copier, CopyTally, SpecRefused
from mirrorsync.mirrors.layout import INDEX_MANIFEST, KEY_INDEX_MANIFEST, LAYOUT, blob_relpath
from mirrorsync.mirrors.ondisk import disk_problem as disk_problem
from mirrorsync.mirrors.publish import due, index_file, publish
from mirrorsync.mirrors.run import run_mirrors
from mirrorsync.mirrors.stacks import choose_stacks, real_root
from mirrorsync.mirrors.target import CopyTarget, TargetView
from mirrorsync.store import Store
from mirrorsync.store import mirrors as store_mirrors
from mirrorsync.store.mirrors import MirrorRow
from mirrorsync.units import plural


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong in a copy: a file of its published state, or a file too many."""

    kind: str  # missing | size | digest | unreadable | not a file | orphan | mode
    path: str  # relative to the copy
    what: str
    spec: str | None = None  # the binary whose file it is (hash); None: index, keys, layout

    def line(self, mirror: str) -> str:
        return f"mirror {mirror}: {self.path}: {self.what}"


@dataclass
class CopyCheck:
    """What :func:`check_copy` found, and what a repair needs of the published state."""

    findings: list[Finding] = field(default_factory=list)
    files: int = 0  # files of the published state checked
    size: int = 0  # their bytes
    waiting: int = 0  # unreferenced files still within delete_after: not problems
    index: bytes | None = None  # the published index blob, None if gone or damaged
    db_version: str = ""
    records: dict[str, RawInstall] = field(default_factory=dict)  # binaries, by hash
    damaged: set[str] = field(default_factory=set)  # binaries with a file missing or bad
    #: A spec manifest is missing or bad: the blobs it names are unknown, so no blob is
    #: called an orphan (a repair judges them once the manifest is back).
    unsure: bool = False

    @property
    def orphans(self) -> list[str]:
        return [f.path for f in self.findings if f.kind == "orphan"]


def check_copy(
    view: TargetView,
    index_checksum: str,
    *,
    manifest_sha256: dict[str, set[str]] | None,
    pending: dict[str, str],
    now: datetime,
    delete_after: float,
    checksums: bool,
    keys_expected: bool = False,
    modes: files.Modes | None = None,
) -> CopyCheck:
    """Every file of the copy's published state (``index_checksum``) against the disk.

    ``manifest_sha256``: spec hash -> the sha256 the crawl recorded for its manifest
    (with ``checksums``, a manifest must be one of them). ``pending``: the
    unreferenced files the copy's runs saw, and since when (``delete_after``).
    ``keys_expected``: the copy's source verifies signatures, so a copy with binaries
    has a key index. ``modes``: the permissions each file and directory must have.
    """
    out = CopyCheck()
    root = view.local  # a directory's: modes and links are checked too
    on_disk = view.listing(links=True)  # links reported, never followed
    referenced: set[str] = set()
    seen: dict[str, bool] = {}  # rel -> fine
    if root is not None and modes is not None:  # directories made by mirrorsync
        for rel in sorted({p for r in on_disk for p in _parents(r)}):
            st = files.lstat(root / rel)
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o777 != modes.directory:
                out.findings.append(
                    Finding(
                        "mode",
                        rel,
                        f"directory mode {st.st_mode & 0o777:04o}, the copy's is "
                        f"{modes.directory:04o}",
                    )
                )

    def find(kind: str, rel: str, what: str, spec: str | None) -> None:
        out.findings.append(Finding(kind, rel, what, spec))
        if spec is not None:
            out.damaged.add(spec)

    def regular(rel: str, spec: str | None, what: str) -> os.stat_result | None:
        referenced.add(rel)
        st = on_disk.get(rel)
        if st is None:
            link = files.symlink_in(root, rel) if root is not None else None
            find(
                "missing",
                rel,
                f"{what} missing" + (f" ({link} is a symbolic link)" if link else ""),
                spec,
            )
            return None
        if not stat.S_ISREG(st.st_mode):
            find("not a file", rel, f"{what} is not a regular file (never followed)", spec)
            return None
        out.files += 1
        out.size += st.st_size
        if root is not None and modes is not None and st.st_mode & 0o777 != modes.file:
            find(
                "mode",
                rel,
                f"mode {st.st_mode & 0o777:04o}, the copy's mode is {modes.file:04o}",
                None,
            )
        return st

    def read(rel: str, spec: str | None, what: str) -> bytes | None:
        if regular(rel, spec, what) is None:
            return None
        data = view.read(rel)
        if data is None:  # gone meanwhile
            find("missing", rel, f"{what} missing", spec)
        return data

    def blob(rel: str, length: int, checksum: str, spec: str | None, what: str) -> None:
        if rel in seen:
            if not seen[rel] and spec is not None:  # another spec needs the damaged blob too
                out.damaged.add(spec)
            return
        st = regular(rel, spec, what)
        seen[rel] = False
        if st is None:
            return
        if st.st_size != length:
            find("size", rel, f"{what} is {st.st_size} bytes, its manifest says {length}", spec)
            return
        if checksums:
            digest = view.sha256(rel)
            if digest != checksum:
                find(
                    "digest", rel, f"{what} sha256 is {digest}, its manifest says {checksum}", spec
                )
                return
        seen[rel] = True

    data = read(LAYOUT, None, "layout.json")
    if data is not None:
        try:
            json.loads(data)
        except ValueError:
            find("unreadable", LAYOUT, "layout.json is not JSON", None)
    manifest = read(INDEX_MANIFEST, None, "index manifest")
    if manifest is not None:
        try:
            named = parse_index_manifest(manifest, INDEX_MANIFEST).checksum
        except FormatError as exc:
            find("unreadable", INDEX_MANIFEST, f"index manifest unreadable: {exc}", None)
        else:
            if named != index_checksum:
                find(
                    "digest",
                    INDEX_MANIFEST,
                    f"names index {named}, the published one is {index_checksum}",
                    None,
                )
    index_rel = blob_relpath("sha256", index_checksum)
    index = read(index_rel, None, "index blob")
    if index is not None and hashlib.sha256(index).hexdigest() != index_checksum:
        find("digest", index_rel, "index blob sha256 is not its name", None)
        index = None
    if index is not None:
        parsed = parse_raw_index(index, index_rel)
        out.index, out.db_version = index, parsed.db_version
        for install in parsed.installs.values():
            if not install.in_buildcache:
                continue
            if not path_safe(install):
                find(
                    "unreadable",
                    index_rel,
                    f"names a spec no copy would list: {install.hash}",
                    None,
                )
                continue
            out.records[install.hash] = install
            label = f"{install.name}/{install.hash[:7]}"
            rel = install.manifest_path
            data = read(rel, install.hash, f"spec manifest of {label}")
            if data is None:
                out.unsure = True
                continue
            if (
                checksums
                and manifest_sha256 is not None
                and hashlib.sha256(data).hexdigest() not in manifest_sha256.get(install.hash, set())
            ):
                find(
                    "digest",
                    rel,
                    f"spec manifest of {label} is not the one the sync verified",
                    install.hash,
                )
                out.unsure = True
                continue
            try:
                _, _, spec_manifest = spec_manifest_records(data, rel)
            except FormatError as exc:
                find("unreadable", rel, f"spec manifest of {label} unreadable: {exc}", install.hash)
                out.unsure = True
                continue
            for r in spec_manifest.data:
                kind = "tarball" if "install" in r.media_type else "spec blob"
                blob(
                    blob_relpath(r.checksum_algorithm, r.checksum),
                    r.content_length,
                    r.checksum,
                    install.hash,
                    f"{kind} of {label}",
                )
    keys = (
        read(KEY_INDEX_MANIFEST, None, "key index manifest")
        if KEY_INDEX_MANIFEST in on_disk or (keys_expected and out.records)
        else None
    )
    if keys is None and KEY_INDEX_MANIFEST in referenced:
        out.unsure = True  # the key files it names are unknown
    if keys is not None:
        try:
            for r in parse_manifest(keys, KEY_INDEX_MANIFEST, "key index manifest").data:
                if not r.media_type.startswith(KEY_INDEX_MEDIA_PREFIX):
                    continue
                rel = blob_relpath(r.checksum_algorithm, r.checksum)
                key_index = read(rel, None, "key index")
                for fingerprint in parse_key_index(key_index, rel) if key_index else ():
                    key_rel = v3_key_manifest(fingerprint)
                    key_manifest = read(key_rel, None, f"key manifest of {fingerprint}")
                    if key_manifest is None:
                        continue
                    for k in parse_manifest(key_manifest, key_rel, "key manifest").data:
                        if k.media_type == PUBLIC_KEY_MEDIA_TYPE:
                            blob(
                                blob_relpath(k.checksum_algorithm, k.checksum),
                                k.content_length,
                                k.checksum,
                                None,
                                f"key {fingerprint}",
                            )
        except FormatError as exc:
            find("unreadable", KEY_INDEX_MANIFEST, f"key files unreadable: {exc}", None)
    if out.index is None:  # nothing says what the copy references: no file is an orphan
        return out
    gone = set(due({r: s for r, s in pending.items() if r in on_disk}, now, delete_after))
    for rel in sorted(on_disk.keys() - referenced):
        if rel in pending and rel not in gone:
            out.waiting += 1
            continue
        if out.unsure and rel.startswith(("blobs/", "v3/manifests/key/")):
            continue  # perhaps a blob of a manifest that is missing: judged once it is back
        why = (
            f"unreferenced since {pending[rel]}, delete_after passed"
            if rel in pending
            else "not referenced by the published state"
        )
        find("orphan", rel, f"orphan: {why}", None)
    return out


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass
class Repair:
    """What :func:`repair` did (one line each) and what it could not do."""

    done: list[str] = field(default_factory=list)
    unrepairable: list[str] = field(default_factory=list)
    removed: int = 0  # orphans deleted
    tally: CopyTally = field(default_factory=CopyTally)
    requests: Tally = field(default_factory=Tally)


async def repair(
    config: Config,
    store: Store,
    copy: MirrorCopy,
    row: MirrorRow,
    found: CopyCheck,
    workdir: Path,
    recheck: Callable[[], Awaitable[CopyCheck]],
    target: CopyTarget,
) -> Repair:
    """Fetch again what ``found`` says is missing or damaged, through the copy's own
    path (Copier under the crawl's Admission), and delete its orphans."""
    modes = files.Modes(copy.file_mode)
    out = Repair()
    links_removed = False
    root = target.view().local  # a directory's: modes and links are repaired too
    chmod = [f.path for f in found.findings if f.kind == "mode"] if root is not None else []
    for rel in chmod:
        assert root is not None  # a regular file or directory (checked), never a link
        path = root / rel
        try:
            os.chmod(path, modes.directory if path.is_dir() else modes.file)
        except OSError as exc:
            raise files.disk_error(path, exc) from None
    if chmod:
        out.done.append(
            f"permissions set on {plural(len(chmod), 'file or directory', 'files or directories')}"
        )
    damaged = [
        f.path
        for f in found.findings
        if f.kind in ("size", "digest", "unreadable", "not a file") and f.path != INDEX_MANIFEST
    ]
    if root is None:  # damaged objects go first: the copier then sees them missing
        await target.delete(damaged)
    else:
        for f in found.findings:
            if f.path in damaged:
                files.remove_quietly(root / f.path)
            link = files.symlink_in(root, f.path) if f.kind == "missing" else None
            if link is not None:
                files.remove_quietly(root / link)  # the link itself, never what it points to
                links_removed = True
    if found.index is None:  # the published index itself is gone: nothing names the files
        [outcome] = await run_mirrors(config, store, workdir, only=copy.name)
        if outcome.error:
            out.unrepairable.append(
                f"the published index is gone; rebuilding failed: {outcome.error}"
            )
        else:
            out.done.append(
                f"the published index was gone: rebuilt the copy from the synced state "
                f"({outcome.status}, version {outcome.version})"
            )
            out.tally = outcome.copied
        return out
    assert copy.source is not None  # verify --repair refuses a received copy
    source = config.source(copy.source)
    assert isinstance(source, CatalogSource | MirrorSource)
    stacks = choose_stacks(
        copy,
        source.name,
        row.release,
        await store_mirrors.synced_stacks(store, row.source_id, row.release),
    )
    roots = {s.id: real_root(source, s) for s in stacks}
    admission = Admission(
        await store_mirrors.manifest_states(store, list(roots)), verifies=source.verify_signatures
    )
    async with HttpClient(config.http, verify=not source.insecure) as client:
        copier = Copier(client, target, out.requests)
        out.tally = copier.counts
        for spec_hash in sorted(found.damaged):
            record = found.records[spec_hash]
            label = f"{record.name}/{spec_hash[:7]}"
            known = [i for i in roots if (i, spec_hash) in admission.states]
            fine = [i for i in known if admission.check(i, record) is None]
            if not fine:
                why = admission.check(known[0], record) if known else None
                out.unrepairable.append(
                    f"{label}: not repairable: upstream no longer has it"
                    + (f" ({why})" if why else " (no synced stack of the copy lists it)")
                )
                continue
            try:
                await copier.spec(record, roots[fine[0]], admission, fine[0])
            except SpecRefused as exc:
                why = exc.reason
                if why.startswith("blob missing"):
                    why = f"upstream no longer has it ({why})"
                out.unrepairable.append(f"{label}: not repairable: {why}")
                continue
            except NotFoundError as exc:
                out.unrepairable.append(
                    f"{label}: not repairable: upstream no longer has it ({exc})"
                )
                continue
            except MirrorsyncError as exc:
                out.unrepairable.append(f"{label}: not repaired: {exc}")
                continue
            out.done.append(f"{label}: fetched again, checked")
        bad = {
            f.path for f in found.findings if f.kind not in ("orphan", "mode") and f.spec is None
        }
        if LAYOUT in bad and stacks:
            await copier.layout(roots[stacks[0].id])
            out.done.append(f"{LAYOUT}: fetched again")
        if INDEX_MANIFEST in bad:
            await publish(target, index_file(found.db_version, found.index))
            out.done.append(f"{INDEX_MANIFEST}: written again for the published index")
        keys = sorted(p for p in bad if p not in (LAYOUT, INDEX_MANIFEST))
    if keys:  # written by the copy run from the trusted keys, every file checked again
        [outcome] = await run_mirrors(config, store, workdir, only=copy.name, full=True)
        if outcome.error:
            out.unrepairable.append(f"{keys[0]}: not repaired: {outcome.error}")
        else:
            out.done.append(
                f"key files written again by the copy run ({outcome.status}, "
                f"version {outcome.version})"
            )
    # Judged again when blobs were unknown, or a linked directory became a real one.
    orphans = (await recheck()).orphans if found.unsure or links_removed else found.orphans
    if orphans:
        out.removed = await target.delete(orphans)
        await store_mirrors.forget_orphans(store, row.id, orphans)
        out.done.append(f"removed {plural(out.removed, 'orphan')}")
    return out
