"""Fetching one stack's index, only when it changed, and checking every byte of it.

Nothing a mirror sends is kept unless it passed its checks: a small document
enters the HTTP cache only once it parsed, and an index is handed on only
when its length and checksum are the ones promised.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio

from mirrorsync.config import LimitKind, LimitsConfig
from mirrorsync.errors import FetchError, FormatError, IntegrityError, NotFoundError, ScratchError
from mirrorsync.fetch import Downloaded, Fetched, HttpClient, Tally, Url
from mirrorsync.fetch.oci import OciRepository, oci_reference
from mirrorsync.fetch.validators import conditions
from mirrorsync.formats._common import is_sha256
from mirrorsync.formats.catalog import blob_url
from mirrorsync.formats.index import Index, parse_index
from mirrorsync.formats.manifest import BlobRecord, parse_index_manifest
from mirrorsync.formats.oci import INDEX_TAG, is_oci_url, parse_image_manifest
from mirrorsync.inflate import gunzip
from mirrorsync.store import Store, httpcache, utcnow
from mirrorsync.store import db as store_db
from mirrorsync.sync.progress import RunProgress
from mirrorsync.units import Verbatim, human_time

log = logging.getLogger("mirrorsync.sync")

V3_INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"
V3_VIEW_MANIFEST = "v3/manifests/index/{view}/index.manifest.json"
V2_INDEX = "build_cache/index.json"
V2_INDEX_HASH = "build_cache/index.json.hash"

T = TypeVar("T")
R = TypeVar("R")


def layout_not_found(root: Url, v3_path: str = V3_INDEX_MANIFEST) -> NotFoundError:
    """A mirror URL where neither layout's index is (a typo, most often): one line
    naming both paths tried, for a sync and ``config check`` alike."""
    return NotFoundError(
        root,
        "neither a v3 nor a v2 build cache found here: "
        f"{root.join(v3_path)} and {root.join(V2_INDEX)} not found",
        404,
    )


@dataclass(frozen=True, slots=True)
class Target:
    """Where to look for a stack's index, and what the catalogue already told us."""

    mirror_root: Url
    layout: str | None  # None: detect (mirror sources)
    catalog_checksum: str | None = None  # v3 content address in the catalogue (informative only)
    view: str | None = None  # a named index view (v3 only); None: the top-level index

    @property
    def manifest_path(self) -> str:
        return V3_VIEW_MANIFEST.format(view=self.view) if self.view else V3_INDEX_MANIFEST


@dataclass(frozen=True, slots=True)
class FetchedIndex:
    checksum: str
    layout: str
    index_url: Url
    path: Path | None  # the verified download, to parse; None: unchanged since ``previous``
    compression: str = "none"  # of the download, undone by ``parse_downloaded``
    # v2 without index.json.hash: the download's ETag and Last-Modified, to keep
    # (``IndexFetcher.committed``) once the index was accepted
    validators: tuple[str | None, str | None] | None = None


