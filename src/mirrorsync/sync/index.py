"""Fetching one stack's index, only when it changed, and checking every byte of it.

Nothing a mirror sends is kept unless it passed its checks: a small document
enters the HTTP cache only once it parsed, and an index is handed on only
when its length and checksum are the ones promised.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio

from mirrorsync.config import LimitKind, LimitsConfig
from mirrorsync.errors import FetchError, FormatError, IntegrityError, NotFoundError
from mirrorsync.fetch import Fetched, HttpClient, Tally, Url
from mirrorsync.formats._common import is_sha256
from mirrorsync.formats.catalog import blob_url
from mirrorsync.formats.index import Index, parse_index
from mirrorsync.formats.manifest import BlobRecord, parse_index_manifest
from mirrorsync.store import Store, writes
from mirrorsync.sync.progress import RunProgress

log = logging.getLogger("mirrorsync.sync")

V3_INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"
V2_INDEX = "build_cache/index.json"
V2_INDEX_HASH = "build_cache/index.json.hash"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Target:
    """Where to look for a stack's index, and what the catalogue already told us."""

    mirror_root: Url
    layout: str | None  # None: detect (mirror sources)
    catalog_checksum: str | None = None  # v3 content address from the catalogue URL


@dataclass(frozen=True, slots=True)
class FetchedIndex:
    checksum: str
    layout: str
    index_url: Url
    path: Path | None  # the verified download, to parse; None: unchanged since ``previous``


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
    ) -> None:
        self.client = client
        self.store = store
        self.workdir = workdir
        self.limits = limits
        self.progress = progress if progress is not None else RunProgress()

    async def fetch(
        self, target: Target, previous: str | None, tally: Tally, name: str
    ) -> FetchedIndex:
        """The stack's index on disk, or ``path=None`` when its checksum equals ``previous``."""
        root = target.mirror_root
        if target.layout == "v3" or target.layout is None:
            if previous is not None and target.catalog_checksum == previous:
                return FetchedIndex(previous, "v3", _blob(root, "sha256", previous), None)
            manifest_url = root.join(V3_INDEX_MANIFEST)
            try:
                record = await self.small_document(
                    manifest_url,
                    tally,
                    "manifest",
                    lambda b: parse_index_manifest(b, manifest_url.display),
                )
                self.progress.manifests += 1
            except NotFoundError:
                if target.layout == "v3":
                    raise
                log.debug("%s: no v3 index manifest under %s, trying layout v2", name, root)
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
        cap = self.limits.cap("index")
        if record.content_length > cap:
            raise FetchError(
                url,
                f"{record.content_length} bytes per {manifest_url}, over the {cap}-byte limit "
                "(limits.index); refused",
            )
        path = self._scratch(name)
        await self.client.download(
            url,
            path,
            expected_length=record.content_length,
            expected_sha256=record.checksum,
            max_bytes=cap,
            limit_name="limits.index",
            tally=tally,
        )
        return FetchedIndex(record.checksum, "v3", url, path)

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
            log.info("%s: %s is missing; downloading the index to compare", name, hash_url)
            expected = None
        else:
            if expected == previous:
                return FetchedIndex(previous, "v2", index_url, None)
        path = self._scratch(name)
        try:
            downloaded = await self.client.download(
                index_url,
                path,
                expected_sha256=expected,
                max_bytes=self.limits.cap("index"),
                limit_name="limits.index",
                promised_by=V2_INDEX_HASH,
                tally=tally,
            )
        except IntegrityError as exc:
            path.unlink(missing_ok=True)
            raise IntegrityError(
                index_url, f"{exc.problem} (the mirror is inconsistent, perhaps being updated)"
            ) from None
        if downloaded.sha256 == previous:
            path.unlink(missing_ok=True)
            return FetchedIndex(previous, "v2", index_url, None)
        return FetchedIndex(downloaded.sha256, "v2", index_url, path)

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
        """GET with If-None-Match/If-Modified-Since from the last answer, if any.

        ``check`` parses the body; only a body it accepts enters the HTTP cache,
        so a refused document leaves nothing behind.
        """
        cached = await writes.cached_document(self.store, url.display)
        etag, last_modified = (cached[0], cached[1]) if cached else (None, None)
        result = await self.client.get(
            url,
            etag=etag,
            last_modified=last_modified,
            max_bytes=self.limits.cap(kind),
            limit_name=f"limits.{kind}",
            tally=tally,
        )
        if isinstance(result, Fetched):
            value = check(result.content)
            await writes.cache_document(
                self.store, url.display, result.etag, result.last_modified, result.content
            )
            return value
        if cached is None:  # a 304 answers only a conditional request
            raise FetchError(url, "HTTP 304 Not Modified to a request that was not conditional")
        return check(cached[2])


def _blob(root: Url, algorithm: str, checksum: str) -> Url:
    return root.map(lambda address: blob_url(address, algorithm, checksum))


def _parse_hash_file(body: bytes, url: Url) -> str:
    text = body.decode("ascii", "replace").strip()
    if not is_sha256(text):
        raise FormatError("index.json.hash", f"{text[:80]!r} is not a sha256", url)
    return text


async def parse_downloaded(path: Path, url: Url, *, lazy: bool = False) -> Index:
    """Parse a downloaded index in a worker thread; the file is removed either way.

    ``lazy``: leave spec nodes raw until asked for (see ``parse_index``)."""

    def work() -> Index:
        try:
            return parse_index(path.read_bytes(), url.display, lazy=lazy)
        finally:
            path.unlink(missing_ok=True)

    return await anyio.to_thread.run_sync(work)
