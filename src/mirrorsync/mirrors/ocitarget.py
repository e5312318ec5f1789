"""A copy target in an OCI registry repository, written as Spack pushes a build cache.

:class:`OciTarget` is the target's side (what is there, putting blobs and
manifests, the index last, listing and deleting tags); ``mirrors/oci_copy.py``
decides what goes in. :func:`open_target` is what ``mirrors/target.py`` opens
for an ``oci://`` or ``oci+http://`` path: a :class:`OciCopyTarget`, the
``CopyTarget`` of that interface. Its paths are a v3 directory's, which a
registry does not have: an image is made of a whole spec (its spec file as the
config, its dependencies' layers, its tag), so the OCI copy job writes through
:attr:`OciCopyTarget.oci` instead, and the path-based methods answer only for
blobs and the index (``verify --mirror`` does not read OCI copies yet). What the
target guarantees:

- **Order.** Every blob of an image (its layers, then its config) is uploaded
  before its manifest, and every spec image before the index image
  (``index.spack``), so a reader never finds a tag naming a missing blob nor
  an index naming a missing image.
- **Incremental.** A blob the repository has (``HEAD``, same size) is not
  uploaded again; a spec whose image is there with the same manifest is not
  touched.
- **Spack's layout.** Tags, manifests, configs and the index image are those of
  ``spack buildcache push oci://...`` (``formats/oci.py``), unsigned.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mirrorsync.errors import CopyError, FormatError, IntegrityError, NotFoundError
from mirrorsync.fetch import HttpClient, Tally, Url
from mirrorsync.fetch.oci import OciRepository, oci_reference
from mirrorsync.formats.oci import (
    CONFIG_MEDIA_TYPE,
    INDEX_TAG,
    LAYER_MEDIA_TYPE,
    Descriptor,
    ImageManifest,
    manifest_bytes,
    parse_image_manifest,
)

if TYPE_CHECKING:
    from mirrorsync.config import MirrorCopy

#: Blobs over this size go up in chunks of this size (PATCH); smaller ones in one PUT.
CHUNK_SIZE = 64 << 20
#: Spack's index image has an empty JSON object as its config.
EMPTY_CONFIG = b"{}"


class OciTarget:
    """One registry repository as a copy's destination."""

    def __init__(
        self, repository: OciRepository, tally: Tally, *, chunk_size: int | None = CHUNK_SIZE
    ) -> None:
        self.repository = repository
        self.tally = tally
        self.chunk_size = chunk_size
        self._present: dict[str, int] = {}  # sha256 -> size, known to be there
        self.blobs_uploaded = 0
        self.bytes_uploaded = 0
        self.blobs_present = 0
        self.manifests_put = 0
        self.index_layer: Descriptor | None = None  # what published_index found

    @property
    def url(self) -> str:
        return self.repository.ref.url

    async def has_blob(self, sha256: str, size: int) -> bool:
        """Whether the repository holds this blob, of this size."""
        if self._present.get(sha256) == size:
            return True
        found = await self.repository.blob_size(sha256, self.tally)
        if found == size:
            self._present[sha256] = size
            return True
        return False

    async def put_blob(self, sha256: str, size: int, body: bytes | Path) -> bool:
        """Upload a blob unless it is there; True when it was uploaded."""
        if await self.has_blob(sha256, size):
            self.blobs_present += 1
            return False
        await self.repository.put_blob(
            sha256, body, size, tally=self.tally, chunk_size=self.chunk_size
        )
        self._present[sha256] = size
        self.blobs_uploaded += 1
        self.bytes_uploaded += size
        return True

    async def image(self, tag: str) -> tuple[bytes, ImageManifest] | None:
        """The manifest a tag names now (None: no such tag, or not an image manifest)."""
        try:
            data, url = await self.repository.manifest(tag, self.tally)
        except NotFoundError:
            return None
        try:
            return data, parse_image_manifest(data, url.display)
        except FormatError:
            return None

    async def put_manifest(self, tag: str, data: bytes) -> None:
        await self.repository.put_manifest(tag, data, self.tally)
        self.manifests_put += 1

    async def published_index(self) -> str | None:
        """The sha256 of the index the ``index.spack`` image names (None: none yet, or
        its blob is gone: the copy has no index)."""
        found = await self.image(INDEX_TAG)
        if found is None:
            return None
        layer = found[1].layers[0]
        if not await self.has_blob(layer.sha256, layer.size):
            return None
        self.index_layer = layer
        return layer.sha256

    async def index_blob(self, max_bytes: int) -> bytes | None:
        """The bytes of the index ``published_index`` found (None: none, or unreadable)."""
        layer = self.index_layer
        if layer is None or layer.size > max_bytes:
            return None
        try:
            return await self.repository.blob(layer.sha256, layer.size, self.tally)
        except (NotFoundError, FormatError, IntegrityError):
            return None

    async def publish_index(self, data: bytes) -> str:
        """The index image, last: the index blob, the empty config, then the tag
        (Spack's ``_oci_update_index``). Returns the index's sha256."""
        checksum = hashlib.sha256(data).hexdigest()
        await self.put_blob(checksum, len(data), data)
        config = hashlib.sha256(EMPTY_CONFIG).hexdigest()
        await self.put_blob(config, len(EMPTY_CONFIG), EMPTY_CONFIG)
        manifest = manifest_bytes(
            Descriptor(CONFIG_MEDIA_TYPE, config, len(EMPTY_CONFIG)),
            [Descriptor(LAYER_MEDIA_TYPE, checksum, len(data))],
        )
        await self.put_manifest(INDEX_TAG, manifest)
        return checksum

    async def list(self) -> list[str]:
        """Every tag of the repository."""
        return await self.repository.tags(self.tally)

    async def delete(self, tag: str) -> bool:
        """Delete the image a tag names; False when the registry keeps it (deletion
        disabled) or it is gone already."""
        return await self.repository.delete_tag(tag, self.tally)


