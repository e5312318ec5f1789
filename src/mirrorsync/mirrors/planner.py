"""Planning a copy (``mirrors/run.py``'s step 1), as the base of ``CopyJob``: the job's
state, and what is decided before the first download: the copy's stacks, what may enter
it and what it is asked for, their upstream indexes, the specs upstream no longer lists
that its ``keep`` holds, the keys that signed the selection, and the plan key (what its
content follows from)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio

from mirrorsync.config import CatalogSource, Config, MirrorCopy, MirrorSource
from mirrorsync.errors import CopyError, FormatError, NotFoundError, SignatureError
from mirrorsync.fetch import HttpClient
from mirrorsync.formats.catalog import blob_url
from mirrorsync.formats.rawindex import RawInstall, parse_raw_index
from mirrorsync.mirrors import files
from mirrorsync.mirrors.admit import Admission
from mirrorsync.mirrors.layout import blob_relpath
from mirrorsync.mirrors.outcome import MirrorOutcome
from mirrorsync.mirrors.plan import Keepable, Selection, StackIndex
from mirrorsync.mirrors.stacks import choose_stacks
from mirrorsync.mirrors.target import CopyTarget, TargetView
from mirrorsync.mirrors.wanted import Wanted, wanted
from mirrorsync.redact import Url, redact_url
from mirrorsync.store import Store
from mirrorsync.store import mirrors as store_mirrors
from mirrorsync.store.manifests import OK, StackTarget
from mirrorsync.store.mirrors import Kept, MirrorRow, SyncedStack
from mirrorsync.sync.index import unpack_index
from mirrorsync.sync.manifests import open_mirror
from mirrorsync.units import Verbatim

log = logging.getLogger("mirrorsync.mirror")

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class CopyPlanner:
    """A copy's job as far as its plan: its state, and the steps before the first
    download (``CopyJob`` takes it from there)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        client: HttpClient,
        workdir: Path,
        copy: MirrorCopy,
        dry_run: bool,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.workdir = workdir
        self.copy = copy
        self.target: CopyTarget | None = None  # opened by run()
        self.dry_run = dry_run
        self.clock = clock
        self.outcome = MirrorOutcome(copy.name, "dry run" if dry_run else "unchanged")
        self.row: MirrorRow | None = None
        self.rebuilding = False  # the published index was missing on disk
        self.full = False  # never "unchanged" without planning and checking

    @property
    def _target(self) -> CopyTarget:
        assert self.target is not None  # opened by run()
        return self.target

    def _now(self) -> str:
        return self.clock().astimezone(UTC).strftime(_TIME_FORMAT)

    async def _chosen(
        self,
        source: CatalogSource | MirrorSource,
        release: str,
        source_id: int,
        layouts: tuple[str, ...] = ("v3",),
    ) -> tuple[list[SyncedStack], Admission, Wanted]:
        """The copy's stacks, what of them may enter it, and the hashes it is asked for."""
        copy = self.copy
        stacks = choose_stacks(
            copy,
            source.name,
            release,
            await store_mirrors.synced_stacks(self.store, source_id, release),
            layouts,
        )
        # The one rule (mirrors/admit.py): what the crawl recorded decides what may enter.
        admission = Admission(
            await store_mirrors.manifest_states(self.store, [s.id for s in stacks]),
            verifies=source.verify_signatures,
        )
        want = await anyio.to_thread.run_sync(
            wanted, copy, self.config.path, f"mirrors[{self.config.mirrors.index(copy)}]"
        )
        return stacks, admission, want

    def _note_missing_index(self, current: str | None, where: str) -> None:
        """A published copy whose index is gone from its target: rebuild it, saying so."""
        row = self.row
        if row is not None and row.version and current is None and not self.dry_run:
            self.rebuilding = True
            log.warning(
                "mirror %s: the published index (version %d) is missing from %s; "
                "rebuilding the copy",
                Verbatim(self.copy.name),
                row.version,
                Verbatim(where),
            )

    def _live(self, kept_rows: dict[str, Kept]) -> list[str]:
        """The kept specs ``keep: DURATION`` still holds now (all of them otherwise):
        when one expires, the copy's plan changes."""
        seconds = self.copy.keep_seconds
        if seconds is None:
            return sorted(kept_rows)
        now = self.clock().astimezone(UTC)
        return sorted(h for h, k in kept_rows.items() if _age(k.left_upstream_at, now) < seconds)

    async def _keeping(
        self,
        indexes: list[StackIndex],
        stacks: list[SyncedStack],
        roots: list[str],
        admission: Admission,
        current: str | None,
        kept_rows: dict[str, Kept],
    ) -> Keeping:
        """Which binaries of the published copy upstream no longer lists (new ones, and
        those kept before), and which of them the copy's ``keep`` lets stay."""
        upstream = {h for i in indexes for h, r in i.index.installs.items() if r.in_buildcache}
        at = self._now()  # the run's one time: when specs left upstream, and the copy
        keeping = Keeping(at, back=[h for h in kept_rows if h in upstream])
        candidates = {h: k for h, k in kept_rows.items() if h not in upstream}
        row = self.row
        if row is not None and current is not None and current == row.index_checksum:
            previous = await anyio.to_thread.run_sync(
                _published_records, self._target.view(), current
            )
            for spec_hash, record in sorted(previous.items()):
                if not record.in_buildcache or spec_hash in upstream or spec_hash in kept_rows:
                    continue
                # The crawl's verdict when the copy took it in (its rows outlive the index).
                found = [
                    (s.id, state)
                    for s in stacks
                    if (state := admission.states.get((s.id, spec_hash))) is not None
                    and state.status == OK
                    and state.manifest_sha256 is not None
                ]
                stack_id, state = found[0] if found else (stacks[0].id, None)
                new = Kept(
                    spec_hash,
                    record.name,
                    at,
                    stack_id,
                    state.manifest_sha256 if state else None,
                    state.signer if state else None,
                    record.raw.decode(),
                )
                keeping.left.append(new)
                candidates[spec_hash] = new
        keeping.candidates = candidates
        if self.copy.keep == "upstream":
            return keeping
        seconds = self.copy.keep_seconds
        now = self.clock().astimezone(UTC)
        root_of = {s.id: r for s, r in zip(stacks, roots, strict=True)}
        for spec_hash, k in candidates.items():
            if k.manifest_sha256 is None:
                log.warning(
                    "mirror %s: cannot keep %s %s: no verified record of its manifest",
                    Verbatim(self.copy.name),
                    Verbatim(k.name),
                    Verbatim(spec_hash),
                )
                continue
            if seconds is not None and _age(k.left_upstream_at, now) >= seconds:
                continue
            kept_record = _record_of(spec_hash, k.record_json)
            if kept_record is None:
                continue
            admission.keep(k.stack_id, spec_hash, k.manifest_sha256, k.signer)
            keeping.keepable[spec_hash] = Keepable(
                kept_record, root_of.get(k.stack_id, roots[0]), k.stack_id, seconds is not None
            )
        return keeping

    async def _signer_keys(
        self,
        source: CatalogSource | MirrorSource,
        stacks: list[SyncedStack],
        roots: list[str],
        admission: Admission,
        selection: Selection,
    ) -> tuple[dict[str, bytes], Selection]:
        """The trusted keys (as the sync trusts them: ``trusted_keys``, never upstream's
        key index when they are given) that signed a selected manifest, armoured. A
        manifest whose signer is no longer trusted is left out."""
        wanted: dict[str, set[str]] = {}  # fingerprint -> hashes it signed
        for spec_hash, stack_id in selection.stacks.items():
            signer = admission.expected(stack_id, spec_hash).signer
            if signer is not None:
                wanted.setdefault(signer, set()).add(spec_hash)
        keys: dict[str, bytes] = {}
        for stack, root in zip(stacks, roots, strict=True):
            if not wanted.keys() - keys.keys():
                break
            target = StackTarget(stack.id, source.name, stack.release, stack.name, root, "v3", 0)
            try:
                mirror = await open_mirror(
                    self.client,
                    target,
                    Url(root),
                    verify_signatures=True,
                    gnupg_home=self.workdir / f"mirror-gnupg-{stack.id}",
                    tally=self.outcome.tally,
                    trusted_keys=source.trusted_keys,
                )
            except SignatureError as exc:
                raise CopyError(f"cannot load the keys the copy is signed with: {exc}") from None
            assert mirror.keyring is not None
            for fingerprint in wanted.keys() - keys.keys():
                key = await mirror.keyring.export_armored(fingerprint)
                if key:
                    keys[fingerprint] = key
        untrusted = wanted.keys() - keys.keys()
        if untrusted:
            for fingerprint in untrusted:
                for spec_hash in wanted[fingerprint]:
                    admission.leave_out(
                        selection.records[spec_hash],
                        f"signed by {fingerprint}, no longer a trusted key",
                    )
            selection = selection.without(admission)
        return keys, selection

    async def _index(self, stack: SyncedStack, root: str, label: str, stack_id: int) -> StackIndex:
        """The stack's upstream index as the last sync saw it (its content address)."""
        assert stack.index_checksum is not None
        url = blob_url(root, "sha256", stack.index_checksum)
        dest = self.workdir / f"mirror-index-{stack.index_checksum}.json"
        try:
            await self.client.download(
                Url(url),
                dest,
                expected_sha256=stack.index_checksum,
                max_bytes=self.config.limits.cap("index"),
                limit_name="limits.index",
                tally=self.outcome.tally,
            )
        except NotFoundError:
            raise CopyError(
                f"{redact_url(url)}: the index synced last is no longer on the mirror; "
                "the next 'mirrorsync once' syncs the current one"
            ) from None
        try:
            data = await anyio.to_thread.run_sync(dest.read_bytes)
            # Read as the sync reads it: a gzip-compressed index blob is unpacked.
            data = await anyio.to_thread.run_sync(
                unpack_index, data, redact_url(url), "detect", self.config.limits.cap("index")
            )
            index = await anyio.to_thread.run_sync(parse_raw_index, data, redact_url(url))
        finally:
            files.remove_quietly(dest)
        return StackIndex(label, root, index, stack_id)


