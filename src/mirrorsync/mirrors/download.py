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

import anyio

from mirrorsync.errors import (
    CopyError,
    FormatError,
    IntegrityError,
    MirrorsyncError,
    NotFoundError,
)
from mirrorsync.fetch import Fetched, HttpClient, Tally
from mirrorsync.formats.catalog import blob_url
from mirrorsync.formats.manifest import TARBALL_MEDIA_PREFIX, BlobRecord, spec_manifest_records
from mirrorsync.formats.rawindex import RawInstall
from mirrorsync.formats.specfile import (
    PUBLIC_KEY_MEDIA_TYPE,
    v3_key_manifest,
)
from mirrorsync.mirrors.admit import CHANGED, Admission
from mirrorsync.mirrors.layout import KEY_INDEX_MANIFEST, LAYOUT, blob_relpath
from mirrorsync.mirrors.target import CopyTarget
from mirrorsync.redact import Url, join_url

#: What Spack writes as ``v3/layout.json`` when upstream has none to copy.
DEFAULT_LAYOUT = b'{"signing": "gpg"}'


@dataclass
class SpecRefused(CopyError):
    """One spec cannot enter the copy (its manifest changed, a blob is corrupt): the
    spec is left out with this reason, the rest of the copy goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class CopyTally:
    """What bringing a copy up to date took (or, in a dry run, would take)."""

    blobs_fetched: int = 0
    bytes_fetched: int = 0
    blobs_present: int = 0
    manifests_fetched: int = 0


class Copier:
    """Fills one copy (through its :class:`CopyTarget`) from upstream mirror roots."""

    def __init__(
        self,
        client: HttpClient,
        target: CopyTarget,
        tally: Tally,
        *,
        dry_run: bool = False,
    ) -> None:
        self.client = client
        self.target = target
        self.tally = tally
        self.dry_run = dry_run
        self.counts = CopyTally()
        self._blobs: dict[str, anyio.Event] = {}  # by checksum: done, or being fetched
        self._bad_blobs: dict[str, str] = {}  # by checksum: why it cannot be copied
        #: Every file the new index will reference (relative path -> size).
        self.referenced: dict[str, int] = {}
        self.tarballs: dict[str, int] = {}  # relpath -> size: the binaries' own tarballs
        #: Blobs the published state references: checked when this copy wrote them. Any
        #: other file already in the directory is checked (sha256) before it is used.
        self.published: frozenset[str] = frozenset()

    # -- blobs ---------------------------------------------------------------

    async def blob(self, upstream_root: str, record: BlobRecord) -> None:
        """Make sure the blob is at its content address, checked; fetch it if not."""
        key = f"{record.checksum_algorithm}/{record.checksum}"
        event = self._blobs.get(key)
        if event is not None:  # another spec of this copy has it, or is fetching it
            await event.wait()
            if key in self._blobs:
                return
            if key in self._bad_blobs:
                raise SpecRefused(self._bad_blobs[key])
            raise CopyError(f"blob {record.checksum} could not be copied (see the first error)")
        event = self._blobs[key] = anyio.Event()
        try:
            try:
                await self._fetch_blob(upstream_root, record)
            except (IntegrityError, NotFoundError) as exc:  # this spec's fault, not the copy's
                why = "corrupt blob" if isinstance(exc, IntegrityError) else "blob missing"
                self._bad_blobs[key] = f"{why}: {exc}"
                raise SpecRefused(self._bad_blobs[key]) from None
        except BaseException:
            del self._blobs[key]
            event.set()
            raise
        event.set()

    async def _fetch_blob(self, upstream_root: str, record: BlobRecord) -> None:
        rel = blob_relpath(record.checksum_algorithm, record.checksum)
        self.referenced[rel] = record.content_length
        if record.checksum_algorithm == "sha256" and await self.target.exists(
            rel, record.content_length, record.checksum, trusted=rel in self.published
        ):
            self.counts.blobs_present += 1
            return
        url = blob_url(upstream_root, record.checksum_algorithm, record.checksum)
        self.counts.blobs_fetched += 1
        self.counts.bytes_fetched += record.content_length
        if self.dry_run:
            return
        if record.checksum_algorithm != "sha256":
            raise SpecRefused(
                f"{url}: checksum algorithm {record.checksum_algorithm} not supported"
            )
        temp = await self.target.staging(rel)
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
            self.target.discard(temp)
            raise
        except OSError as exc:  # disk full, permissions: the blob's download, not the network
            self.target.discard(temp)
            raise self.target.failure(exc) from None
        try:
            await self.target.put_blob(rel, temp, record.content_length, record.checksum)
        finally:
            self.target.discard(temp)  # gone already once put

    # -- manifests -------------------------------------------------------------

    async def spec(
        self, record: RawInstall, upstream_root: str, admission: Admission, stack_id: int
    ) -> tuple[str, int]:
        """Copy one admitted binary: its blobs, then its manifest, the very bytes the
        crawl verified. Returns (manifest path, its bytes). SpecRefused if the
        manifest changed since the crawl or a blob does not match it."""
        expected = admission.expected(stack_id, record.hash).manifest_sha256
        rel = record.manifest_path
        data = await self.target.read(rel)  # the copy's files are not trusted either
        url = join_url(upstream_root, rel)
        fetched = False
        if data is None or hashlib.sha256(data).hexdigest() != expected:
            data = await self._get(url)
            fetched = True
            self.counts.manifests_fetched += 1
            if hashlib.sha256(data).hexdigest() != expected:
                raise SpecRefused(CHANGED)
        try:
            _, _, manifest = spec_manifest_records(data, url)
        except FormatError as exc:  # the crawl parsed these very bytes: never the case
            raise SpecRefused(str(exc)) from None
        for blob in manifest.data:
            await self.blob(upstream_root, blob)
            if blob.media_type.startswith(TARBALL_MEDIA_PREFIX):
                tarball = blob_relpath(blob.checksum_algorithm, blob.checksum)
                self.tarballs[tarball] = blob.content_length
        if fetched and not self.dry_run:
            await self.target.put_manifest(rel, data)
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
        if not self.dry_run and await self.target.read(LAYOUT) != data:
            await self.target.put_manifest(LAYOUT, data)

    async def keys(self, keys: dict[str, bytes]) -> None:
        """The copy's key index: exactly ``keys`` (fingerprint -> armoured public key),
        the trusted keys that signed a copied manifest. Upstream's key index is
        never copied: keys are trusted by configuration, not by being listed."""
        if not keys:
            return
        key_manifests: dict[str, bytes] = {}
        for fingerprint, key in sorted(keys.items()):
            checksum = hashlib.sha256(key).hexdigest()
            rel = blob_relpath("sha256", checksum)
            self.referenced[rel] = len(key)
            manifest = manifest_bytes(len(key), PUBLIC_KEY_MEDIA_TYPE, "sha256", checksum)
            key_manifests[fingerprint] = manifest
            self.referenced[v3_key_manifest(fingerprint)] = len(manifest)
            if not self.dry_run and await self.target.read(rel) != key:
                await self.target.put_manifest(rel, key)
        blob = json.dumps({"keys": {f: {} for f in sorted(keys)}}).encode()
        checksum = hashlib.sha256(blob).hexdigest()
        index_manifest = manifest_bytes(
            len(blob), "application/vnd.spack.keyindex.v1+json", "sha256", checksum
        )
        self.referenced[blob_relpath("sha256", checksum)] = len(blob)
        self.referenced[KEY_INDEX_MANIFEST] = len(index_manifest)
        if self.dry_run:
            return
        for fingerprint, manifest in key_manifests.items():
            rel = v3_key_manifest(fingerprint)
            if await self.target.read(rel) != manifest:
                await self.target.put_manifest(rel, manifest)
        rel = blob_relpath("sha256", checksum)
        if await self.target.read(rel) != blob:
            await self.target.put_manifest(rel, blob)
        if await self.target.read(KEY_INDEX_MANIFEST) != index_manifest:
            await self.target.put_manifest(KEY_INDEX_MANIFEST, index_manifest)

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
