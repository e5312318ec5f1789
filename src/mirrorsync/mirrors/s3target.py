"""A copy in an S3 bucket (``mirrors[].path: s3://bucket/prefix``).

Every request goes through the one fetch client (``fetch/s3.py`` signs it), so the
copy's writes are throttled, retried, bounded in time and logged as its reads are.

What it guarantees, as a directory copy does (``mirrors/target.py``):

- An object gets its key only whole: a PUT (or a multipart upload's completion,
  for blobs over :data:`MULTIPART_OVER`) is atomic in S3; a killed run leaves at
  most an unfinished multipart upload, invisible to readers, aborted by the next run.
- Blobs are sent with their sha256 as ``x-amz-content-sha256`` (S3 refuses a body
  that does not match) and kept as ``x-amz-meta-sha256``.
- Blobs first, then spec manifests, then the index blob and LAST the index
  manifest: a reader (Spack) never sees an index naming a missing object.
- Incremental: what is present is one ListObjectsV2 pass (1,000 keys a request);
  a blob the published index references with the right size is not sent again,
  any other one at its key only if its ``x-amz-meta-sha256`` (one HEAD) is its digest.
- Deletions come after the publish, of unreferenced keys once ``delete_after`` passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import anyio
import anyio.from_thread

from mirrorsync.errors import CopyError, FormatError, NotFoundError
from mirrorsync.fetch import HttpClient, Tally, Url
from mirrorsync.fetch.s3 import quote_key, quote_value
from mirrorsync.mirrors.layout import INDEX_MANIFEST, OWNED
from mirrorsync.mirrors.target import TargetView, regular_stat
from mirrorsync.units import header_count

if TYPE_CHECKING:
    from mirrorsync.config import MirrorCopy

#: Blobs larger than this are sent as a multipart upload, in parts of this size.
MULTIPART_OVER = 16 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
_SMALL_CAP = 4 << 30  # a manifest, layout, key, or the index blob (the public one: ~200 MB)
_LIST_CAP = 4 * 1024 * 1024  # one ListObjectsV2 page (1,000 keys)
MAX_LIST_PAGES = 100_000  # of one part's listing: 100 million keys (a server may page forever)
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def open_target(copy: MirrorCopy, client: HttpClient, workdir: Path, tally: Tally) -> S3Target:
    return S3Target(copy.path, client, workdir, tally)


class S3Target:
    """A copy under ``s3://bucket/prefix`` (see the module's guarantees)."""

    def __init__(self, url: str, client: HttpClient, workdir: Path, tally: Tally) -> None:
        self.base = url.rstrip("/")
        self.display = self.base
        bucket, _, prefix = self.base[len("s3://") :].partition("/")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.client = client
        self.workdir = workdir
        self.tally = tally
        self.multipart_over = MULTIPART_OVER
        self.part_size = PART_SIZE
        self._present: dict[str, int] | None = None  # rel -> size: listed, then as we write
        self._written: dict[str, int] = {}  # rel -> size: put by this run
        self._listing_lock = anyio.Lock()  # one listing at a time (workers ask at once)
        self.uploads = 0  # objects written (PUTs and completed multipart uploads)

    # -- reading ---------------------------------------------------------------

    def url(self, rel: str) -> Url:
        return Url(f"{self.base}/{quote_key(rel)}")

    def view(self) -> TargetView:
        return S3View(self)

    async def read(self, rel: str) -> bytes | None:
        try:
            fetched = await self.client.get(
                self.url(rel), max_bytes=_SMALL_CAP, limit_name=None, tally=self.tally
            )
        except NotFoundError:
            return None
        return getattr(fetched, "content", None)

    async def size(self, rel: str) -> int | None:
        return (await self._listing()).get(rel)

    async def sha256(self, rel: str) -> str | None:
        try:
            _, digest = await self.client.measure(self.url(rel), tally=self.tally)
        except NotFoundError:
            return None
        return digest

    async def exists(self, rel: str, size: int, digest: str, *, trusted: bool) -> bool:
        if (await self._listing()).get(rel) != size:
            return False
        if trusted:
            return True
        try:  # written by another, or by a run that never published it: its recorded digest
            answer = await self.client.send("HEAD", self.url(rel), tally=self.tally)
        except NotFoundError:
            return False
        return answer.headers.get("x-amz-meta-sha256") == digest

    async def _listing(self) -> dict[str, int]:
        """What is present: listed once (when first asked), then kept as this run writes."""
        async with self._listing_lock:
            if self._present is None:
                listed = await self.inventory()
                # Written while the listing ran: the listing may predate them.
                self._present = {**listed, **self._written}
            return self._present

    async def inventory(self) -> dict[str, int]:
        """Every key under the copy's own parts with its size (ListObjectsV2, paged)."""
        out: dict[str, int] = {}
        for part in OWNED:
            token: str | None = None
            for _ in range(MAX_LIST_PAGES):
                query = f"list-type=2&prefix={quote_value(self.prefix + part + '/')}"
                if token is not None:
                    query += f"&continuation-token={quote_value(token)}"
                listed = Url(f"s3://{self.bucket}/?{query}")
                answer = await self.client.send(
                    "GET", listed, max_bytes=_LIST_CAP, tally=self.tally
                )
                root = _xml(answer.content, listed)
                for item in root.iter(f"{_NS}Contents"):
                    key = item.findtext(f"{_NS}Key") or ""
                    size = header_count(item.findtext(f"{_NS}Size"))
                    if key.startswith(self.prefix) and size is not None:
                        out[key[len(self.prefix) :]] = size
                token = root.findtext(f"{_NS}NextContinuationToken")
                if root.findtext(f"{_NS}IsTruncated") != "true" or not token:
                    break
            else:
                raise CopyError(
                    f"{self.display}/{part}/: the listing goes on past {MAX_LIST_PAGES} pages"
                )
        return out

    # -- writing ---------------------------------------------------------------

    async def prepare(self) -> None:
        """Abort the multipart uploads a killed run left under the copy's prefix."""
        self._present = None
        self._written = {}
        query = f"uploads&prefix={quote_value(self.prefix)}"
        listed = Url(f"s3://{self.bucket}/?{query}")
        answer = await self.client.send("GET", listed, max_bytes=_LIST_CAP, tally=self.tally)
        for upload in _xml(answer.content, listed).iter(f"{_NS}Upload"):
            key = upload.findtext(f"{_NS}Key") or ""
            upload_id = upload.findtext(f"{_NS}UploadId") or ""
            if key.startswith(self.prefix) and upload_id:
                await self._abort(key[len(self.prefix) :], upload_id)

    async def staging(self, rel: str) -> Path:
        return self.workdir / f"s3-{secrets.token_hex(8)}.part"

    def discard(self, staged: Path) -> None:
        with contextlib.suppress(OSError):
            staged.unlink()

    async def put_blob(self, rel: str, staged: Path, size: int, digest: str) -> None:
        if size <= self.multipart_over:
            data = await anyio.to_thread.run_sync(staged.read_bytes)
            await self._put(rel, data, digest)
        else:
            await self._multipart(rel, staged, size, digest)
        self.discard(staged)

    async def put_manifest(self, rel: str, data: bytes) -> None:
        await self._put(rel, data, hashlib.sha256(data).hexdigest())

    async def publish_index(self, blob_rel: str, data: bytes, manifest: bytes) -> None:
        if await self.size(blob_rel) != len(data):
            await self.put_manifest(blob_rel, data)
        await self.put_manifest(INDEX_MANIFEST, manifest)  # last: the index readers see

    async def delete(self, rels: list[str]) -> int:
        count = 0
        for rel in rels:
            if (await self._listing()).get(rel) is None:
                continue
            await self.client.send("DELETE", self.url(rel), tally=self.tally)
            (await self._listing()).pop(rel, None)
            self._written.pop(rel, None)
            count += 1
        return count

    def failure(self, exc: OSError) -> CopyError:
        return CopyError(f"{self.display}: staging a blob in {self.workdir}: {exc.strerror or exc}")

    async def aclose(self) -> None:
        return None

    async def _put(self, rel: str, data: bytes, digest: str) -> None:
        headers = {
            "x-amz-content-sha256": digest,  # S3 checks the body against it
            "x-amz-meta-sha256": digest,
            "content-type": _content_type(rel),
        }
        await self.client.send(
            "PUT", self.url(rel), content=data, headers=headers, tally=self.tally
        )
        self._wrote(rel, len(data))

    async def _multipart(self, rel: str, staged: Path, size: int, digest: str) -> None:
        url = self.url(rel)
        answer = await self.client.send(
            "POST",
            Url(f"{url.address}?uploads"),
            headers={"x-amz-meta-sha256": digest, "content-type": _content_type(rel)},
            tally=self.tally,
        )
        upload_id = _xml(answer.content, url).findtext(f"{_NS}UploadId")
        if not upload_id:
            raise FormatError("response", "no UploadId in the answer", url.display)
        done = False
        try:
            parts: list[tuple[int, str]] = []
            with open(staged, "rb") as file:  # noqa: ASYNC230 - each read is in a thread
                number = 0
                while True:
                    chunk = await anyio.to_thread.run_sync(file.read, self.part_size)
                    if not chunk:
                        break
                    number += 1
                    part = await self.client.send(
                        "PUT",
                        Url(f"{url.address}?partNumber={number}&uploadId={quote_value(upload_id)}"),
                        content=chunk,
                        tally=self.tally,
                    )
                    parts.append((number, part.headers.get("etag", "")))
            body = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(e)}</ETag></Part>"
                for n, e in parts
            )
            document = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
            completed = await self.client.send(
                "POST",
                Url(f"{url.address}?uploadId={quote_value(upload_id)}"),
                content=document,
                tally=self.tally,
            )
            if b"<Error>" in completed.content:  # S3 may report a failure with a 200
                raise CopyError(f"{url.display}: multipart upload not completed")
            done = True
        finally:
            if not done:
                with anyio.CancelScope(shield=True):
                    await self._abort(rel, upload_id)
        self._wrote(rel, size)

    def _wrote(self, rel: str, size: int) -> None:
        self.uploads += 1
        self._written[rel] = size
        if self._present is not None:
            self._present[rel] = size

    async def _abort(self, rel: str, upload_id: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.client.send(
                "DELETE",
                Url(f"{self.url(rel).address}?uploadId={quote_value(upload_id)}"),
                tally=self.tally,
            )


class S3View:
    """The S3 copy from a worker thread: each call runs on the event loop."""

    def __init__(self, target: S3Target) -> None:
        self.target = target
        self.local: Path | None = None

    def where(self, rel: str) -> str:
        return self.target.url(rel).display

    def read(self, rel: str) -> bytes | None:
        return anyio.from_thread.run(self.target.read, rel)

    def size(self, rel: str) -> int | None:
        return anyio.from_thread.run(self.target.size, rel)

    def sha256(self, rel: str) -> str | None:
        return anyio.from_thread.run(self.target.sha256, rel)

    def listing(self, *, links: bool = False) -> dict[str, os.stat_result]:
        present = anyio.from_thread.run(self.target.inventory)
        return {rel: regular_stat(size) for rel, size in present.items()}


def _content_type(rel: str) -> str:
    return "application/json" if rel.endswith(".json") else "application/octet-stream"


def _xml(data: bytes, url: Url) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise FormatError("S3 answer", f"not XML: {exc}", url.display) from None
