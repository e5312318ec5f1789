"""One copy brought up to date (``CopyJob``): after planning (``mirrors/planner.py``), its
download, publish, record and prune, as ``mirrors/run.py`` describes, and its failure;
the OCI copy (``oci_copy.py``) is a kind of it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio

from mirrorsync.config import CatalogSource, MirrorSource
from mirrorsync.errors import CopyError, FormatError, MirrorsyncError, NotFoundError
from mirrorsync.formats.rawindex import RawInstall
from mirrorsync.mirrors.admit import Admission
from mirrorsync.mirrors.download import Copier, SpecRefused
from mirrorsync.mirrors.layout import INDEX_MANIFEST, blob_relpath
from mirrorsync.mirrors.outcome import MirrorOutcome, log_outcome
from mirrorsync.mirrors.plan import Selection, select
from mirrorsync.mirrors.planner import CopyPlanner, Keeping, plan_key_of
from mirrorsync.mirrors.publish import (
    build_index,
    due,
    publish,
    published_checksum,
    referenced,
    unreferenced,
)
from mirrorsync.mirrors.stacks import real_root
from mirrorsync.mirrors.target import open_target
from mirrorsync.mirrors.wanted import Wanted
from mirrorsync.store import claims
from mirrorsync.store import mirrors as store_mirrors
from mirrorsync.store.mirrors import Published
from mirrorsync.units import Verbatim, plural

log = logging.getLogger("mirrorsync.mirror")


def utc_now() -> datetime:
    return datetime.now(UTC)


class CopyJob(CopyPlanner):
    def _exists(self) -> bool:
        """Whether a directory target's directory is there (a dry run makes none)."""
        local = self._target.view().local
        return local is None or local.is_dir()

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
        log_outcome(self.outcome)
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

    async def _record_kept(self, keeping: Keeping, selection: Selection, want: Wanted) -> None:
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


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = first_error(exc)
        if isinstance(exc, MirrorsyncError | OSError):
            return exc
    return group
