"""Copies into an OCI registry repository (``mirrors[].path: oci://host/repo``).

The same selection as a directory copy (stacks, filters, environments and
``hashes``, the crawl's verdicts), written as ``spack buildcache push
oci://...`` writes it (``mirrors/oci_target.py``):

1. each selected binary's tarball as a layer blob (uploaded unless the
   repository has it; its uncompressed digest, Spack's ``diff_id``, taken from
   the image already there or computed from the tarball);
2. each binary's image: its config (the spec file as Spack pushes it), its
   link/run dependencies' layers then its own, tagged ``<name>-<version>-<hash>.spack``;
3. the index image ``index.spack``, last;
4. the published state recorded (version, members, ``mirror.updated`` event);
5. spec tags the index no longer lists deleted once ``delete_after`` has passed
   (when the registry allows deletion).

From a v3 source the spec file is the spec blob of the manifest the crawl
verified (its signature, if the source verifies them, was checked then): the
copy holds the verified specs, unsigned, as Spack pushes to a registry. From an
OCI source the images are copied as they are (manifest bytes, config, layers).
``keep:`` other than ``upstream`` is not supported for OCI targets (config check).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import anyio

from mirrorsync.config import CatalogSource, MirrorSource
from mirrorsync.errors import (
    CopyError,
    FormatError,
    IntegrityError,
    MirrorsyncError,
    NotFoundError,
)
from mirrorsync.fetch import Fetched, Url
from mirrorsync.fetch.oci import OciRepository, oci_reference
from mirrorsync.formats.catalog import blob_url
from mirrorsync.formats.manifest import spec_manifest_records
from mirrorsync.formats.oci import (
    CONFIG_MEDIA_TYPE,
    DESCRIPTION,
    LAYER_MEDIA_TYPE,
    Descriptor,
    digest_hex,
    manifest_bytes,
    parse_image_manifest,
    spec_config,
    spec_tag,
)
from mirrorsync.formats.rawindex import RawInstall, parse_raw_index
from mirrorsync.inflate import gunzip
from mirrorsync.mirrors import files
from mirrorsync.mirrors.admit import CHANGED, Admission
from mirrorsync.mirrors.download import SpecRefused
from mirrorsync.mirrors.job import CopyJob, first_error
from mirrorsync.mirrors.oci_images import (
    Layer,
    Prepared,
    architecture,
    runtime_order,
    unpacked_sha256,
)
from mirrorsync.mirrors.ocitarget import OciCopyTarget, OciTarget, config_json
from mirrorsync.mirrors.plan import Selection, StackIndex, select
from mirrorsync.mirrors.planner import plan_key_of
from mirrorsync.mirrors.publish import build_index, due
from mirrorsync.mirrors.stacks import real_root
from mirrorsync.redact import join_url, redact_url
from mirrorsync.store import mirrors as store_mirrors
from mirrorsync.store.mirrors import Published
from mirrorsync.sync.index import unpack_index
from mirrorsync.sync.pool import run_pool

_SPEC_FILE_CAP = 64 << 20  # a spec file unpacked (the public cache's are ~100 KB)
_STEP = 1 << 20


class OciCopyJob(CopyJob):
    """A copy whose ``path`` is a registry repository."""

    _busy: dict[str, anyio.Event]

    def _registry(self, root: str) -> OciRepository:
        """An OCI source's repository, one per root for the run (its token reused)."""
        registry = self._registries.get(root)
        if registry is None:
            registry = self._registries[root] = OciRepository(self.client, oci_reference(Url(root)))
        return registry

    def _scratch(self) -> Path:
        """A new scratch file of this copy's own, for one blob on its way."""
        fd, name = tempfile.mkstemp(dir=self.workdir, prefix="oci-blob-")
        os.close(fd)
        return Path(name)

    async def _copy(
        self, source: CatalogSource | MirrorSource, release: str, source_id: int
    ) -> None:
        copy = self.copy
        self._busy = {}
        self._registries: dict[str, OciRepository] = {}
        stacks, admission, want = await self._chosen(
            source, release, source_id, layouts=("v3", "oci")
        )
        plan_key = plan_key_of(copy, stacks, admission, want, [])
        opened = self._target
        assert isinstance(opened, OciCopyTarget)  # target.open_target, for an oci:// path
        target = opened.oci
        row = self.row
        current = await target.published_index()
        self._note_missing_index(current, target.url)
        if (
            not self.full
            and row is not None
            and row.plan_key == plan_key
            and row.index_checksum is not None
            and current == row.index_checksum
        ):
            self.outcome.binaries, self.outcome.bytes = row.binaries, row.bytes
            self.outcome.version = row.version
            self.outcome.left_out = await store_mirrors.left_out(self.store, row.id)
            if not self.dry_run:  # checked: the same state (clears a failure of an earlier run)
                members = frozenset(await store_mirrors.members(self.store, row.id))
                published = Published(row.index_checksum, members, row.bytes, plan_key)
                await store_mirrors.record_published(self.store, row, published, self._now())
            await self._prune(target, None)
            return
        roots = [real_root(source, s) for s in stacks]
        indexes = []
        for s, root in zip(stacks, roots, strict=True):
            label = f"{source.name}:{release}/{s.name}"
            if s.layout == "oci":
                indexes.append(await self._oci_index(s.index_checksum or "", root, s.id, label))
            else:
                indexes.append(await self._index(s, root, label, s.id))
        selection = await anyio.to_thread.run_sync(
            select, copy, indexes, admission, want.hashes, {}
        )
        del indexes
        if admission.left and copy.on_error == "fail":
            await self._left_out(admission)
        layouts = {s.id: s.layout for s in stacks}
        prepared = await self._layers(target, selection, admission, layouts)
        if admission.left:
            selection = selection.without(admission)
        await self._images(target, selection, prepared)
        await self._left_out(admission)
        index = build_index(selection.db_version, list(selection.records.values()))
        binaries = frozenset(selection.roots)
        size = sum(p.layer.descriptor.size for h, p in prepared.items() if h in binaries)
        if self.dry_run:
            self.outcome.binaries, self.outcome.bytes = len(binaries), size
            return
        if current != index.checksum:
            await target.publish_index(index.data)
        assert row is not None
        recorded = await store_mirrors.record_published(
            self.store, row, Published(index.checksum, binaries, size, plan_key), self._now()
        )
        o = self.outcome
        o.status = "published" if recorded.event_id is not None else "unchanged"
        if o.status == "unchanged" and self.rebuilding:
            o.status = "rebuilt"
        o.version, o.added, o.removed = recorded.version, recorded.added, recorded.removed
        o.binaries, o.bytes = len(binaries), size
        await self._prune(
            target,
            {spec_tag(r.name, r.version, h) for h, r in selection.records.items() if h in binaries},
        )

    # -- the upstream index ------------------------------------------------------

    async def _oci_index(self, checksum: str, root: str, stack_id: int, label: str) -> StackIndex:
        """An OCI source's index as the last sync saw it (its blob, by digest)."""
        registry = self._registry(root)
        dest = self.workdir / f"mirror-index-{checksum}.json"
        try:
            await registry.download(
                checksum,
                None,
                dest,
                tally=self.outcome.tally,
                max_bytes=self.config.limits.cap("index"),
                limit_name="limits.index",
            )
            data = await anyio.to_thread.run_sync(dest.read_bytes)
        except NotFoundError:
            raise CopyError(
                f"{registry.blob_url(checksum)}: the index synced last is no longer in the "
                "registry; the next 'mirrorsync once' syncs the current one"
            ) from None
        finally:
            files.remove_quietly(dest)
        url = registry.blob_url(checksum).display
        data = await anyio.to_thread.run_sync(
            unpack_index, data, url, "detect", self.config.limits.cap("index")
        )
        index = await anyio.to_thread.run_sync(parse_raw_index, data, url)
        return StackIndex(label, root, index, stack_id)

    # -- 1: layers ---------------------------------------------------------------

    async def _layers(
        self,
        target: OciTarget,
        selection: Selection,
        admission: Admission,
        layouts: dict[int, str | None],
    ) -> dict[str, Prepared]:
        prepared: dict[str, Prepared] = {}

        async def items() -> AsyncIterator[str]:
            for spec_hash in sorted(selection.roots):
                yield spec_hash

        async def work(spec_hash: str) -> None:
            record = selection.records[spec_hash]
            root, stack_id = selection.roots[spec_hash], selection.stacks[spec_hash]
            expected = admission.expected(stack_id, spec_hash).manifest_sha256
            try:
                if layouts.get(stack_id) == "oci":
                    done = await self._from_oci(target, record, root, expected)
                else:
                    done = await self._from_v3(target, record, root, expected)
            except SpecRefused as exc:
                admission.leave_out(record, exc.reason)
                return
            prepared[spec_hash] = done

        async def consume(_: None) -> None:
            return None

        try:
            await run_pool(items(), work, consume, workers=self.config.http.concurrency)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        return prepared

    async def _from_v3(
        self, target: OciTarget, record: RawInstall, root: str, expected: str | None
    ) -> Prepared:
        url = join_url(root, record.manifest_path)
        data = await self._get(url)
        self.outcome.copied.manifests_fetched += 1
        if hashlib.sha256(data).hexdigest() != expected:
            raise SpecRefused(CHANGED)
        try:
            tarball, spec, _ = spec_manifest_records(data, url)
        except FormatError as exc:
            raise SpecRefused(str(exc)) from None
        spec_url = blob_url(root, spec.checksum_algorithm, spec.checksum)
        try:
            raw = await self._get(spec_url, length=spec.content_length, sha256=spec.checksum)
            text = raw
            if spec.compression == "gzip" or raw[:2] == b"\x1f\x8b":
                text = gunzip(
                    raw,
                    redact_url(spec_url),
                    max_bytes=_SPEC_FILE_CAP,
                    limit_name="a spec file's",
                    what="spec file",
                )
            spec_file = config_json(text, "spec file", redact_url(spec_url))
        except (IntegrityError, NotFoundError, FormatError) as exc:
            raise SpecRefused(f"spec file: {exc}") from None
        # Spack's push writes these beside the spec (``_oci_push``'s extra_config);
        # the archive time is left out, so the same spec gives the same config.
        spec_file["buildcache_layout_version"] = 3
        spec_file["binary_cache_checksum"] = {"hash_algorithm": "sha256", "hash": tarball.checksum}
        spec_file["archive_size"] = tarball.content_length
        spec_file["archive_compression"] = "gzip"
        layer = await self._layer(
            target,
            record,
            blob_url(root, "sha256", tarball.checksum),
            tarball.checksum,
            tarball.content_length,
            None,
        )
        return Prepared(record, layer, spec_file)

    async def _from_oci(
        self, target: OciTarget, record: RawInstall, root: str, expected: str | None
    ) -> Prepared:
        registry = self._registry(root)
        tag = spec_tag(record.name, record.version, record.hash)
        data, url = await registry.manifest(tag, self.outcome.tally)
        self.outcome.copied.manifests_fetched += 1
        if hashlib.sha256(data).hexdigest() != expected:
            raise SpecRefused(CHANGED)
        manifest = parse_image_manifest(data, url.display)
        for blob in (*manifest.layers, manifest.config):
            await self._copy_blob(target, registry, blob)
        own = manifest.layers[-1]
        layer = Layer(own, "")
        return Prepared(record, layer, None, data)

    async def _copy_blob(
        self, target: OciTarget, registry: OciRepository, blob: Descriptor
    ) -> None:
        """One blob from an OCI source into the target; images share their dependencies'
        layers, so a blob another image is copying now is waited for, not fetched twice."""
        busy = self._busy.get(blob.sha256)
        if busy is not None:
            await busy.wait()
            if not await target.has_blob(blob.sha256, blob.size) and not self.dry_run:
                raise SpecRefused(f"blob sha256:{blob.sha256} could not be copied")
            return
        self._busy[blob.sha256] = anyio.Event()
        try:
            await self._copy_new_blob(target, registry, blob)
        finally:
            self._busy[blob.sha256].set()

    async def _copy_new_blob(
        self, target: OciTarget, registry: OciRepository, blob: Descriptor
    ) -> None:
        if await target.has_blob(blob.sha256, blob.size):
            self.outcome.copied.blobs_present += 1
            return
        temp = self._scratch()
        self.outcome.copied.blobs_fetched += 1
        self.outcome.copied.bytes_fetched += blob.size
        if self.dry_run:
            return
        try:
            await registry.download(
                blob.sha256, blob.size, temp, tally=self.outcome.tally, max_bytes=blob.size
            )
            await target.put_blob(blob.sha256, blob.size, temp)
        except (IntegrityError, NotFoundError) as exc:
            raise SpecRefused(f"blob: {exc}") from None
        finally:
            files.remove_quietly(temp)

    async def _layer(
        self,
        target: OciTarget,
        record: RawInstall,
        url: str,
        sha256: str,
        size: int,
        diff_id: str | None,
    ) -> Layer:
        """The tarball in the target, and its uncompressed digest: from the image already
        there for this spec (same last layer), else computed while copying it."""
        descriptor = Descriptor(LAYER_MEDIA_TYPE, sha256, size)
        if diff_id is None and await target.has_blob(sha256, size):
            diff_id = await self._known_diff_id(target, record, sha256)
            if diff_id is not None:
                self.outcome.copied.blobs_present += 1
                return Layer(descriptor, diff_id)
        temp = self._scratch()
        self.outcome.copied.blobs_fetched += 1
        self.outcome.copied.bytes_fetched += size
        if self.dry_run:
            return Layer(descriptor, diff_id or "")
        try:
            try:
                await self.client.download(
                    Url(url),
                    temp,
                    expected_length=size,
                    expected_sha256=sha256,
                    max_bytes=size,
                    tally=self.outcome.tally,
                )
            except (IntegrityError, NotFoundError) as exc:
                why = "corrupt blob" if isinstance(exc, IntegrityError) else "blob missing"
                raise SpecRefused(f"{why}: {exc}") from None
            # The uncompressed digest (CPU, in a worker thread) while the upload goes.
            unpacked: list[str] = []

            async def digest() -> None:
                unpacked.append(await anyio.to_thread.run_sync(unpacked_sha256, temp, url))

            async with anyio.create_task_group() as tg:
                tg.start_soon(digest)
                await target.put_blob(sha256, size, temp)
            computed = unpacked[0]
        finally:
            files.remove_quietly(temp)
        return Layer(descriptor, f"sha256:{computed}")

    async def _known_diff_id(
        self, target: OciTarget, record: RawInstall, sha256: str
    ) -> str | None:
        found = await target.image(spec_tag(record.name, record.version, record.hash))
        if found is None or found[1].layers[-1].sha256 != sha256:
            return None
        config = found[1].config
        try:
            data = await target.repository.blob(config.sha256, config.size, target.tally)
            rootfs = config_json(data, "image config", target.url).get("rootfs")
            diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
            last = diff_ids[-1] if isinstance(diff_ids, list) and diff_ids else None
            return f"sha256:{digest_hex(last, 'image config')}"
        except (MirrorsyncError, IndexError):
            return None

    # -- 2: images -----------------------------------------------------------------

    async def _images(
        self, target: OciTarget, selection: Selection, prepared: dict[str, Prepared]
    ) -> None:
        async def items() -> AsyncIterator[str]:
            for spec_hash in sorted(selection.roots):
                if spec_hash in prepared:
                    yield spec_hash

        async def work(spec_hash: str) -> None:
            await self._image(target, selection, prepared, spec_hash)

        async def consume(_: None) -> None:
            return None

        try:
            await run_pool(items(), work, consume, workers=self.config.http.concurrency)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    async def _image(
        self,
        target: OciTarget,
        selection: Selection,
        prepared: dict[str, Prepared],
        spec_hash: str,
    ) -> None:
        item = prepared[spec_hash]
        record = item.record
        tag = spec_tag(record.name, record.version, record.hash)
        if item.verbatim is not None:
            data = item.verbatim
        else:
            assert item.spec_file is not None
            layers = [
                prepared[h].layer for h in runtime_order(selection, spec_hash) if h in prepared
            ]
            config = spec_config(
                item.spec_file, architecture(record.target), [x.diff_id for x in layers]
            )
            config_sha = hashlib.sha256(config).hexdigest()
            if not self.dry_run:
                await target.put_blob(config_sha, len(config), config)
            data = manifest_bytes(
                Descriptor(CONFIG_MEDIA_TYPE, config_sha, len(config)),
                [x.descriptor for x in layers],
                {
                    DESCRIPTION: f"{record.name}@={record.version} platform={record.platform} os={record.os} target={record.target}"
                },
            )
        found = await target.image(tag)
        if found is not None and found[0] == data:
            return
        if not self.dry_run:
            await target.put_manifest(tag, data)

    # -- 5: pruning ----------------------------------------------------------------

    async def _prune(self, target: OciTarget, listed: set[str] | None) -> None:
        """Spec tags the index does not list: noted, deleted once ``delete_after`` passed."""
        if self.row is None or self.dry_run:
            return
        if listed is None:
            # unchanged: the tags the published index lists
            current = await target.published_index()
            cap = self.config.limits.cap("index")
            data = await target.index_blob(cap) if current else None
            if data is None:
                return
            index = parse_raw_index(unpack_index(data, target.url, "detect", cap), target.url)
            listed = {
                spec_tag(r.name, r.version, h) for h, r in index.installs.items() if r.in_buildcache
            }
        tags = [t for t in await target.list() if t.endswith(".spack") and t != "index.spack"]
        orphans = {f"tag:{t}": 0 for t in tags if t not in listed}
        at = self._now()
        since = await store_mirrors.note_orphans(self.store, self.row.id, orphans, at)
        gone = due(since, self.clock().astimezone(UTC), self.copy.delete_after_seconds)
        deleted = [rel for rel in gone if await target.delete(rel.removeprefix("tag:"))]
        await store_mirrors.forget_orphans(self.store, self.row.id, deleted)
        self.outcome.deleted = len(deleted)
        self.outcome.waiting = len(orphans) - len(deleted)

    async def _get(
        self, url: str, *, length: int | None = None, sha256: str | None = None
    ) -> bytes:
        result = await self.client.get(
            Url(url), expected_length=length, expected_digest=sha256, tally=self.outcome.tally
        )
        assert isinstance(result, Fetched)
        return result.content
