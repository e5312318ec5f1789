"""One copy brought up to date (``CopyJob``): plan, download, publish, record, prune,
as ``mirrors/run.py`` describes; the OCI copy (``oci_copy.py``) is a kind of it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import anyio

from mirrorsync.config import CatalogSource, Config, MirrorCopy, MirrorSource
from mirrorsync.errors import (
    EXIT_PARTIAL,
    CopyError,
    FormatError,
    MirrorsyncError,
    NotFoundError,
    SignatureError,
)
from mirrorsync.fetch import HttpClient, Tally
from mirrorsync.formats.catalog import blob_url
from mirrorsync.formats.rawindex import RawInstall, parse_raw_index
from mirrorsync.logs import fields
from mirrorsync.mirrors import files
from mirrorsync.mirrors.admit import Admission
from mirrorsync.mirrors.download import Copier, CopyTally, SpecRefused
from mirrorsync.mirrors.layout import INDEX_MANIFEST, blob_relpath
from mirrorsync.mirrors.plan import Keepable, Selection, StackIndex, select
from mirrorsync.mirrors.publish import (
    build_index,
    due,
    publish,
    published_checksum,
    referenced,
    unreferenced,
)
from mirrorsync.mirrors.stacks import choose_stacks, real_root
from mirrorsync.mirrors.target import CopyTarget, TargetView, open_target
from mirrorsync.mirrors.wanted import Wanted, wanted
from mirrorsync.redact import Url, redact_url
from mirrorsync.store import Store, claims
from mirrorsync.store import mirrors as store_mirrors
from mirrorsync.store.manifests import OK, StackTarget
from mirrorsync.store.mirrors import Kept, LeftOut, MirrorRow, Published, SyncedStack
from mirrorsync.sync.index import unpack_index
from mirrorsync.sync.manifests import open_mirror
from mirrorsync.units import Verbatim, human_duration, human_size, plural

log = logging.getLogger("mirrorsync.mirror")

#: ``rebuilt``: the published state's index was gone from the disk (``rm -rf`` of the
#: copy): its files were fetched again and the same state written back.
MirrorStatus = Literal["published", "unchanged", "rebuilt", "failed", "dry run", "skipped"]
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


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


def utc_now() -> datetime:
    return datetime.now(UTC)


class CopyJob:
    def __init__(
        self,
        config: Config,
        store: Store,
        client: HttpClient,
        workdir: Path,
        copy: MirrorCopy,
        dry_run: bool,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.workdir = workdir
        self.copy = copy
        self.target: CopyTarget | None = None  # opened by run()
        self.dry_run = dry_run
        self.clock = clock
        self.outcome = MirrorOutcome(copy.name, "dry run" if dry_run else "unchanged")
        self.row: MirrorRow | None = None
        self.rebuilding = False  # the published index was missing on disk
        self.full = False  # never "unchanged" without planning and checking

    @property
    def _target(self) -> CopyTarget:
        assert self.target is not None  # opened by run()
        return self.target

    def _exists(self) -> bool:
        """Whether a directory target's directory is there (a dry run makes none)."""
        local = self._target.view().local
        return local is None or local.is_dir()

    def _now(self) -> str:
        return self.clock().astimezone(UTC).strftime(_TIME_FORMAT)

    async def run(self) -> MirrorOutcome:
        started = time.monotonic()
        try:
            self.target = open_target(self.copy, self.client, self.workdir, self.outcome.tally)
            try:
                await self._run()
            finally:
                await self.target.aclose()
        except MirrorsyncError as exc:
            self.outcome.exit_code = exc.exit_code
            await self._failed(str(exc))
        except OSError as exc:
            failure = self.target.failure(exc) if self.target else CopyError(str(exc))
            await self._failed(str(failure))
        self.outcome.seconds = time.monotonic() - started
        _log(self.outcome)
        return self.outcome

    async def _failed(self, error: str) -> None:
        self.outcome.status = "failed"
        self.outcome.error = error
        if self.row is not None and not self.dry_run:
            with anyio.CancelScope(shield=True):
                await store_mirrors.record_failure(self.store, self.row.id, error, self._now())

    async def _run(self) -> None:
        copy = self.copy
        assert copy.source is not None  # run_mirrors leaves received copies out
        source = self.config.source(copy.source)
        assert isinstance(source, CatalogSource | MirrorSource)  # checked by parse_config
        release = copy.release or (source.release if isinstance(source, MirrorSource) else "")
        source_id = await store_mirrors.source_id(self.store, source.name)
        if source_id is None:
            raise CopyError(
                f"source {source.name} has not been synced yet; run 'mirrorsync once' first"
            )
        if self.dry_run:
            self.row = await store_mirrors.find(self.store, copy.name)
        else:
            self.row = await store_mirrors.ensure(
                self.store, copy.name, self._target.display, source_id, release
            )
        # On PostgreSQL several instances may run at once: one updates a copy at a time.
        key = self.row.id if self.row is not None else 0
        async with claims.claim(self.store, claims.Kind.MIRROR, key) as holder:
            if holder is not None:
                self.outcome.status = "skipped"
                log.info(
                    "mirror %s: another instance is updating it (%s)", Verbatim(copy.name), holder
                )
                return
            await self._copy(source, release, source_id)

    async def _chosen(
        self,
        source: CatalogSource | MirrorSource,
        release: str,
        source_id: int,
        layouts: tuple[str, ...] = ("v3",),
    ) -> tuple[list[SyncedStack], Admission, Wanted]:
        """The copy's stacks, what of them may enter it, and the hashes it is asked for."""
        copy = self.copy
        stacks = choose_stacks(
            copy,
            source.name,
            release,
            await store_mirrors.synced_stacks(self.store, source_id, release),
            layouts,
        )
        # The one rule (mirrors/admit.py): what the crawl recorded decides what may enter.
        admission = Admission(
            await store_mirrors.manifest_states(self.store, [s.id for s in stacks]),
            verifies=source.verify_signatures,
        )
        want = await anyio.to_thread.run_sync(
            wanted, copy, self.config.path, f"mirrors[{self.config.mirrors.index(copy)}]"
        )
        return stacks, admission, want

    def _note_missing_index(self, current: str | None, where: str) -> None:
        """A published copy whose index is gone from its target: rebuild it, saying so."""
        row = self.row
        if row is not None and row.version and current is None and not self.dry_run:
            self.rebuilding = True
            log.warning(
                "mirror %s: the published index (version %d) is missing from %s; "
                "rebuilding the copy",
                Verbatim(self.copy.name),
                row.version,
                Verbatim(where),
            )

    async def _copy(
        self, source: CatalogSource | MirrorSource, release: str, source_id: int
    ) -> None:
        copy = self.copy
        stacks, admission, want = await self._chosen(source, release, source_id)
        kept_rows = await store_mirrors.kept(self.store, self.row.id) if self.row else {}
        plan_key = plan_key_of(copy, stacks, admission, want, self._live(kept_rows))
        target = self._target
        if not self.dry_run:
            await target.prepare()
        row = self.row
        view = target.view()
        current = await anyio.to_thread.run_sync(published_checksum, view)
        if (
            current is not None
            and await anyio.to_thread.run_sync(view.size, blob_relpath("sha256", current)) is None
        ):
            current = None  # the index manifest names a blob that is gone: no index
        self._note_missing_index(current, target.display)
        if (
            not self.full
            and row is not None
            and row.plan_key == plan_key
            and row.index_checksum is not None
            and current == row.index_checksum
        ):
            try:
                await self._settle(plan_key, None)
                # Still left out (what made the published state is what it was).
                self.outcome.left_out = await store_mirrors.left_out(self.store, row.id)
                self.outcome.kept = sorted(kept_rows.values(), key=lambda k: (k.name, k.hash))
                self.outcome.wanted_missing = (
                    await store_mirrors.wanted_missing_by_copy(self.store)
                ).get(copy.name, [])
                return
            except CopyError as exc:  # a file of the published state is gone: repair it
                log.warning("mirror %s: %s; checking every file again", Verbatim(copy.name), exc)
        roots = [real_root(source, s) for s in stacks]
        indexes = [
            await self._index(s, root, f"{source.name}:{release}/{s.name}", s.id)
            for s, root in zip(stacks, roots, strict=True)
        ]
        keeping = await self._keeping(indexes, stacks, roots, admission, current, kept_rows)
        selection = await anyio.to_thread.run_sync(
            select, copy, indexes, admission, want.hashes, keeping.keepable
        )
        del indexes
        if selection.missing:
            log.warning(
                "mirror %s: %d link/run dependencies are in no index (first: %s); left out",
                Verbatim(copy.name),
                len(selection.missing),
                Verbatim(selection.missing[0]),
            )
        keys: dict[str, bytes] = {}
        if source.verify_signatures:
            keys, selection = await self._signer_keys(source, stacks, roots, admission, selection)
        if admission.left and copy.on_error == "fail":
            await self._left_out(admission)  # fails now: nothing to download for nothing
        copier = Copier(self.client, target, self.outcome.tally, dry_run=self.dry_run)
        self.outcome.copied = copier.counts
        if current is not None and row is not None and current == row.index_checksum:
            # What the published state references was checked as it was written.
            with contextlib.suppress(CopyError, FormatError):
                copier.published = frozenset(
                    (await anyio.to_thread.run_sync(referenced, view)).sizes
                )
        await copier.layout(roots[0])
        before = len(admission.left)
        await self._download(copier, selection, admission, frozenset(keeping.keepable))
        if len(admission.left) != before:  # refused at copy time: they and what needs them
            selection = selection.without(admission)
        signers = {s for h, i in selection.stacks.items() if (s := admission.expected(i, h).signer)}
        await copier.keys({f: k for f, k in keys.items() if f in signers})
        await self._left_out(admission)
        index = build_index(selection.db_version, list(selection.records.values()))
        # The binaries the filters chose (the rest came in as their dependencies), and
        # their tarballs apart from the whole copy.
        self.outcome.matched = len(set(selection.chosen) & set(selection.roots))
        self.outcome.tarball_bytes = sum(copier.tarballs.values())
        if self.dry_run:
            await self._dry_run_report(
                copier, selection, index.checksum, len(index.data), len(index.manifest)
            )
            await self._record_kept(keeping, selection, want)  # reported, not recorded
            return
        if current != index.checksum:
            await publish(target, index)
        await self._record_kept(keeping, selection, want)
        await self._settle(plan_key, selection)

    def _live(self, kept_rows: dict[str, Kept]) -> list[str]:
        """The kept specs ``keep: DURATION`` still holds now (all of them otherwise):
        when one expires, the copy's plan changes."""
        seconds = self.copy.keep_seconds
        if seconds is None:
            return sorted(kept_rows)
        now = self.clock().astimezone(UTC)
        return sorted(h for h, k in kept_rows.items() if _age(k.left_upstream_at, now) < seconds)

    async def _keeping(
        self,
        indexes: list[StackIndex],
        stacks: list[SyncedStack],
        roots: list[str],
        admission: Admission,
        current: str | None,
        kept_rows: dict[str, Kept],
    ) -> _Keeping:
        """Which binaries of the published copy upstream no longer lists (new ones, and
        those kept before), and which of them the copy's ``keep`` lets stay."""
        upstream = {h for i in indexes for h, r in i.index.installs.items() if r.in_buildcache}
        at = self._now()  # the run's one time: when specs left upstream, and the copy
        keeping = _Keeping(at, back=[h for h in kept_rows if h in upstream])
        candidates = {h: k for h, k in kept_rows.items() if h not in upstream}
        row = self.row
        if row is not None and current is not None and current == row.index_checksum:
            previous = await anyio.to_thread.run_sync(
                _published_records, self._target.view(), current
            )
            for spec_hash, record in sorted(previous.items()):
                if not record.in_buildcache or spec_hash in upstream or spec_hash in kept_rows:
                    continue
                # The crawl's verdict when the copy took it in (its rows outlive the index).
                found = [
                    (s.id, state)
                    for s in stacks
                    if (state := admission.states.get((s.id, spec_hash))) is not None
                    and state.status == OK
                    and state.manifest_sha256 is not None
                ]
                stack_id, state = found[0] if found else (stacks[0].id, None)
                new = Kept(
                    spec_hash,
                    record.name,
                    at,
                    stack_id,
                    state.manifest_sha256 if state else None,
                    state.signer if state else None,
                    record.raw.decode(),
                )
                keeping.left.append(new)
                candidates[spec_hash] = new
        keeping.candidates = candidates
        if self.copy.keep == "upstream":
            return keeping
        seconds = self.copy.keep_seconds
        now = self.clock().astimezone(UTC)
        root_of = {s.id: r for s, r in zip(stacks, roots, strict=True)}
        for spec_hash, k in candidates.items():
            if k.manifest_sha256 is None:
                log.warning(
                    "mirror %s: cannot keep %s %s: no verified record of its manifest",
                    Verbatim(self.copy.name),
                    Verbatim(k.name),
                    Verbatim(spec_hash),
                )
                continue
            if seconds is not None and _age(k.left_upstream_at, now) >= seconds:
                continue
            kept_record = _record_of(spec_hash, k.record_json)
            if kept_record is None:
                continue
            admission.keep(k.stack_id, spec_hash, k.manifest_sha256, k.signer)
            keeping.keepable[spec_hash] = Keepable(
                kept_record, root_of.get(k.stack_id, roots[0]), k.stack_id, seconds is not None
            )
        return keeping

    async def _record_kept(self, keeping: _Keeping, selection: Selection, want: Wanted) -> None:
        """History: what left upstream, what the copy let go; what it still keeps (a dry
        run only reports what it would keep and what is wanted but not upstream)."""
        at = keeping.at
        held = selection.roots.keys()
        gone = [h for h in keeping.candidates if h not in held]
        left = [
            k if k.hash in held else dataclasses.replace(k, left_copy_at=at) for k in keeping.left
        ]
        new = {k.hash for k in keeping.left}
        if self.row is not None and not self.dry_run:
            await store_mirrors.record_kept(
                self.store, self.row.id, left, [h for h in gone if h not in new], keeping.back, at
            )
        self.outcome.kept = sorted(
            (k for h, k in keeping.candidates.items() if h in held), key=lambda k: (k.name, k.hash)
        )
        missing = [(h, want.names.get(h, "")) for h in selection.wanted_missing]
        self.outcome.wanted_missing = missing
        if self.row is not None and not self.dry_run:
            await store_mirrors.record_wanted_missing(self.store, self.row.id, missing)
        for spec_hash, name in missing:
            log.warning(
                "mirror %s: wanted but not in upstream: %s %s",
                Verbatim(self.copy.name),
                Verbatim(name),
                Verbatim(spec_hash),
            )

    async def _left_out(self, admission: Admission) -> None:
        """Record and report the specs left out; with ``on_error: fail``, fail the copy."""
        left = admission.left_out
        self.outcome.left_out = left
        if self.row is not None and not self.dry_run:
            await store_mirrors.record_left_out(self.store, self.row.id, left)
        for x in left:
            log.warning(
                "mirror %s: left out %s %s: %s",
                Verbatim(self.copy.name),
                Verbatim(x.name),
                Verbatim(x.hash),
                x.reason,
            )
        if left and self.copy.on_error == "fail":
            first = left[0]
            raise CopyError(
                f"{plural(len(left), 'spec')} left out (first: {first.name} {first.hash}: "
                f"{first.reason}); with on_error: fail the copy keeps its last published state"
            )

    async def _signer_keys(
        self,
        source: CatalogSource | MirrorSource,
        stacks: list[SyncedStack],
        roots: list[str],
        admission: Admission,
        selection: Selection,
    ) -> tuple[dict[str, bytes], Selection]:
        """The trusted keys (as the sync trusts them: ``trusted_keys``, never upstream's
        key index when they are given) that signed a selected manifest, armoured. A
        manifest whose signer is no longer trusted is left out."""
        wanted: dict[str, set[str]] = {}  # fingerprint -> hashes it signed
        for spec_hash, stack_id in selection.stacks.items():
            signer = admission.expected(stack_id, spec_hash).signer
            if signer is not None:
                wanted.setdefault(signer, set()).add(spec_hash)
        keys: dict[str, bytes] = {}
        for stack, root in zip(stacks, roots, strict=True):
            if not wanted.keys() - keys.keys():
                break
            target = StackTarget(stack.id, source.name, stack.release, stack.name, root, "v3", 0)
            try:
                mirror = await open_mirror(
                    self.client,
                    target,
                    Url(root),
                    verify_signatures=True,
                    gnupg_home=self.workdir / f"mirror-gnupg-{stack.id}",
                    tally=self.outcome.tally,
                    trusted_keys=source.trusted_keys,
                )
            except SignatureError as exc:
                raise CopyError(f"cannot load the keys the copy is signed with: {exc}") from None
            assert mirror.keyring is not None
            for fingerprint in wanted.keys() - keys.keys():
                key = await mirror.keyring.export_armored(fingerprint)
                if key:
                    keys[fingerprint] = key
        untrusted = wanted.keys() - keys.keys()
        if untrusted:
            for fingerprint in untrusted:
                for spec_hash in wanted[fingerprint]:
                    admission.leave_out(
                        selection.records[spec_hash],
                        f"signed by {fingerprint}, no longer a trusted key",
                    )
            selection = selection.without(admission)
        return keys, selection

    async def _index(self, stack: SyncedStack, root: str, label: str, stack_id: int) -> StackIndex:
        """The stack's upstream index as the last sync saw it (its content address)."""
        assert stack.index_checksum is not None
        url = blob_url(root, "sha256", stack.index_checksum)
        dest = self.workdir / f"mirror-index-{stack.index_checksum}.json"
        try:
            await self.client.download(
                Url(url),
                dest,
                expected_sha256=stack.index_checksum,
                max_bytes=self.config.limits.cap("index"),
                limit_name="limits.index",
                tally=self.outcome.tally,
            )
        except NotFoundError:
            raise CopyError(
                f"{redact_url(url)}: the index synced last is no longer on the mirror; "
                "the next 'mirrorsync once' syncs the current one"
            ) from None
        try:
            data = await anyio.to_thread.run_sync(dest.read_bytes)
            # Read as the sync reads it: a gzip-compressed index blob is unpacked.
            data = await anyio.to_thread.run_sync(
                unpack_index, data, redact_url(url), "detect", self.config.limits.cap("index")
            )
            index = await anyio.to_thread.run_sync(parse_raw_index, data, redact_url(url))
        finally:
            files.remove_quietly(dest)
        return StackIndex(label, root, index, stack_id)

    async def _download(
        self,
        copier: Copier,
        selection: Selection,
        admission: Admission,
        kept: frozenset[str] = frozenset(),
    ) -> None:
        async def items() -> AsyncIterator[tuple[RawInstall, str, int]]:
            for spec_hash in sorted(selection.roots):
                yield (
                    selection.records[spec_hash],
                    selection.roots[spec_hash],
                    selection.stacks[spec_hash],
                )

        async def work(item: tuple[RawInstall, str, int]) -> None:
            record, root, stack_id = item
            try:
                await copier.spec(record, root, admission, stack_id)
            except SpecRefused as exc:  # this spec (and what needs it) is left out
                admission.leave_out(record, exc.reason)
            except NotFoundError:
                if record.hash not in kept:
                    raise
                admission.leave_out(
                    record,
                    "kept after upstream deleted it, but a file of it in the copy is missing "
                    "or not what was verified, and upstream no longer has it",
                )

        async def consume(_: None) -> None:
            return None

        from mirrorsync.sync.pool import run_pool

        try:
            await run_pool(items(), work, consume, workers=self.config.http.concurrency)
        except BaseExceptionGroup as group:  # the first blob that failed stops the copy
            raise first_error(group) from None

    async def _settle(self, plan_key: str, selection: Selection | None) -> None:
        """Record what the copy's index now lists, then delete what is due."""
        assert self.row is not None
        target = self._target
        view = target.view()
        keep = await anyio.to_thread.run_sync(referenced, view)
        index_checksum = await anyio.to_thread.run_sync(published_checksum, view)
        assert index_checksum is not None
        at = self._now()
        recorded = await store_mirrors.record_published(
            self.store,
            self.row,
            Published(index_checksum, frozenset(keep.binaries), keep.bytes, plan_key),
            at,
        )
        o = self.outcome
        o.status = "published" if recorded.event_id is not None else "unchanged"
        if o.status == "unchanged" and self.rebuilding:
            o.status = "rebuilt"
        o.version, o.added, o.removed = recorded.version, recorded.added, recorded.removed
        o.binaries, o.bytes = len(keep.binaries), keep.bytes
        orphans = unreferenced(await target.inventory(), keep)
        since = await store_mirrors.note_orphans(self.store, self.row.id, orphans, at)
        gone = due(since, self.clock().astimezone(UTC), self.copy.delete_after_seconds)
        o.deleted = await target.delete(gone)
        o.deleted_bytes = sum(orphans[r] for r in gone)
        await store_mirrors.forget_orphans(self.store, self.row.id, gone)
        o.waiting = len(orphans) - len(gone)
        o.waiting_bytes = sum(orphans.values()) - o.deleted_bytes

    async def _dry_run_report(
        self, copier: Copier, selection: Selection, checksum: str, size: int, manifest: int
    ) -> None:
        o = self.outcome
        o.binaries = len(selection.roots)
        keep = dict(copier.referenced)
        keep[blob_relpath("sha256", checksum)] = size
        keep[INDEX_MANIFEST] = manifest
        o.bytes = sum(keep.values())
        existing = await self._target.inventory() if self._exists() else {}
        orphans = {rel: n for rel, n in existing.items() if rel not in keep}
        o.deleted = len(orphans)  # with delete_after 0; else some wait, as the real run says
        o.deleted_bytes = sum(orphans.values())