class IndexFetcher:
    """Downloads indexes into ``workdir``; small documents go through the HTTP cache."""

    def __init__(
        self,
        client: HttpClient,
        store: Store,
        workdir: Path,
        limits: LimitsConfig,
        *,
        progress: RunProgress | None = None,
        revalidate_after: float = 86400.0,
    ) -> None:
        self.client = client
        self.store = store
        self.workdir = workdir
        self.limits = limits
        self.progress = progress if progress is not None else RunProgress()
        # http.revalidate_after: a document fetched in full longer ago is asked for
        # without conditions once (a server whose validators lie cannot hide a change)
        self.revalidate_after = revalidate_after
        self._registries: dict[str, OciRepository] = {}

    async def fetch(
        self, target: Target, previous: str | None, tally: Tally, name: str
    ) -> FetchedIndex:
        """The stack's index on disk, or ``path=None`` when its checksum equals ``previous``.

        v3: the index manifest is always asked for (conditionally: a 304 or a few
        hundred bytes), never skipped because the catalogue's URL equals the last
        snapshot: the catalogue is regenerated once a day, the stacks many times.
        """
        root = target.mirror_root
        if is_oci_url(root.address):
            return await self._fetch_oci(root, previous, tally, name)
        if target.layout == "v3" or target.layout is None:
            manifest_url = root.join(target.manifest_path)
            try:
                record = await self.small_document(
                    manifest_url,
                    tally,
                    "manifest",
                    lambda b: parse_index_manifest(b, manifest_url.display),
                )
                self.progress.manifests += 1
            except NotFoundError:
                if target.layout == "v3" or target.view is not None:
                    raise
                log.debug(
                    "%s: no v3 index manifest under %s, trying layout v2",
                    Verbatim(name),
                    Verbatim(root),
                )
                try:
                    return await self._fetch_v2(root, previous, tally, name)
                except NotFoundError as exc:
                    if exc.url != root.join(V2_INDEX).display:
                        raise
                    raise layout_not_found(root, target.manifest_path) from None
            else:
                return await self._fetch_v3(root, manifest_url, record, previous, tally, name)
        return await self._fetch_v2(root, previous, tally, name)

    async def _fetch_v3(
        self,
        root: Url,
        manifest_url: Url,
        record: BlobRecord,
        previous: str | None,
        tally: Tally,
        name: str,
    ) -> FetchedIndex:
        if record.checksum_algorithm != "sha256":
            raise FormatError(
                "index manifest",
                f"index checksum algorithm {record.checksum_algorithm[:20]!r} is not sha256",
                manifest_url,
            )
        url = _blob(root, record.checksum_algorithm, record.checksum)
        if record.checksum == previous:
            return FetchedIndex(previous, "v3", url, None)
        cap = self._index_cap(url, record.content_length, manifest_url)
        path, _ = await self._download(
            url,
            name,
            lambda path: self.client.download(
                url,
                path,
                expected_length=record.content_length,
                expected_sha256=record.checksum,
                max_bytes=cap,
                limit_name="limits.index",
                tally=tally,
            ),
        )
        return FetchedIndex(record.checksum, "v3", url, path, record.compression)

    def _index_cap(self, url: Url, declared: int, manifest_url: Url) -> int:
        """``limits.index``; an index its manifest declares larger is refused unread."""
        cap = self.limits.cap("index")
        if declared > cap:
            raise FetchError(
                url,
                f"{declared} bytes per {manifest_url}, over the {cap}-byte limit "
                "(limits.index); refused",
            )
        return cap

    def registry(self, root: Url) -> OciRepository:
        """The registry repository at an ``oci://`` root, one per root for the run
        (its token is reused)."""
        repository = self._registries.get(root.address)
        if repository is None:
            repository = self._registries[root.address] = OciRepository(
                self.client, oci_reference(root)
            )
        return repository

    async def _fetch_oci(
        self, root: Url, previous: str | None, tally: Tally, name: str
    ) -> FetchedIndex:
        """Spack's OCI index: the image tagged ``index.spack``, whose first layer is the
        index JSON (Spack's ``OCIIndexFetcher``): fetched when its digest changed."""
        registry = self.registry(root)
        data, manifest_url = await registry.manifest(INDEX_TAG, tally)
        self.progress.manifests += 1
        manifest = parse_image_manifest(data, manifest_url.display)
        layer = manifest.layers[0]
        url = registry.blob_url(layer.sha256)
        if layer.sha256 == previous:
            return FetchedIndex(previous, "oci", url, None)
        cap = self._index_cap(url, layer.size, manifest_url)
        path, _ = await self._download(
            url,
            name,
            lambda path: registry.download(
                layer.sha256,
                layer.size,
                path,
                tally=tally,
                max_bytes=cap,
                limit_name="limits.index",
            ),
        )
        # Spack writes it plain JSON though the layer says tar+gzip: whichever it is.
        return FetchedIndex(layer.sha256, "oci", url, path, "detect")

    async def _fetch_v2(
        self, root: Url, previous: str | None, tally: Tally, name: str
    ) -> FetchedIndex:
        index_url = root.join(V2_INDEX)
        hash_url = root.join(V2_INDEX_HASH)
        expected: str | None
        try:
            expected = await self.small_document(
                hash_url, tally, "manifest", lambda b: _parse_hash_file(b, hash_url)
            )
        except NotFoundError:
            expected = None
        else:
            if expected == previous:
                return FetchedIndex(previous, "v2", index_url, None)
        cap = self.limits.cap("index")
        if expected is not None:
            try:
                path, downloaded = await self._download(
                    index_url,
                    name,
                    lambda path: self.client.download(
                        index_url,
                        path,
                        expected_sha256=expected,
                        max_bytes=cap,
                        limit_name="limits.index",
                        promised_by=V2_INDEX_HASH,
                        tally=tally,
                    ),
                )
            except IntegrityError as exc:
                raise IntegrityError(
                    index_url,
                    f"{exc.problem} (the mirror is inconsistent, perhaps being updated); "
                    "nothing stored",
                ) from None
        else:
            # No hash file: ask for index.json conditionally (ETag / Last-Modified), as
            # Spack does, with only validators that cannot hide a change (see
            # fetch.validators). The HTTP cache keeps them with the sha256 of the
            # index they were given for, never the index itself.
            cached = (
                await httpcache.cached_document(self.store, index_url.display) if previous else None
            )
            known = cached.body.decode("ascii", "replace") if cached else None
            asked = self._conditions(index_url, cached if known == previous else None)
            path, result = await self._download(
                index_url,
                name,
                lambda path: self.client.download_if_modified(
                    index_url,
                    path,
                    etag=asked.get("if-none-match"),
                    last_modified=asked.get("if-modified-since"),
                    max_bytes=cap,
                    limit_name="limits.index",
                    tally=tally,
                ),
            )
            if not isinstance(result, Downloaded):
                path.unlink(missing_ok=True)
                log.debug("%s: %s not modified", Verbatim(name), Verbatim(index_url))
                assert previous is not None  # validators are sent only with a previous index
                return FetchedIndex(previous, "v2", index_url, None)
            downloaded = result
            log.info(
                "%s: %s is missing; %s",
                Verbatim(name),
                Verbatim(hash_url),
                "index.json downloaded to compare"
                if not (downloaded.etag or downloaded.last_modified)
                else "index.json asked for with its validators from now on",
            )
            validators = (downloaded.etag, downloaded.last_modified)
            if downloaded.sha256 == previous:  # the index already stored: keep them now
                path.unlink(missing_ok=True)
                fetched = FetchedIndex(previous, "v2", index_url, None, validators=validators)
                await self.committed(fetched)
                return fetched
            return FetchedIndex(downloaded.sha256, "v2", index_url, path, validators=validators)
        if downloaded.sha256 == previous:
            path.unlink(missing_ok=True)
            return FetchedIndex(previous, "v2", index_url, None)
        return FetchedIndex(downloaded.sha256, "v2", index_url, path)

    async def committed(self, fetched: FetchedIndex) -> None:
        """The index was accepted: keep the validators of a v2 index without a hash
        file (with its sha256, never its bytes), so the next run asks conditionally.
        Only then: a refused index leaves nothing in the HTTP cache."""
        if fetched.validators is not None:
            etag, last_modified = fetched.validators
            await httpcache.cache_document(
                self.store,
                fetched.index_url.display,
                etag,
                last_modified,
                fetched.checksum.encode(),
                fetched_at=utcnow(),
            )

    async def _download(
        self, url: Url, name: str, fetch: Callable[[Path], Awaitable[R]]
    ) -> tuple[Path, R]:
        """``fetch(path)`` into a scratch file of this stack's own.

        A download that fails leaves no partial file to hold the scratch space,
        and a scratch file that cannot be written (a full ``$TMPDIR``) is a
        :class:`ScratchError` naming it: the stack fails, the run goes on.
        """
        path: Path | None = None
        try:
            path = self._scratch(name)
            result = await fetch(path)
        except BaseException as exc:
            if path is not None:
                path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise ScratchError(
                    f"{path or self.workdir}: cannot write the index from {url}: "
                    f"{exc.strerror or exc}; free space in {self.workdir.parent} "
                    "or set TMPDIR to a directory with room for it"
                ) from None
            raise
        return path, result

    def _scratch(self, name: str) -> Path:
        """A new download path of this stack's own: stacks may share an index blob,
        and two names may look alike once made safe for a file name."""
        slug = "".join(c if c.isalnum() or c in "-." else "_" for c in name)
        fd, path = tempfile.mkstemp(dir=self.workdir, prefix=f"{slug}-", suffix=".index.json")
        os.close(fd)
        return Path(path)

    async def small_document(
        self, url: Url, tally: Tally, kind: LimitKind, check: Callable[[bytes], T]
    ) -> T:
        """GET with If-None-Match/If-Modified-Since from the last answer, if any
        (and if it may be trusted: see ``_conditions``).

        ``check`` parses the body; only a body it accepts enters the HTTP cache,
        so a refused document leaves nothing behind. An unconditional answer with
        the same body as before is the same document: callers compare checksums.
        """
        cached = await httpcache.cached_document(self.store, url.display)
        asked = self._conditions(url, cached)
        result = await self.client.get(
            url,
            etag=asked.get("if-none-match"),
            last_modified=asked.get("if-modified-since"),
            max_bytes=self.limits.cap(kind),
            limit_name=f"limits.{kind}",
            tally=tally,
        )
        if isinstance(result, Fetched):
            value = check(result.content)
            await httpcache.cache_document(
                self.store,
                url.display,
                result.etag,
                result.last_modified,
                result.content,
                fetched_at=utcnow(),
            )
            return value
        if cached is None or not asked:  # a 304 answers only a conditional request
            raise FetchError(url, "HTTP 304 Not Modified to a request that was not conditional")
        return check(cached.body)

    def _conditions(self, url: Url, cached: httpcache.CachedDocument | None) -> dict[str, str]:
        """The conditions for a request from its cached answer (none: unconditional)."""
        asked = conditions(cached, store_db.now(), self.revalidate_after)  # the store's clock
        if cached is not None and (cached.etag or cached.last_modified) and not asked:
            log.debug(
                "%s: fetched in full at %s, more than http.revalidate_after ago: asked "
                "without its validators once",
                url.display,
                human_time(cached.fetched_at) if cached.fetched_at else "an unknown time",
            )
        return asked


