"""Reading one spec's files from a stack's mirror: its manifest or spec file, checked.

A spec's v3 manifest, v2 spec file or OCI image manifest says which files it has
and what each should be (:class:`SpecFiles`); with a keyring, its signature is
checked against the keys the mirror publishes or those trusted
(:meth:`StackMirror.load_keys`), and it must be that very spec's. The crawl
(:mod:`mirrorsync.sync.crawl`), ``verify`` and the copies' planner read specs
through :class:`StackMirror`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mirrorsync.config import split_trusted_keys
from mirrorsync.errors import FormatError, NotFoundError, SignatureError
from mirrorsync.fetch import Fetched, HttpClient, Tally, Url
from mirrorsync.fetch.oci import OciRepository, oci_reference
from mirrorsync.formats.catalog import blob_url
from mirrorsync.formats.clearsign import is_clearsigned, split_clearsigned
from mirrorsync.formats.manifest import (
    SPEC_MEDIA_PREFIX,
    TARBALL_MEDIA_PREFIX,
    BlobRecord,
    Manifest,
    parse_manifest,
    spec_manifest_path,
    spec_manifest_records,
)
from mirrorsync.formats.oci import parse_image_manifest, spec_tag
from mirrorsync.formats.specfile import (
    KEY_INDEX_MEDIA_PREFIX,
    PUBLIC_KEY_MEDIA_TYPE,
    V2_KEY_INDEX,
    V3_KEY_INDEX_MANIFEST,
    parse_key_index,
    parse_v2_specfile,
    spec_blob_identity,
    v2_paths,
    v2_public_key,
    v3_key_manifest,
)
from mirrorsync.gpg import Keyring
from mirrorsync.store.manifests import SpecRef, StackTarget


@dataclass(frozen=True, slots=True)
class Blob:
    """A file a spec's manifest names, and what it should be."""

    role: str  # "tarball", "spec metadata", or the media type
    url: Url
    length: int | None  # None: not given (v2)
    algorithm: str
    checksum: str


@dataclass(frozen=True, slots=True)
class SpecFiles:
    """What a spec's manifest (v3) or spec file (v2) says about its files."""

    url: Url  # the manifest or spec file itself
    tarball: Blob
    blobs: tuple[Blob, ...]  # every file it names, the tarball first
    spec_algorithm: str
    spec_checksum: str  # v3: of the spec blob; v2: of the spec file as served
    manifest_sha256: str  # of the very bytes parsed (and verified, with a keyring)
    signer: str | None  # the primary key gpg accepted the signature of; None: not checked


@dataclass(frozen=True, slots=True)
class V3Manifest:
    """A v3 spec manifest as fetched and checked: its bytes and the records read from them."""

    url: Url
    data: bytes
    tarball: BlobRecord
    spec: BlobRecord
    manifest: Manifest
    signer: str | None  # as in SpecFiles


def _role(media_type: str) -> str:
    if media_type.startswith(TARBALL_MEDIA_PREFIX):
        return "tarball"
    if media_type.startswith(SPEC_MEDIA_PREFIX):
        return "spec metadata"
    return media_type


def _compiler(compiler: str | None) -> tuple[str, str] | None:
    if not compiler:
        return None
    name, _, version = compiler.partition("@")
    return name, version.removeprefix("=")


