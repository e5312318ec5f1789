"""The spec-manifest crawl: each member of a synced stack, its manifest fetched and recorded.

After a stack's index is synced, its members' manifests are fetched by a small
pool of workers through the shared HTTP client (same throttle and retries), each
read from the mirror by :class:`~mirrorsync.sync.manifests.StackMirror`:

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
from pathlib import Path

import anyio

from mirrorsync.errors import FetchError, FormatError, IntegrityError, NotFoundError, SignatureError
from mirrorsync.fetch import HostDownError, HttpClient, RunDeadlineError, Tally, Url
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
from mirrorsync.sync.manifests import StackMirror, open_mirror
from mirrorsync.sync.outcome import ManifestTally
from mirrorsync.sync.pool import run_pool
from mirrorsync.sync.progress import RunProgress
from mirrorsync.units import Verbatim

log = logging.getLogger("mirrorsync.sync")

#: Results committed together; a killed run loses at most this many fetches.
FLUSH_RESULTS = 100
#: ...or whatever arrived in this many seconds, whichever comes first.
FLUSH_SECONDS = 1.0


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