def config_json(data: bytes, what: str, url: str) -> dict[str, object]:
    """An image config (a spec file) as a JSON object; FormatError otherwise."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(what, "not JSON", url) from None
    if not isinstance(doc, dict):
        raise FormatError(what, "not a JSON object", url)
    return doc


# -- the CopyTarget of mirrors/target.py -------------------------------------------

_BLOBS = "blobs/sha256/"
_INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"


def open_target(copy: MirrorCopy, client: HttpClient, workdir: Path, tally: Tally) -> OciCopyTarget:
    """The registry repository ``copy.path`` names, pushed to through ``client``."""
    repository = OciRepository(client, oci_reference(Url(copy.path)), push=True)
    return OciCopyTarget(OciTarget(repository, tally), workdir)


def _blob_sha256(rel: str) -> str | None:
    if not rel.startswith(_BLOBS):
        return None
    checksum = rel.rsplit("/", 1)[-1]
    return checksum if len(checksum) == 64 else None


class OciCopyView:
    """An OCI copy from a worker thread: its blobs, nothing of a directory's layout."""

    local: Path | None = None

    def __init__(self, target: OciCopyTarget) -> None:
        self.target = target

    def where(self, rel: str) -> str:
        checksum = _blob_sha256(rel)
        if checksum is not None:
            return self.target.oci.repository.blob_url(checksum).display
        return f"{self.target.display} ({rel})"

    def read(self, rel: str) -> bytes | None:
        return anyio.from_thread.run(self.target.read, rel)

    def size(self, rel: str) -> int | None:
        checksum = _blob_sha256(rel)
        if checksum is None:
            return None
        return anyio.from_thread.run(
            self.target.oci.repository.blob_size, checksum, self.target.oci.tally
        )

    def sha256(self, rel: str) -> str | None:
        data = self.read(rel)
        return hashlib.sha256(data).hexdigest() if data is not None else None

    def listing(self, *, links: bool = False) -> dict[str, os.stat_result]:
        raise CopyError(
            f"{self.target.display}: an OCI copy lists no files; verify --mirror checks "
            "directory and S3 copies only (Spack's own 'buildcache check' reads OCI mirrors)"
        )


class OciCopyTarget:
    """``mirrors/target.py``'s CopyTarget for a registry repository (see the module)."""

    def __init__(self, oci: OciTarget, workdir: Path) -> None:
        self.oci = oci
        self.workdir = workdir
        self.display = oci.url

    def view(self) -> OciCopyView:
        return OciCopyView(self)

    async def prepare(self) -> None:
        return None

    async def read(self, rel: str) -> bytes | None:
        """A blob, or the index manifest as a v3 copy would have it (naming the index
        blob the ``index.spack`` image names)."""
        if rel == _INDEX_MANIFEST:
            checksum = await self.oci.published_index()
            layer = self.oci.index_layer
            if checksum is None or layer is None:
                return None
            from mirrorsync.mirrors.download import manifest_bytes as v3_manifest

            return v3_manifest(layer.size, "application/vnd.spack.db.v8+json", "sha256", checksum)
        checksum = _blob_sha256(rel)
        if checksum is None:
            return None
        size = await self.oci.repository.blob_size(checksum, self.oci.tally)
        if size is None:
            return None
        try:
            return await self.oci.repository.blob(checksum, size, self.oci.tally)
        except (NotFoundError, IntegrityError):
            return None

    async def exists(self, rel: str, size: int, digest: str, *, trusted: bool) -> bool:
        checksum = _blob_sha256(rel)
        return checksum == digest and await self.oci.has_blob(digest, size)

    async def staging(self, rel: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.workdir, prefix="oci-staged-")
        os.close(fd)
        return Path(name)

    async def put_blob(self, rel: str, staged: Path, size: int, digest: str) -> None:
        try:
            await self.oci.put_blob(digest, size, staged)
        finally:
            self.discard(staged)

    def discard(self, staged: Path) -> None:
        staged.unlink(missing_ok=True)

    async def put_manifest(self, rel: str, data: bytes) -> None:
        raise CopyError(f"{self.display}: {rel}: an OCI copy is written as images, not files")

    async def publish_index(self, blob_rel: str, data: bytes, manifest: bytes) -> None:
        await self.oci.publish_index(data)

    async def inventory(self) -> dict[str, int]:
        return {f"tag:{t}": 0 for t in await self.oci.list()}

    async def delete(self, rels: list[str]) -> int:
        return sum(
            [await self.oci.delete(r.removeprefix("tag:")) for r in rels if r.startswith("tag:")]
        )

    def failure(self, exc: OSError) -> CopyError:
        return CopyError(f"{self.display}: {exc.strerror or exc}")

    async def aclose(self) -> None:
        return None
