"""Fetching one stack's index, only when it changed, and checking every byte of it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anyio

from mirrorsync.errors import FormatError, IntegrityError, NotFoundError
from mirrorsync.fetch import Fetched, HttpClient, Tally
from mirrorsync.formats.catalog import blob_url
from mirrorsync.formats.index import Index, parse_index
from mirrorsync.formats.manifest import parse_index_manifest
from mirrorsync.store import Store, writes
from mirrorsync.sync.progress import RunProgress

log = logging.getLogger("mirrorsync.sync")

V3_INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"
V2_INDEX = "build_cache/index.json"
V2_INDEX_HASH = "build_cache/index.json.hash"


@dataclass(frozen=True, slots=True)
class Target:
    """Where to look for a stack's index, and what the catalogue already told us."""

    mirror_root: str
    layout: str | None  # None: detect (mirror sources)
    catalog_checksum: str | None = None  # v3 content address from the catalogue URL


@dataclass(frozen=True, slots=True)
class FetchedIndex:
    checksum: str
    layout: str
    index_url: str
    index: Index | None  # None: unchanged since ``previous``


class IndexFetcher:
    """Downloads indexes into ``workdir``; small documents go through the HTTP cache."""

    def __init__(
        self,
        client: HttpClient,
        store: Store,
        workdir: Path,
        *,
        progress: RunProgress | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.workdir = workdir
        self.progress = progress if progress is not None else RunProgress()

    async def fetch(
        self, target: Target, previous: str | None, tally: Tally, name: str
    ) -> FetchedIndex:
        """The stack's index, or ``index=None`` when its checksum equals ``previous``."""
        root = target.mirror_root
        if target.layout == "v3" or target.layout is None:
            if previous is not None and target.catalog_checksum == previous:
                return FetchedIndex(previous, "v3", blob_url(root, "sha256", previous), None)
            try:
                return await self._fetch_v3(root, previous, tally, name)
            except NotFoundError:
                if target.layout == "v3":
                    raise
                log.debug("%s: no v3 index manifest under %s, trying layout v2", name, root)
        return await self._fetch_v2(root, previous, tally, name)

    async def _fetch_v3(
        self, root: str, previous: str | None, tally: Tally, name: str
    ) -> FetchedIndex:
        manifest_url = f"{root}/{V3_INDEX_MANIFEST}"
        body = await self.small_document(manifest_url, tally)
        self.progress.manifests += 1
        record = parse_index_manifest(body, manifest_url)
        if record.checksum_algorithm != "sha256":
            raise FormatError(
                "index manifest",
                f"index checksum algorithm {record.checksum_algorithm!r} is not sha256",
                manifest_url,
            )
        url = blob_url(root, record.checksum_algorithm, record.checksum)
        if record.checksum == previous:
            return FetchedIndex(previous, "v3", url, None)
        path = self._scratch(name)
        await self.client.download(
            url,
            path,
            expected_length=record.content_length,
            expected_sha256=record.checksum,
            tally=tally,
        )
        index = await _parse_file(path, url)
        return FetchedIndex(record.checksum, "v3", url, index)

    async def _fetch_v2(
        self, root: str, previous: str | None, tally: Tally, name: str
    ) -> FetchedIndex:
        index_url = f"{root}/{V2_INDEX}"
        hash_url = f"{root}/{V2_INDEX_HASH}"
        expected: str | None
        try:
            text = (await self.small_document(hash_url, tally)).decode("ascii", "replace").strip()
        except NotFoundError:
            log.info("%s: %s is missing; downloading the index to compare", name, hash_url)
            expected = None
        else:
            if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
                raise FormatError("index.json.hash", f"{text[:80]!r} is not a sha256", hash_url)
            expected = text
            if expected == previous:
                return FetchedIndex(previous, "v2", index_url, None)
        path = self._scratch(name)
        try:
            downloaded = await self.client.download(
                index_url, path, expected_sha256=expected, tally=tally
            )
        except IntegrityError as exc:
            raise IntegrityError(
                index_url, f"does not match {V2_INDEX_HASH} ({exc.problem})"
            ) from None
        if downloaded.sha256 == previous:
            return FetchedIndex(previous, "v2", index_url, None)
        index = await _parse_file(path, index_url)
        return FetchedIndex(downloaded.sha256, "v2", index_url, index)

    def _scratch(self, name: str) -> Path:
        """A download path of this stack's own: stacks may share an index blob."""
        slug = "".join(c if c.isalnum() or c in "-." else "_" for c in name)
        return self.workdir / f"{slug}.index.json"

    async def small_document(self, url: str, tally: Tally) -> bytes:
        """GET with If-None-Match/If-Modified-Since from the last answer, if any."""
        cached = await writes.cached_document(self.store, url)
        etag, last_modified = (cached[0], cached[1]) if cached else (None, None)
        result = await self.client.get(url, etag=etag, last_modified=last_modified, tally=tally)
        if isinstance(result, Fetched):
            await writes.cache_document(
                self.store, url, result.etag, result.last_modified, result.content
            )
            return result.content
        assert cached is not None  # a 304 only answers a conditional request
        return cached[2]


async def _parse_file(path: Path, url: str) -> Index:
    def work() -> Index:
        data = path.read_bytes()
        try:
            return parse_index(data, url)
        finally:
            path.unlink(missing_ok=True)

    return await anyio.to_thread.run_sync(work)