@dataclass
class Keeping:
    """Specs of the published copy upstream no longer lists."""

    at: str  # when this run saw it
    back: list[str] = field(default_factory=list)  # kept ones upstream lists again
    left: list[Kept] = field(default_factory=list)  # left upstream since the last run
    candidates: dict[str, Kept] = field(default_factory=dict)  # every one not upstream now
    keepable: dict[str, Keepable] = field(default_factory=dict)  # those keep lets stay


def _age(at: str, now: datetime) -> float:
    return (now - datetime.strptime(at, _TIME_FORMAT).replace(tzinfo=UTC)).total_seconds()


def _published_records(view: TargetView, checksum: str) -> dict[str, RawInstall]:
    """The install records of the copy's published index (its own, whose checksum the
    store recorded)."""
    rel = blob_relpath("sha256", checksum)
    data = view.read(rel)
    if data is None or hashlib.sha256(data).hexdigest() != checksum:
        return {}
    try:
        return parse_raw_index(data, view.where(rel)).installs
    except FormatError:
        return {}


def _record_of(spec_hash: str, record_json: str) -> RawInstall | None:
    document = (
        b'{"database":{"version":"8","installs":{"'
        + spec_hash.encode()
        + b'":'
        + record_json.encode()
        + b"}}}"
    )
    try:
        return parse_raw_index(document).installs.get(spec_hash)
    except FormatError:
        return None


def plan_key_of(
    copy: MirrorCopy,
    stacks: list[SyncedStack],
    admission: Admission,
    want: Wanted,
    live: list[str],
) -> str:
    """What a copy's content follows from: its stacks' indexes, its filters, the
    crawl's verdicts on each manifest, the hashes it is asked for and what it keeps."""
    wanted_digest = hashlib.sha256("\n".join(sorted(want.hashes)).encode()).hexdigest()
    material = {
        "wanted": [wanted_digest, copy.keep, live, copy.by_glob],
        "stacks": [(s.name, s.index_checksum) for s in stacks],
        "filters": [copy.packages, copy.exclude_packages, copy.os, copy.targets, copy.platforms],
        "admission": admission.fingerprint(),
        "on_error": copy.on_error,
        "format": 2,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