def _blob(root: Url, algorithm: str, checksum: str) -> Url:
    return root.map(lambda address: blob_url(address, algorithm, checksum))


def _parse_hash_file(body: bytes, url: Url) -> str:
    text = body.decode("ascii", "replace").strip()
    if not is_sha256(text):
        raise FormatError("index.json.hash", f"{text[:80]!r} is not a sha256", url)
    return text


async def parse_downloaded(
    path: Path,
    url: Url,
    *,
    lazy: bool = False,
    compression: str = "none",
    max_bytes: int | None = None,
) -> Index:
    """Parse a downloaded index in a worker thread; the file is removed either way.

    ``lazy``: leave spec nodes raw until asked for (see ``parse_index``).
    ``compression``: what the index manifest's record says (``gzip`` is undone
    here, refused past ``max_bytes`` of output)."""

    def work() -> Index:
        try:
            data = unpack_index(path.read_bytes(), url.display, compression, max_bytes)
            return parse_index(data, url.display, lazy=lazy)
        finally:
            path.unlink(missing_ok=True)

    return await anyio.to_thread.run_sync(work)


def unpack_index(data: bytes, url: str, compression: str, max_bytes: int | None) -> bytes:
    """An index blob's JSON: ``gzip`` undone (refused past ``max_bytes`` once
    unpacked), ``none`` as it is. ``detect``: gzip when the data starts with gzip's
    magic bytes (JSON never does), for a reader that has the blob but not its record.
    The one place index blobs are unpacked, for the sync and the copies alike."""
    if compression == "detect":
        compression = "gzip" if data[:2] == b"\x1f\x8b" else "none"
    if compression == "gzip":
        return _gunzip(data, url, max_bytes)
    return data


def _gunzip(data: bytes, url: str, max_bytes: int | None) -> bytes:
    """The index blob unpacked, bounded (``mirrorsync.inflate``: limit and ratio)."""
    return gunzip(data, url, max_bytes=max_bytes, limit_name="limits.index", what="index")