class StackMirror:
    """One stack's mirror root: where each spec's files are, and reading them."""

    def __init__(
        self, client: HttpClient, root: Url, layout: str, keyring: Keyring | None = None
    ) -> None:
        self.client = client
        self.root = root.rstrip("/")
        self.layout = layout
        self.keyring = keyring
        self._plain_first = False  # v2: this mirror's spec files turned out unsigned
        # oci: the registry repository (Spack's OCI cache: each spec an image)
        self.registry = OciRepository(client, oci_reference(root)) if layout == "oci" else None

    async def spec_files(self, ref: SpecRef, tally: Tally) -> SpecFiles:
        """Fetch and read one spec's manifest or spec file.

        Raises NotFoundError (missing), FormatError (malformed), SignatureError
        (with a keyring: not signed by the mirror's keys), FetchError.
        """
        if self.layout == "v3":
            return await self._v3(ref, tally)
        if self.registry is not None:
            return await self._oci(self.registry, ref, tally)
        return await self._v2(ref, tally)

    async def _oci(self, registry: OciRepository, ref: SpecRef, tally: Tally) -> SpecFiles:
        """The image Spack tagged for this spec: its config is the spec file, its last
        layer the binary (Spack's ``download_tarball``); unsigned, as Spack pushes it."""
        data, url = await registry.manifest(spec_tag(ref.name, ref.version, ref.hash), tally)
        manifest = parse_image_manifest(data, url.display)
        tarball = manifest.layers[-1]
        blobs = [
            Blob(
                "tarball", registry.blob_url(tarball.sha256), tarball.size, "sha256", tarball.sha256
            ),
            Blob(
                "spec metadata",
                registry.blob_url(manifest.config.sha256),
                manifest.config.size,
                "sha256",
                manifest.config.sha256,
            ),
        ]
        return SpecFiles(
            url,
            blobs[0],
            tuple(blobs),
            "sha256",
            manifest.config.sha256,
            hashlib.sha256(data).hexdigest(),
            None,
        )

    async def _v3(self, ref: SpecRef, tally: Tally) -> SpecFiles:
        v3 = await self.v3_manifest(ref, tally)
        tarball, spec = v3.tarball, v3.spec
        blobs = [self._blob(tarball)] + [
            self._blob(r) for r in v3.manifest.data if r is not tarball
        ]
        return SpecFiles(
            v3.url,
            blobs[0],
            tuple(blobs),
            spec.checksum_algorithm,
            spec.checksum,
            hashlib.sha256(v3.data).hexdigest(),
            v3.signer,
        )

    async def v3_manifest(self, ref: SpecRef, tally: Tally) -> V3Manifest:
        """A v3 spec manifest, fetched, its signature checked (with a keyring) and read:
        what :meth:`spec_files` gives, before the blobs' URLs are made (the crawl
        records the records' figures alone)."""
        url = self.root.join(spec_manifest_path(ref.name, ref.version, ref.hash))
        data = await _get(self.client, url, tally)
        signer = await self._check_signature(data, url)
        tarball, spec, manifest = spec_manifest_records(data, url.display)
        if signer is not None:
            await self._check_bound(ref, spec, url, tally)
        return V3Manifest(url, data, tarball, spec, manifest, signer)

    async def _check_bound(self, ref: SpecRef, spec: BlobRecord, url: Url, tally: Tally) -> None:
        """SignatureError unless the (genuine) manifest is this spec's: a signature says
        who made a manifest, not which spec it is for, so a genuine manifest of
        another spec served at this path names that spec's metadata blob."""
        data = await self._checked_blob(spec, tally)
        identity = spec_blob_identity(data, self._blob_url(spec).display)
        if identity.hash != ref.hash:
            raise SignatureError(
                url,
                f"signed manifest of another spec ({identity.name[:80]}/{identity.hash[:40]}),"
                f" not of {ref.hash}",
            )

    def _blob(self, record: BlobRecord) -> Blob:
        return Blob(
            _role(record.media_type),
            self._blob_url(record),
            record.content_length,
            record.checksum_algorithm,
            record.checksum,
        )

    def _blob_url(self, record: BlobRecord) -> Url:
        return self.root.map(
            lambda root: blob_url(root, record.checksum_algorithm, record.checksum)
        )

    async def _v2(self, ref: SpecRef, tally: Tally) -> SpecFiles:
        paths = v2_paths(
            platform=ref.platform,
            os=ref.os,
            target=ref.target,
            compiler=_compiler(ref.compiler),
            name=ref.name,
            version=ref.version,
            spec_hash=ref.hash,
        )
        signed, plain = self.root.join(paths.spec_signed), self.root.join(paths.spec_plain)
        first, second = (plain, signed) if self._plain_first else (signed, plain)
        try:
            url, data = first, await _get(self.client, first, tally)
        except NotFoundError:
            try:
                url, data = second, await _get(self.client, second, tally)
            except NotFoundError:
                raise NotFoundError(signed, "not found, nor the unsigned .spec.json", 404) from None
            self._plain_first = url == plain
        signer = await self._check_signature(data, url)
        binary = parse_v2_specfile(data, url.display)
        if signer is not None:  # the spec file is the spec's metadata: bound to this hash
            identity = spec_blob_identity(split_clearsigned(data).body, url.display)
            if identity.hash != ref.hash:
                raise SignatureError(
                    url, f"signed spec file of another spec ({identity.hash[:40]}), not {ref.hash}"
                )
        tarball = Blob(
            "tarball", self.root.join(paths.tarball), None, binary.algorithm, binary.checksum
        )
        digest = hashlib.sha256(data).hexdigest()
        return SpecFiles(url, tarball, (tarball,), "sha256", digest, digest, signer)

    async def _check_signature(self, data: bytes, url: Url) -> str | None:
        """The primary fingerprint of the key that signed ``data`` (None: not checked)."""
        if self.keyring is None:
            return None
        if not is_clearsigned(data):
            raise SignatureError(url, "not signed, and verify_signatures is on")
        return await self.keyring.verify(data, url.display)

    async def load_keys(
        self, keyring: Keyring, tally: Tally, trusted_keys: list[str] | None = None
    ) -> None:
        """Import the keys to check signatures with; SignatureError if there are none.

        Without ``trusted_keys``: every key the mirror's key index lists. With them:
        only those, each a key file or a fingerprint. A fingerprint's key is fetched
        from where the mirror publishes it (listed by its key index or not: indexes
        can be stale) and trusted only if it is that very key.
        """
        if trusted_keys is not None:
            await self._load_trusted(keyring, tally, trusted_keys)
        elif self.layout == "v3":
            index_url = self.root.join(V3_KEY_INDEX_MANIFEST)
            try:
                record = await self._manifest_record(index_url, KEY_INDEX_MEDIA_PREFIX, tally)
            except NotFoundError:
                raise SignatureError(index_url, "the mirror publishes no public keys") from None
            index = await self._checked_blob(record, tally)
            for fingerprint in parse_key_index(index, index_url.display):
                url = self.root.join(v3_key_manifest(fingerprint))
                key = await self._checked_blob(
                    await self._manifest_record(url, PUBLIC_KEY_MEDIA_TYPE, tally), tally
                )
                await keyring.import_key(key, url.display)
        else:
            index_url = self.root.join(V2_KEY_INDEX)
            try:
                index = await _get(self.client, index_url, tally)
            except NotFoundError:
                raise SignatureError(index_url, "the mirror publishes no public keys") from None
            for fingerprint in parse_key_index(index, index_url.display):
                url = self.root.join(v2_public_key(fingerprint))
                await keyring.import_key(await _get(self.client, url, tally), url.display)
        if not keyring.fingerprints:
            raise SignatureError(index_url, "the key index lists no keys")
        self.keyring = keyring

    async def _load_trusted(self, keyring: Keyring, tally: Tally, entries: list[str]) -> None:
        keyring.pinned = True
        fingerprints, files = split_trusted_keys(entries)
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SignatureError(str(path), f"cannot read trusted key file: {exc}") from None
            await keyring.import_key(data, str(path))
        for fingerprint in fingerprints:
            if fingerprint in keyring.fingerprints:
                continue  # given as a file too
            if self.layout == "v3":
                url = self.root.join(v3_key_manifest(fingerprint))
                try:
                    record = await self._manifest_record(url, PUBLIC_KEY_MEDIA_TYPE, tally)
                    key = await self._checked_blob(record, tally)
                except NotFoundError:
                    raise SignatureError(url, _UNPUBLISHED.format(fingerprint)) from None
            else:
                url = self.root.join(v2_public_key(fingerprint))
                try:
                    key = await _get(self.client, url, tally)
                except NotFoundError:
                    raise SignatureError(url, _UNPUBLISHED.format(fingerprint)) from None
            await keyring.import_only(key, url.display, fingerprint)

    async def _manifest_record(self, url: Url, media_prefix: str, tally: Tally) -> BlobRecord:
        data = await _get(self.client, url, tally)
        manifest = parse_manifest(data, url.display, "key manifest")
        record = manifest.find(media_prefix)
        if record is None:
            raise FormatError("key manifest", f"no {media_prefix}* record", url)
        return record

    async def _checked_blob(self, record: BlobRecord, tally: Tally) -> bytes:
        result = await self.client.get(
            self._blob_url(record),
            expected_length=record.content_length,
            expected_digest=record.checksum,
            algorithm=record.checksum_algorithm,
            tally=tally,
        )
        assert isinstance(result, Fetched)  # unconditional requests are never answered 304
        return result.content


_UNPUBLISHED = "trusted key {} is not published by the mirror; give its public key file instead"


async def _get(client: HttpClient, url: Url, tally: Tally) -> bytes:
    result = await client.get(url, tally=tally)
    assert isinstance(result, Fetched)  # unconditional requests are never answered 304
    return result.content


async def open_mirror(
    client: HttpClient,
    target: StackTarget,
    root: Url,
    *,
    verify_signatures: bool,
    gnupg_home: Path,
    tally: Tally,
    trusted_keys: list[str] | None = None,
) -> StackMirror:
    """The stack's mirror at ``root`` (the address from the configuration: the
    store's ``target.mirror_root`` has credentials masked), with its keys loaded
    when signatures are to be checked: ``trusted_keys`` if given, else those the
    mirror publishes."""
    mirror = StackMirror(client, root, target.layout)
    if verify_signatures:
        await mirror.load_keys(Keyring.create(gnupg_home), tally, trusted_keys)
    return mirror
