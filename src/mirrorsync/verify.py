"""``verify``: is every binary the latest synced index lists really on the mirror?

For each spec of each selected stack: its manifest (v3) or spec file (v2) must
exist and parse, and every blob it names must exist with the promised length
(a HEAD request); with ``checksums`` each blob is downloaded, without being
kept, and its digest checked. Specs stream from the database a page at a time
through a bounded pool of workers, so memory stays flat on 100,000 specs, and
each problem is reported as soon as it is found.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mirrorsync.config import CatalogSource, Config, MirrorSource, PagesSource
from mirrorsync.errors import (
    FetchError,
    FormatError,
    IntegrityError,
    NotFoundError,
    SignatureError,
    UsageError,
)
from mirrorsync.fetch import HostDownError, HttpClient, RunDeadlineError, Tally, Throttle, Url
from mirrorsync.redact import unmask
from mirrorsync.store import Store
from mirrorsync.store.manifests import SpecRef, StackTarget, members, stack_targets
from mirrorsync.sync.manifests import Blob, StackMirror, open_mirror
from mirrorsync.sync.pool import run_pool
from mirrorsync.sync.trust import log_key_trust


@dataclass(frozen=True, slots=True)
class Problem:
    source: str
    release: str
    stack: str
    hash: str  # "-" for a problem of the whole stack
    package: str  # name@version, "-" for the whole stack
    what: str
    # Not checked: its host is down, or the run's time is up (each reported once).
    stop: HostDownError | RunDeadlineError | None = None

    @property
    def stop_key(self) -> str:
        return self.stop.host if isinstance(self.stop, HostDownError) else "run_deadline"

    def line(self) -> str:
        return f"{self.source}:{self.release}/{self.stack} {self.hash} {self.package}: {self.what}"


class Reporter(Protocol):
    """Where verify's findings go as they happen (the CLI prints them)."""

    def start(self, total: int) -> None: ...

    def advance(self, specs: int) -> None: ...

    def problem(self, problem: Problem) -> None: ...


@dataclass
class VerifySummary:
    stacks: int = 0
    specs: int = 0
    problems: int = 0
    unchecked: int = 0  # specs not checked: their host was down, or the run's time up
    stopped_by: list[str] = field(default_factory=list)  # hosts down, "run_deadline"
    seconds: float = 0.0
    tally: Tally = field(default_factory=Tally)


@dataclass(frozen=True, slots=True)
class _Item:
    target: StackTarget
    mirror: StackMirror
    client: HttpClient
    ref: SpecRef


async def verify(
    config: Config,
    reporter: Reporter,
    *,
    source: str | None = None,
    release: str | None = None,
    stack: str | None = None,
    checksums: bool = False,
) -> VerifySummary:
    """Check the selected stacks; every problem goes to ``reporter`` as it is found."""
    started = time.monotonic()
    summary = VerifySummary()
    # Pages sources name no mirror: their stacks have no mirror root and are not targets.
    by_name = {s.name: s for s in config.sources if not isinstance(s, PagesSource)}
    log_key_trust([by_name[t] for t in sorted({source} if source else by_name) if t in by_name])
    async with await Store.open_read_only(config.database_path) as store:
        targets = await stack_targets(store, source=source, release=release, stack=stack)
        if not targets:
            wanted = " ".join(
                f"--{k} {v}"
                for k, v in (("source", source), ("release", release), ("stack", stack))
                if v
            )
            raise UsageError(f"no synced stack matches {wanted or 'anything'} in {store.path}")
        summary.stacks = len(targets)
        reporter.start(sum(t.spec_count for t in targets))
        http = config.http
        # One client per TLS setting of the sources, sharing limits and the hosts found down.
        throttle = Throttle(http.concurrency, http.per_host_rate, http.host_concurrency)
        with tempfile.TemporaryDirectory(prefix="mirrorsync-verify-") as tmp:
            async with (
                HttpClient(http, throttle=throttle) as strict,
                HttpClient(http, verify=False, throttle=throttle) as lax,
            ):

                async def items() -> AsyncIterator[_Item]:
                    for target in targets:
                        wanted = by_name.get(target.source)
                        client = lax if wanted is not None and wanted.insecure else strict
                        signatures = wanted.verify_signatures if wanted else False
                        trusted = wanted.trusted_keys if wanted else None

                        def stack_problem(what: str, target: StackTarget = target) -> Problem:
                            return Problem(
                                target.source, target.release, target.name, "-", "-", what
                            )

                        root = mirror_address(target.mirror_root, wanted)
                        if root is None:
                            summary.problems += 1
                            reporter.problem(
                                stack_problem(
                                    f"not checked: its mirror root {target.mirror_root} has "
                                    "credentials the configuration no longer gives"
                                )
                            )
                            continue
                        try:
                            mirror = await open_mirror(
                                client,
                                target,
                                root,
                                verify_signatures=signatures,
                                gnupg_home=Path(tmp) / f"gnupg-{target.id}",
                                tally=summary.tally,
                                trusted_keys=trusted,
                            )
                        except (SignatureError, FetchError, FormatError, IntegrityError) as exc:
                            summary.problems += 1
                            reporter.problem(stack_problem(f"cannot check signatures: {exc}"))
                            mirror = StackMirror(client, root, target.layout)
                        async for ref in members(store, target.id):
                            yield _Item(target, mirror, client, ref)

                async def work(item: _Item) -> list[Problem]:
                    return await _check(item.client, item, checksums, summary.tally)

                async def consume(problems: list[Problem]) -> None:
                    summary.specs += 1
                    for problem in problems:
                        if problem.stop is not None:
                            summary.unchecked += 1
                            if problem.stop_key in summary.stopped_by:
                                continue  # a down host or the deadline is reported once
                            summary.stopped_by.append(problem.stop_key)
                        summary.problems += 1
                        reporter.problem(problem)
                    reporter.advance(1)

                await run_pool(items(), work, consume, workers=config.http.concurrency)
    summary.seconds = time.monotonic() - started
    return summary


