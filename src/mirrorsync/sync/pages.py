"""Syncing a ``pages`` source: cache.spack.io package pages instead of indexes.

Each page is one package's view of one release (FORMATS.md section 5): per
spec, the stacks whose index holds it. A stack of a release, as far as this
source knows, is the union over every configured page of that release of the
hashes that name it. From there on a pages stack is recorded exactly like an
index stack: versions, memberships, ``spec.*``/``stack.*``/``release.*`` events.

Pages are all or nothing per run: if any page cannot be fetched or parsed, the
source fails and nothing is recorded, because a stack or release missing from
the pages that did arrive may only be missing from the page that did not.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio

from mirrorsync.config import PagesSource
from mirrorsync.errors import MirrorsyncError
from mirrorsync.fetch import Tally, Url
from mirrorsync.formats._common import compiler_text
from mirrorsync.formats.index import SpecInfo
from mirrorsync.formats.pages import Page, PageSpec, parse_page, split_compiler
from mirrorsync.store import Store, claims, releases, utcnow, writes
from mirrorsync.store import manifests as store_manifests
from mirrorsync.sync.index import IndexFetcher
from mirrorsync.sync.outcome import log_outcome
from mirrorsync.sync.report import RunReport
from mirrorsync.units import Verbatim

log = logging.getLogger("mirrorsync.sync")


@dataclass(frozen=True, slots=True)
class FetchedPage:
    url: str
    sha256: str  # of the page's bytes
    page: Page


@dataclass
class ReleaseView:
    """One release as the pages tell it: stack -> hash -> spec, and what it was built from."""

    fingerprint: str  # sha256 over (url, page sha256) of every page of the release
    stacks: dict[str, dict[str, SpecInfo]] = field(default_factory=dict)
    sizes: dict[str, int | None] = field(default_factory=dict)  # hash -> the page's size


def spec_info(package: str, spec: PageSpec) -> SpecInfo:
    """The ``specs`` row of a page entry, in the same notation an index gives."""
    compiler = split_compiler(spec.compiler)
    return SpecInfo(
        hash=spec.hash,
        name=package,
        version=spec.version,
        platform=spec.platform,
        os=spec.os,
        target=spec.target,
        compiler=compiler_text(*compiler) if compiler else None,
        variants=spec.variants,
    )


def combine(pages: Iterable[FetchedPage]) -> dict[str, ReleaseView]:
    """Releases and their stacks as the union of every page of each release."""
    by_release: dict[str, list[FetchedPage]] = {}
    for fetched in pages:
        by_release.setdefault(fetched.page.release, []).append(fetched)
    views: dict[str, ReleaseView] = {}
    for release, group in by_release.items():
        digest = hashlib.sha256()
        for fetched in sorted(group, key=lambda f: f.url):
            digest.update(f"{fetched.url}\n{fetched.sha256}\n".encode())
        view = ReleaseView(fingerprint=digest.hexdigest())
        for fetched in group:
            for spec in fetched.page.specs:
                info = spec_info(fetched.page.package, spec)
                view.sizes.setdefault(spec.hash, spec.size)
                for stack in spec.stacks:
                    view.stacks.setdefault(stack, {}).setdefault(spec.hash, info)
        views[release] = view
    return views


class PagesSync:
    """One run of one pages source against the store."""

    def __init__(self, store: Store, fetcher: IndexFetcher, report: RunReport) -> None:
        self.store = store
        self.fetcher = fetcher
        self.report = report
        self.marks: dict[tuple[str, str], str | None] = {}

    async def run(self, source: PagesSource, source_id: int) -> None:
        pages, failures = await self.fetch_all(source.urls)
        if failures:
            for message in failures:
                log.error("source %s failed: %s", Verbatim(source.name), message)
                self.report.source_errors.append((source.name, message))
            log.error(
                "source %s: %d of %d pages failed; nothing recorded this run",
                Verbatim(source.name),
                len(failures),
                len(source.urls),
            )
            return
        views = combine(pages)
        self.marks = await claims.checked_marks(self.store, source_id)
        known = await releases.known_releases(self.store, source_id)
        self.report.release_events += await releases.record_releases(
            self.store, source_id, sorted(set(views) - known), [], utcnow()
        )
        for release in sorted(views):
            view = views[release]
            for stack in sorted(view.stacks):
                await self.stack(source.name, source_id, release, stack, view)
        for row in await writes.stacks_of(self.store, source_id):
            view_of_release = views.get(row.release)
            if row.present and (view_of_release is None or row.name not in view_of_release.stacks):
                await self.retire(source.name, row)
        self.report.release_events += await releases.record_releases(
            self.store, source_id, [], sorted(known - set(views)), utcnow()
        )

    async def fetch_all(self, urls: list[str]) -> tuple[list[FetchedPage], list[str]]:
        """Every page, or one line per page that could not be fetched or parsed."""
        pages: dict[str, FetchedPage] = {}
        failures: dict[str, str] = {}

        async def one(url: str) -> None:
            try:
                # Parsed before it may enter the HTTP cache, on the event loop's thread:
                # pages are small, and msgspec 0.22 crashes (SIGSEGV) when two threads
                # make their first ``convert`` to a Struct at the same time.
                body, page = await self.fetcher.small_document(
                    Url(url), Tally(), "page", lambda b: (b, parse_page(b, Url(url).display))
                )
            except MirrorsyncError as exc:
                failures[url] = str(exc)
                return
            pages[url] = FetchedPage(url, hashlib.sha256(body).hexdigest(), page)

        async with anyio.create_task_group() as tg:
            for url in urls:
                tg.start_soon(one, url)
        return [pages[u] for u in urls if u in pages], [failures[u] for u in urls if u in failures]

    async def stack(
        self, source_name: str, source_id: int, release: str, stack: str, view: ReleaseView
    ) -> None:
        started = time.monotonic()
        mark = self.marks.get((release, stack))
        async with writes.claim_stack(self.store, source_id, release, stack, mark=mark) as held:
            if held.row is None:
                self.skipped(source_name, release, stack, held.skipped, started)
                return
            await self.claimed(source_name, held.row, view.stacks[stack], view, started)

    def skipped(
        self, source_name: str, release: str, stack: str, why: str | None, started: float
    ) -> None:
        outcome = self.report.add_stack(source_name, release, stack, "skipped", 0, 0, started)
        outcome.skipped = why
        log_outcome(outcome)

    async def claimed(
        self,
        source_name: str,
        row: writes.StackRow,
        specs: dict[str, SpecInfo],
        view: ReleaseView,
        started: float,
    ) -> None:
        if row.present and row.index_checksum == view.fingerprint:
            snapshot = writes.Snapshot(row.id, None, view.fingerprint, (), ())
            await writes.record_unchanged(self.store, snapshot, utcnow())
            log_outcome(
                self.report.add_stack(
                    source_name,
                    row.release,
                    row.name,
                    "unchanged",
                    row.version,
                    len(specs),
                    started,
                )
            )
            return
        old = await writes.current_hashes(self.store, row.id)
        new = set(specs)
        snapshot = writes.Snapshot(
            stack_id=row.id,
            location=None,
            index_checksum=view.fingerprint,
            added=[specs[h] for h in sorted(new - old)],
            removed=sorted(old - new),
            announce=not row.present,
            base_version=row.version,
        )
        at = utcnow()
        committed = await writes.commit_snapshot(self.store, snapshot, at)
        # The sizes the pages give: 'specs' shows them (a pages source is never crawled).
        await store_manifests.record_page_sizes(
            self.store, row.id, {h: view.sizes.get(h) for h in new}, at
        )
        outcome = self.report.add_stack(
            source_name,
            row.release,
            row.name,
            "changed" if committed.events else "unchanged",
            committed.version,
            len(new),
            started,
        )
        outcome.added, outcome.removed, outcome.events = (
            committed.added,
            committed.removed,
            committed.events,
        )
        log_outcome(outcome)

    async def retire(self, source_name: str, row: writes.StackRow) -> None:
        """No page lists this stack any more: close its memberships."""
        started = time.monotonic()
        mark = self.marks.get((row.release, row.name))
        async with writes.claim_stack(
            self.store, row.source_id, row.release, row.name, mark=mark
        ) as held:
            if held.row is None:
                self.skipped(source_name, row.release, row.name, held.skipped, started)
                return
            await self.retire_claimed(source_name, held.row, started)

    async def retire_claimed(self, source_name: str, row: writes.StackRow, started: float) -> None:
        committed = await writes.retire_stack(
            self.store, row.id, utcnow(), base_version=row.version
        )
        outcome = self.report.add_stack(
            source_name, row.release, row.name, "removed", committed.version, 0, started
        )
        outcome.removed, outcome.events = committed.removed, committed.events
        log_outcome(outcome)