@dataclass
class _Keeping:
    """Specs of the published copy upstream no longer lists."""

    at: str  # when this run saw it
    back: list[str] = field(default_factory=list)  # kept ones upstream lists again
    left: list[Kept] = field(default_factory=list)  # left upstream since the last run
    candidates: dict[str, Kept] = field(default_factory=dict)  # every one not upstream now
    keepable: dict[str, Keepable] = field(default_factory=dict)  # those keep lets stay


def _age(at: str, now: datetime) -> float:
    return (now - datetime.strptime(at, _TIME_FORMAT).replace(tzinfo=UTC)).total_seconds()


def _published_records(view: TargetView, checksum: str) -> dict[str, RawInstall]:
    """The install records of the copy's published index (its own, whose checksum the
    store recorded)."""
    rel = blob_relpath("sha256", checksum)
    data = view.read(rel)
    if data is None or hashlib.sha256(data).hexdigest() != checksum:
        return {}
    try:
        return parse_raw_index(data, view.where(rel)).installs
    except FormatError:
        return {}


def _record_of(spec_hash: str, record_json: str) -> RawInstall | None:
    document = (
        b'{"database":{"version":"8","installs":{"'
        + spec_hash.encode()
        + b'":'
        + record_json.encode()
        + b"}}}"
    )
    try:
        return parse_raw_index(document).installs.get(spec_hash)
    except FormatError:
        return None


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = first_error(exc)
        if isinstance(exc, MirrorsyncError | OSError):
            return exc
    return group


def plan_key_of(
    copy: MirrorCopy,
    stacks: list[SyncedStack],
    admission: Admission,
    want: Wanted,
    live: list[str],
) -> str:
    """What a copy's content follows from: its stacks' indexes, its filters, the
    crawl's verdicts on each manifest, the hashes it is asked for and what it keeps."""
    wanted_digest = hashlib.sha256("\n".join(sorted(want.hashes)).encode()).hexdigest()
    material = {
        "wanted": [wanted_digest, copy.keep, live, copy.by_glob],
        "stacks": [(s.name, s.index_checksum) for s in stacks],
        "filters": [copy.packages, copy.exclude_packages, copy.os, copy.targets, copy.platforms],
        "admission": admission.fingerprint(),
        "on_error": copy.on_error,
        "format": 2,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _log(o: MirrorOutcome) -> None:
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