def mirror_address(display_root: str, source: CatalogSource | MirrorSource | None) -> Url | None:
    """The address of a stack's mirror root, from the configuration.

    The store keeps only display forms (credentials masked): the address is the
    configured URL (a mirror's ``url``, a catalogue's bucket bases or its own
    origin) whose display form the stored root starts with, with the rest of
    the stored path appended. None if the stored root has masked credentials
    that no configured URL supplies.
    """
    candidates: list[Url] = []
    if isinstance(source, MirrorSource):
        candidates.append(Url(source.url))
    elif isinstance(source, CatalogSource):
        candidates += [Url(base) for base in source.buckets().values()]
        candidates.append(Url(source.url).map(lambda url: "/".join(url.split("/", 3)[:3])))
    for base in sorted(candidates, key=lambda c: len(c.display), reverse=True):
        address = unmask(display_root, base)
        if address is not None:
            return Url(address)
    root = Url(display_root)
    return root if root.display == root.address else None


async def _check(client: HttpClient, item: _Item, checksums: bool, tally: Tally) -> list[Problem]:
    target, ref = item.target, item.ref

    def problem(what: str) -> Problem:
        return Problem(
            target.source, target.release, target.name, ref.hash, f"{ref.name}@{ref.version}", what
        )

    word = "spec manifest" if item.mirror.layout == "v3" else "spec file"
    try:
        files = await item.mirror.spec_files(ref, tally)
    except (HostDownError, RunDeadlineError) as exc:
        return [Problem(target.source, target.release, target.name, "-", "-", str(exc), exc)]
    except NotFoundError as exc:
        note = "" if exc.problem.startswith("HTTP") else f" ({exc.problem})"
        return [problem(f"{word} missing: {exc.url}{note}")]
    except FormatError as exc:
        return [problem(f"{word} unreadable: {exc}")]
    except SignatureError as exc:
        return [problem(f"{word} signature: {exc}")]
    except (FetchError, IntegrityError) as exc:
        return [problem(f"{word} could not be fetched: {exc}")]
    found = []
    # An OCI registry's blobs are asked for with the token its manifest was read with.
    registry = item.mirror.registry
    headers = registry.auth_headers() if registry is not None else None
    for blob in files.blobs:
        try:
            what = await _check_blob(client, blob, checksums, tally, word, headers)
        except (HostDownError, RunDeadlineError) as exc:
            return [Problem(target.source, target.release, target.name, "-", "-", str(exc), exc)]
        if what:
            found.append(problem(what))
    return found


async def _check_blob(
    client: HttpClient,
    blob: Blob,
    checksums: bool,
    tally: Tally,
    word: str,
    headers: dict[str, str] | None = None,
) -> str | None:
    """What is wrong with one blob, or None; ``word`` names what promised it."""
    length: int | None
    digest: str | None = None
    try:
        if checksums:
            length, digest = await client.measure(
                blob.url,
                algorithm=blob.algorithm,
                expected_length=blob.length,
                tally=tally,
                headers=headers,
            )
        else:
            length = await client.head(blob.url, tally=tally, headers=headers)
    except NotFoundError:
        return f"{blob.role} missing: {blob.url}"
    except (HostDownError, RunDeadlineError):
        raise
    except IntegrityError as exc:  # read no further than the promised length
        return f"{blob.role}: {exc}"
    except (FetchError, FormatError) as exc:  # FormatError: a Content-Length out of range
        return f"{blob.role} could not be checked: {exc}"
    if blob.length is not None and length is not None and length != blob.length:
        return f"{blob.role} is {length} bytes, the {word} says {blob.length}: {blob.url}"
    if digest is not None and digest != blob.checksum:
        return (
            f"{blob.role} {blob.algorithm} is {digest}, the {word} says {blob.checksum}: {blob.url}"
        )
    return None
