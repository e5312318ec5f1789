"""The spec-manifest crawler, and reading one spec's files from a mirror.

After a stack's index is synced, its members' manifests are fetched by a small
pool of workers through the shared HTTP client (same throttle and retries):

- v3: ``v3/manifests/spec/<name>/<name>-<version>-<hash>.spec.manifest.json``,
  which gives the tarball's size and checksum and the spec blob's checksum;
- v2: ``build_cache/<stem>.spec.json.sig`` (or ``.spec.json``), which gives the
  ``.spack`` checksum, and a HEAD of the ``.spack`` for its size.

Results are committed in batches as they come, so a run that is killed resumes
where it stopped: ``new`` fetches members without a good manifest on record,
``all`` fetches those not fetched since the current pass began.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from mirrorsync.config import split_trusted_keys
from mirrorsync.errors import (
    FetchError,
    FormatError,
    IntegrityError,
    NotFoundError,
    SignatureError,
)
from mirrorsync.fetch import (
    Fetched,
    HostDownError,
    HttpClient,
    RunDeadlineError,
    Tally,
    Url,
)
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
from mirrorsync.store import Store, utcnow
from mirrorsync.store import manifests as store_manifests
from mirrorsync.store.manifests import (
    BAD_SIGNATURE,
    ERROR,
    MALFORMED,
    MISSING,
    OK,
    ManifestResult,
    SpecRef,
    StackTarget,
)
from mirrorsync.sync.outcome import ManifestTally
from mirrorsync.sync.pool import run_pool
from mirrorsync.sync.progress import RunProgress
from mirrorsync.units import Verbatim

log = logging.getLogger("mirrorsync.sync")

#: Results committed together; a killed run loses at most this many fetches.
FLUSH_RESULTS = 100
#: ...or whatever arrived in this many seconds, whichever comes first.
FLUSH_SECONDS = 1.0


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


class ManifestCrawler:
    """Fetches the spec manifests of stacks and records what they say."""

    def __init__(
        self,
        client: HttpClient,
        store: Store,
        workdir: Path,
        *,
        workers: int,
        progress: RunProgress | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.workdir = workdir
        self.workers = workers
        self.progress = progress

    async def crawl(
        self,
        target: StackTarget,
        root: Url,
        policy: str,
        *,
        verify_signatures: bool,
        tally: Tally,
        trusted_keys: list[str] | None = None,
    ) -> ManifestTally:
        counts = ManifestTally()
        if policy == "none":
            return counts
        try:
            mirror = await open_mirror(
                self.client,
                target,
                root,
                verify_signatures=verify_signatures,
                gnupg_home=self.workdir / f"gnupg-{target.id}",
                tally=tally,
                trusted_keys=trusted_keys,
            )
        except (SignatureError, FetchError, FormatError, IntegrityError) as exc:
            counts.failure = f"cannot check signatures: {exc}"
            log.error("%s: spec manifests not fetched: %s", Verbatim(target.label), counts.failure)
            return counts
        cutoff = await store_manifests.begin_crawl(self.store, target.id, policy, utcnow())
        expected = consumed = 0  # for the crawl phase's progress
        if self.progress is not None:
            expected = await store_manifests.count_pending(
                self.store, target.id, cutoff, signed=mirror.keyring is not None
            )
            self.progress.crawl.add_work(expected)
        batch: list[ManifestResult] = []
        last_flush = time.monotonic()

        async def flush() -> None:
            nonlocal batch, last_flush
            if batch:
                done, batch = batch, []
                counts.events += await store_manifests.record_results(
                    self.store, target.id, done, utcnow()
                )
            last_flush = time.monotonic()

        # Once its host is down or the run's time is up, no request is sent: the
        # rest of the crawl is not recorded (it stays pending for the next run).
        stopped: str | None = None

        async def work(ref: SpecRef) -> ManifestResult | None:
            nonlocal stopped
            if stopped is not None:
                return None
            try:
                return await self.fetch(mirror, ref, tally)
            except (HostDownError, RunDeadlineError) as exc:
                stopped = stopped or str(exc)
                return None

        async def consume(result: ManifestResult | None) -> None:
            nonlocal consumed
            consumed += 1
            if self.progress is not None:
                self.progress.crawl.advance()
            if result is None:
                return
            batch.append(result)
            counts.add(result.status, result.problem)
            if self.progress is not None:
                self.progress.manifests += 1
            if len(batch) >= FLUSH_RESULTS or time.monotonic() - last_flush >= FLUSH_SECONDS:
                await flush()

        try:
            await run_pool(
                store_manifests.pending(
                    self.store, target.id, cutoff, signed=mirror.keyring is not None
                ),
                work,
                consume,
                workers=self.workers,
            )
        finally:
            with anyio.CancelScope(shield=True):
                await flush()
            if self.progress is not None and consumed != expected:  # stopped, or it moved
                self.progress.crawl.add_work(consumed - expected)
        if stopped is not None:
            counts.failure = f"spec manifest crawl stopped: {stopped}"
            log.error("%s: %s", Verbatim(target.label), counts.failure)
            return counts
        if policy == "all":
            await store_manifests.finish_crawl(self.store, target.id, utcnow())
        _log_counts(target.label, counts)
        return counts

    async def fetch(self, mirror: StackMirror, ref: SpecRef, tally: Tally) -> ManifestResult:
        """One spec: its manifest's figures, or why there are none."""
        try:
            if mirror.layout == "v3":  # the records' figures alone: no blob URLs made
                v3 = await mirror.v3_manifest(ref, tally)
                return ManifestResult(
                    ref.spec_id,
                    OK,
                    tarball_size=v3.tarball.content_length,
                    tarball_algorithm=v3.tarball.checksum_algorithm,
                    tarball_checksum=v3.tarball.checksum,
                    spec_algorithm=v3.spec.checksum_algorithm,
                    spec_checksum=v3.spec.checksum,
                    manifest_sha256=hashlib.sha256(v3.data).hexdigest(),
                    signer=v3.signer,
                )
            files = await mirror.spec_files(ref, tally)
            size = files.tarball.length
            if size is None:  # v2: the spec file has no sizes
                try:
                    size = await self.client.head(files.tarball.url, tally=tally)
                except NotFoundError:
                    log.debug("%s: %s is missing", Verbatim(ref.hash), Verbatim(files.tarball.url))
        except (HostDownError, RunDeadlineError):
            raise  # not this spec's fault: the crawl stops (see ``crawl``)
        except NotFoundError as exc:
            return ManifestResult(ref.spec_id, MISSING, f"{exc.url} not found")
        except FormatError as exc:
            return ManifestResult(ref.spec_id, MALFORMED, str(exc))
        except SignatureError as exc:
            return ManifestResult(ref.spec_id, BAD_SIGNATURE, str(exc))
        except (FetchError, IntegrityError) as exc:
            return ManifestResult(ref.spec_id, ERROR, str(exc))
        return ManifestResult(
            ref.spec_id,
            OK,
            tarball_size=size,
            tarball_algorithm=files.tarball.algorithm,
            tarball_checksum=files.tarball.checksum,
            spec_algorithm=files.spec_algorithm,
            spec_checksum=files.spec_checksum,
            manifest_sha256=files.manifest_sha256,
            signer=files.signer,
        )


def _log_counts(label: str, c: ManifestTally) -> None:
    if not c.fetched:
        log.debug("%s: no spec manifests to fetch", Verbatim(label))
        return
    parts = [
        f"{n} {word}"
        for n, word in (
            (c.ok, "ok"),
            (c.missing, "missing"),
            (c.malformed, "malformed"),
            (c.bad_signature, "with a bad signature"),
            (c.errors, "failed"),
        )
        if n
    ]
    text = f"{c.fetched} spec manifests fetched: {', '.join(parts)}"
    if c.problem:
        log.error("%s: %s (first: %s)", Verbatim(label), text, c.first_problem)
    elif c.missing or c.malformed:
        log.warning("%s: %s", Verbatim(label), text)
    else:
        log.info("%s: %s", Verbatim(label), text)
