"""Bringing upstream files into a copy: blobs checked before they get their name.

Every download goes through the shared :class:`HttpClient` (global and per-host
caps, throttle, retries) and streams to a temporary name next to its final
place, hashing on the way; only a blob with the promised length and sha256 is
renamed into place. A blob already at its content address is never fetched
again (it was checked before it got that name), so stacks share blobs and a
killed run resumes where it stopped. A spec's manifest is written, byte for
byte as upstream served it, only once every blob it names is in place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import anyio

from mirrorsync.errors import CopyError, FormatError, MirrorsyncError, NotFoundError
from mirrorsync.fetch import Fetched, HttpClient, Tally
from mirrorsync.formats.catalog import blob_url
from mirrorsync.formats.manifest import BlobRecord, parse_manifest, spec_manifest_records
from mirrorsync.formats.rawindex import RawInstall
from mirrorsync.formats.specfile import (
    KEY_INDEX_MEDIA_PREFIX,
    PUBLIC_KEY_MEDIA_TYPE,
    parse_key_index,
    v3_key_manifest,
)
from mirrorsync.mirrors import files
from mirrorsync.mirrors.files import KEY_INDEX_MANIFEST, LAYOUT, blob_relpath
from mirrorsync.redact import Url, join_url

#: What Spack writes as ``v3/layout.json`` when upstream has none to copy.
DEFAULT_LAYOUT = b'{"signing": "gpg"}'


@dataclass
class CopyTally:
    """What bringing a copy up to date took (or, in a dry run, would take)."""

    blobs_fetched: int = 0
    bytes_fetched: int = 0
    blobs_present: int = 0
    manifests_fetched: int = 0


class Copier:
    """Fills one copy directory from upstream mirror roots."""

    def __init__(
        self, client: HttpClient, root: Path, tally: Tally, *, dry_run: bool = False
    ) -> None:
        self.client = client
        self.root = root
        self.tally = tally
        self.dry_run = dry_run
        self.counts = CopyTally()
        self._blobs: dict[str, anyio.Event] = {}  # by checksum: done, or being fetched
        #: Every file the new index will reference (relative path -> size).
        self.referenced: dict[str, int] = {}

    # -- blobs ---------------------------------------------------------------

    async def blob(self, upstream_root: str, record: BlobRecord) -> None:
        """Make sure the blob is at its content address, checked; fetch it if not."""
        key = f"{record.checksum_algorithm}/{record.checksum}"
        event = self._blobs.get(key)
        if event is not None:  # another spec of this copy has it, or is fetching it
            await event.wait()
            if key in self._blobs:
                return
            raise CopyError(f"blob {record.checksum} could not be copied (see the first error)")
        event = self._blobs[key] = anyio.Event()
        try:
            await self._fetch_blob(upstream_root, record)
        except BaseException:
            del self._blobs[key]
            event.set()
            raise
        event.set()

    async def _fetch_blob(self, upstream_root: str, record: BlobRecord) -> None:
        rel = blob_relpath(record.checksum_algorithm, record.checksum)
        self.referenced[rel] = record.content_length
        final = self.root / rel
        if files.size_of(final) == record.content_length:
            self.counts.blobs_present += 1
            return
        url = blob_url(upstream_root, record.checksum_algorithm, record.checksum)
        self.counts.blobs_fetched += 1
        self.counts.bytes_fetched += record.content_length
        if self.dry_run:
            return
        if record.checksum_algorithm != "sha256":
            raise CopyError(f"{url}: checksum algorithm {record.checksum_algorithm} not supported")
        files.make_parent(final)
        temp = files.temp_path(final)
        try:
            await self.client.download(
                Url(url),
                temp,
                expected_length=record.content_length,
                expected_sha256=record.checksum,
                max_bytes=record.content_length,
                tally=self.tally,
            )
        except MirrorsyncError:
            files.remove_quietly(temp)
            raise
        except OSError as exc:  # disk full, permissions: the blob's download, not the network
            files.remove_quietly(temp)
            raise files.disk_error(final, exc) from None
        await anyio.to_thread.run_sync(files.place, temp, final)

    async def small_blob(self, upstream_root: str, record: BlobRecord) -> bytes:
        """A small blob's bytes (a key, a key index): the copy's if in place, else fetched."""
        rel = blob_relpath(record.checksum_algorithm, record.checksum)
        self.referenced[rel] = record.content_length
        final = self.root / rel
        data = files.read_if_present(final)
        if data is not None and _matches(data, record):
            self.counts.blobs_present += 1
            return data
        url = blob_url(upstream_root, record.checksum_algorithm, record.checksum)
        data = await self._get(url)
        if len(data) != record.content_length or not _matches(data, record):
            raise CopyError(f"{url}: length or checksum differs from what its manifest says")
        self.counts.blobs_fetched += 1
        self.counts.bytes_fetched += len(data)
        if not self.dry_run:
            files.write_atomic(final, data)
        return data

    # -- manifests -------------------------------------------------------------

    async def spec(self, record: RawInstall, upstream_root: str) -> tuple[str, int]:
        """Copy one binary: its blobs, then its manifest. Returns (manifest path, its bytes)."""
        rel = record.manifest_path
        final = self.root / rel
        data = files.read_if_present(final)
        url = join_url(upstream_root, rel)
        fetched = False
        manifest = None
        if data is not None:
            try:
                _, _, manifest = spec_manifest_records(data, str(final))
            except FormatError:
                data = None  # written atomically, so only damaged by hand: fetch it again
        if data is None or manifest is None:
            data = await self._get(url)
            _, _, manifest = spec_manifest_records(data, url)
            fetched = True
            self.counts.manifests_fetched += 1
        for blob in manifest.data:
            await self.blob(upstream_root, blob)
        if fetched and not self.dry_run:
            await anyio.to_thread.run_sync(files.write_atomic, final, data)
        self.referenced[rel] = len(data)
        return rel, len(data) + sum(b.content_length for b in manifest.data)

    async def layout(self, upstream_root: str) -> None:
        """``v3/layout.json`` as upstream has it (Spack's own default if it has none)."""
        try:
            data = await self._get(join_url(upstream_root, LAYOUT))
        except NotFoundError:
            data = DEFAULT_LAYOUT
        try:
            json.loads(data)
        except ValueError:
            raise FormatError("layout.json", "not JSON", join_url(upstream_root, LAYOUT)) from None
        self.referenced[LAYOUT] = len(data)
        if not self.dry_run and files.read_if_present(self.root / LAYOUT) != data:
            files.write_atomic(self.root / LAYOUT, data)

    async def keys(self, upstream_roots: list[str]) -> None:
        """The public keys every upstream root publishes (``v3/manifests/key/``).

        One key index is copied byte for byte; stacks with different ones get a
        key index listing every key, written as Spack writes one.
        """
        indexes: dict[bytes, str] = {}  # key index manifest -> a root serving it
        for root in dict.fromkeys(upstream_roots):
            try:
                data = await self._get(join_url(root, KEY_INDEX_MANIFEST))
            except NotFoundError:
                continue  # an unsigned mirror publishes no keys
            indexes.setdefault(data, root)
        key_manifests: dict[str, tuple[bytes, str]] = {}  # fingerprint -> (manifest, root)
        for data, root in indexes.items():
            url = join_url(root, KEY_INDEX_MANIFEST)
            record = _record(data, url, KEY_INDEX_MEDIA_PREFIX, "key index manifest")
            for fingerprint in parse_key_index(await self.small_blob(root, record), url):
                if fingerprint in key_manifests:
                    continue
                key_url = join_url(root, v3_key_manifest(fingerprint))
                manifest = await self._get(key_url)
                key = _record(manifest, key_url, PUBLIC_KEY_MEDIA_TYPE, "key manifest")
                await self.small_blob(root, key)
                key_manifests[fingerprint] = (manifest, root)
                self.referenced[v3_key_manifest(fingerprint)] = len(manifest)
        if not indexes:
            return
        self.referenced[KEY_INDEX_MANIFEST] = len(next(iter(indexes)))
        if self.dry_run:
            return
        for fingerprint, (manifest, _) in key_manifests.items():
            path = self.root / v3_key_manifest(fingerprint)
            if files.read_if_present(path) != manifest:
                files.write_atomic(path, manifest)
        if len(indexes) == 1:
            index_manifest = next(iter(indexes))
        else:
            index_manifest = self._merged_key_index(sorted(key_manifests))
        if files.read_if_present(self.root / KEY_INDEX_MANIFEST) != index_manifest:
            files.write_atomic(self.root / KEY_INDEX_MANIFEST, index_manifest)

    def _merged_key_index(self, fingerprints: list[str]) -> bytes:
        blob = json.dumps({"keys": {f: {} for f in fingerprints}}).encode()
        checksum = hashlib.sha256(blob).hexdigest()
        files.write_atomic(self.root / blob_relpath("sha256", checksum), blob)
        return manifest_bytes(
            len(blob), "application/vnd.spack.keyindex.v1+json", "sha256", checksum
        )

    async def _get(self, url: str) -> bytes:
        result = await self.client.get(Url(url), tally=self.tally)
        assert isinstance(result, Fetched)  # unconditional requests are never answered 304
        return result.content


def manifest_bytes(length: int, media_type: str, algorithm: str, checksum: str) -> bytes:
    """A one-record manifest as Spack writes it: ``json.dump(indent=0, separators=(",", ":"))``."""
    manifest = {
        "version": 3,
        "data": [
            {
                "contentLength": length,
                "mediaType": media_type,
                "compression": "none",
                "checksumAlgorithm": algorithm,
                "checksum": checksum,
            }
        ],
    }
    return json.dumps(manifest, indent=0, separators=(",", ":")).encode()


def _matches(data: bytes, record: BlobRecord) -> bool:
    if record.checksum_algorithm not in hashlib.algorithms_available:
        return False
    return (
        len(data) == record.content_length
        and hashlib.new(record.checksum_algorithm, data).hexdigest() == record.checksum
    )


def _record(data: bytes, url: str, media_prefix: str, what: str) -> BlobRecord:
    record = parse_manifest(data, url, what).find(media_prefix)
    if record is None:
        raise FormatError(what, f"no {media_prefix}* record", url)
    return record
