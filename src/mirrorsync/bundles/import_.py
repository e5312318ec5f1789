"""``bundle import``: publish a bundle's version into a local copy, with no network.

In this order, each step only after the one before succeeded:

1. check: the manifest (bounded, every field), its signature against
   ``bundle.trusted_keys`` (when set, an unsigned bundle is refused), and that the
   copy holds the bundle's ``from`` version of its origin (a gap or an out-of-order
   bundle is refused naming the versions; the same bundle again is a no-op).
2. stage: each member streamed into a temporary file beside the file it becomes
   (``.NAME.RANDOM.part``, which no reader and no check ever takes for a file of
   the copy), its size and sha256 checked against the manifest as it arrives. A
   member that fails removes every temporary file: the copy is as it was.
3. publish, as ``mirror`` does: blobs, spec manifests, keys and the index blob are
   renamed into place (none of them is named by the published index manifest
   until it is replaced), the new index is checked to find every file it names,
   then the index manifest is replaced, last, in one rename.
4. record: the published state, its history row, the import, and a
   ``mirror.updated`` event (one transaction); then files no index references any
   more are deleted once ``delete_after`` has passed, as ``mirror`` deletes them.

A process killed anywhere leaves the copy at the old version or the new one; the
next import removes the temporary files and completes. For tests only,
``MIRRORSYNC_TEST_IMPORT_DELAY`` (seconds) makes every member and every rename wait
that long, so a test's SIGKILL can land in the middle of an import.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio

from mirrorsync.bundles.manifest import KEY_NAME, SIGNATURE_NAME, BundleManifest, publish_order
from mirrorsync.bundles.reader import Opened, Sink, read_members
from mirrorsync.bundles.tarvol import Sha256
from mirrorsync.config import Config, split_trusted_keys
from mirrorsync.errors import BundleError, CopyError, FormatError, SignatureError, UsageError
from mirrorsync.formats.manifest import parse_index_manifest
from mirrorsync.gpg import Keyring
from mirrorsync.mirrors import files
from mirrorsync.mirrors.layout import INDEX_MANIFEST
from mirrorsync.mirrors.publish import (
    Referenced,
    due,
    published_checksum,
    referenced,
    unreferenced,
)
from mirrorsync.mirrors.target import DirTarget, DirView
from mirrorsync.store import Store
from mirrorsync.store import bundles as store_bundles
from mirrorsync.store import mirrors as store_mirrors
from mirrorsync.store.db import Connection
from mirrorsync.store.mirrors import Published

log = logging.getLogger("mirrorsync.bundle")

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
DELAY_ENV = "MIRRORSYNC_TEST_IMPORT_DELAY"
DEFAULT_DELETE_AFTER = 2 * 86400.0  # a copy's default delete_after (2d)


@dataclass
class ImportOutcome:
    copy: str
    origin: str
    status: str  # imported | unchanged | dry run
    from_version: int
    to_version: int
    version: int = 0  # the receiving copy's own version
    files: int = 0  # carried in the bundle
    bytes: int = 0
    written: int = 0  # files written (the others were in the copy already)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    signed_by: str | None = None
    deleted: int = 0
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "copy": self.copy,
            "origin": self.origin,
            "status": self.status,
            "from": self.from_version,
            "to": self.to_version,
            "version": self.version,
            "files": self.files,
            "bytes": self.bytes,
            "written": self.written,
            "added": self.added,
            "removed": self.removed,
            "signed_by": self.signed_by,
            "deleted": self.deleted,
        }


async def check_signature(config: Config, opened: Opened) -> str | None:
    """The fingerprint of the trusted key that signed the manifest (None: unsigned and
    no trusted keys are set); BundleError if the signature is not accepted."""
    trusted = config.bundle.trusted_keys
    if opened.signature is None:
        if trusted:
            raise BundleError(
                f"{opened.path}: not signed ({SIGNATURE_NAME} missing), and "
                "bundle.trusted_keys is set: only bundles signed by a trusted key are imported"
            )
        return None
    if not trusted:
        log.warning(
            "%s: signed, but bundle.trusted_keys is not set: the signature is not checked",
            opened.path,
        )
        return None
    with tempfile.TemporaryDirectory(prefix="mirrorsync-bundle-") as scratch:
        keyring = Keyring.create(Path(scratch) / "gnupg")
        keyring.pinned = True
        fingerprints, key_files = split_trusted_keys(trusted)
        try:
            for path in key_files:
                await keyring.import_key(path.read_bytes(), str(path))
            for fingerprint in fingerprints:
                if fingerprint not in keyring.fingerprints and opened.key:
                    with contextlib.suppress(SignatureError):  # the bundle's key, if that one
                        await keyring.import_only(opened.key, KEY_NAME, fingerprint)
        except OSError as exc:
            raise SignatureError(str(exc.filename), f"cannot read trusted key: {exc}") from None
        try:
            return await keyring.verify_detached(opened.signature, opened.data, SIGNATURE_NAME)
        except SignatureError as exc:
            raise BundleError(f"{opened.path}: {SIGNATURE_NAME}: {exc.problem}") from None


@dataclass
class _Staged:
    temp: Path
    final: Path
    rel: str


class _Stager:
    """Streams each member into temporary files beside the files it becomes."""

    def __init__(self, root: Path, manifest: BundleManifest, modes: files.Modes, dry_run: bool):
        self.root = root
        self.manifest = manifest
        self.modes = modes
        self.dry_run = dry_run
        self.staged: list[_Staged] = []
        self.delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        self._digest = Sha256()
        self._open: list[tuple[_Staged, int]] = []

    def _present(self, rel: str, size: int, sha256: str) -> bool:
        """Whether the copy holds this file already, the same (never through a link).

        Checked by its sha256, blobs included: a file left in the copy is trusted by
        its content, never by its name and size (a bundle carries a blob only when
        the receiver's published state lacks it, so this reads little)."""
        path = self.root / rel
        if files.size_of(path) != size:
            return False
        return files.sha256_if_present(path) == sha256

    def start(self, digest: str, where: str) -> Sink:
        self._digest = Sha256()  # in a helper thread, while the chunk is written
        self._open = []
        if not self.dry_run:
            for f in self.manifest.members[digest]:
                if f.path != INDEX_MANIFEST and self._present(f.path, f.size, f.sha256):
                    continue
                final = self.root / f.path
                files.make_parent(final, self.modes)
                temp = files.temp_path(final)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    fd = os.open(temp, flags, 0o600)
                except OSError as exc:
                    raise files.disk_error(final, exc) from None
                staged = _Staged(temp, final, f.path)
                self.staged.append(staged)
                self._open.append((staged, fd))

        def sink(chunk: bytes) -> None:
            self._digest.update(chunk)
            for staged, fd in self._open:
                view = memoryview(chunk)
                try:
                    while view:
                        view = view[os.write(fd, view) :]
                except OSError as exc:
                    raise files.disk_error(staged.final, exc) from None

        return sink

    def end(self, digest: str, where: str) -> None:
        for _, fd in self._open:
            os.close(fd)
        self._open = []
        if self._digest.hexdigest() != digest:
            path = self.manifest.members[digest][0].path
            raise BundleError(
                f"{where}: {path} (files/{digest}) does not match its sha256; the bundle is "
                "damaged or tampered with"
            )
        if self.delay:
            time.sleep(self.delay)

    def abandon(self) -> None:
        for _, fd in self._open:
            os.close(fd)
        for s in self.staged:
            files.remove_quietly(s.temp)
        self.staged = []

    def place(self, to_index: str) -> Referenced | None:
        """Rename every staged file into place, the index manifest last. The new state,
        read (and checked) before its index manifest is put in place, is what is then
        published: returned with that manifest counted (None: the bundle carried none)."""
        self.staged.sort(key=lambda s: publish_order(s.rel, to_index))
        manifest = next((s for s in self.staged if s.rel == INDEX_MANIFEST), None)
        manifest_size = 0
        if manifest is not None:
            manifest_size = self._check_index_manifest(manifest.temp, to_index)
        state = None
        for s in self.staged:
            if s is manifest:
                try:  # what the new index names is all there (the old state is untouched)
                    state = referenced(DirView(self.root), to_index)
                except (CopyError, FormatError) as exc:
                    raise BundleError(
                        f"{exc}; the copy does not hold the version the bundle starts from "
                        "('mirrorsync verify --mirror')"
                    ) from None
            files.place(s.temp, s.final, self.modes)
            if self.delay:
                time.sleep(self.delay)
        self.staged = []
        if state is not None:
            state.sizes[INDEX_MANIFEST] = manifest_size
        return state

    def _check_index_manifest(self, temp: Path, to_index: str) -> int:
        """The staged index manifest names ``to_index``; its size."""
        data = temp.read_bytes()
        try:
            named = parse_index_manifest(data, INDEX_MANIFEST).checksum
        except FormatError as exc:
            raise BundleError(f"{INDEX_MANIFEST} in the bundle: {exc}") from None
        if named != to_index:
            raise BundleError(
                f"{INDEX_MANIFEST} in the bundle names index {named}, not {to_index} as the "
                "bundle manifest says; refused"
            )
        return len(data)


def _refuse_order(name: str, copy: str, at: int, manifest: BundleManifest) -> BundleError:
    joins = f"the bundle joins versions {manifest.from_version} -> {manifest.to_version} of {copy}"
    if at == 0:
        hint = "it holds nothing yet: import a full bundle first ('bundle export --full')"
    elif manifest.to_version < at:
        hint = f"it is at version {at}, past this bundle (out of order)"
    else:
        hint = (
            f"it is at version {at}: import the bundle from version {at} first "
            f"(a gap: versions {at} -> {manifest.from_version} are missing)"
        )
    return BundleError(f"mirror {name}: {joins}; {hint}")


async def import_bundle(
    config: Config,
    store: Store,
    opened: Opened,
    *,
    name: str | None,
    directory: Path | None,
    dry_run: bool,
    now: datetime | None = None,
) -> ImportOutcome:
    manifest = opened.manifest
    name = name or manifest.copy
    configured = next((c for c in config.mirrors if c.name == name), None)
    if configured is not None and configured.source is not None:
        raise UsageError(
            f"mirror {name} is made from source {configured.source}; bundle import writes "
            "only a copy that receives bundles (leave out its source:, or use --name)"
        )
    if directory is None:
        if configured is None:
            raise UsageError(
                f"no directory for mirror {name}: give DIR, or configure it under mirrors: "
                "(name and path, no source)"
            )
        if not configured.is_directory:
            raise UsageError(
                f"mirror {name} is at {configured.path}: bundle import writes a directory copy"
            )
        directory = configured.directory
    modes = files.Modes(configured.file_mode if configured else 0o644)
    delete_after = configured.delete_after_seconds if configured else DEFAULT_DELETE_AFTER
    outcome = ImportOutcome(
        name,
        manifest.copy,
        "dry run" if dry_run else "imported",
        manifest.from_version,
        manifest.to_version,
    )
    outcome.files, outcome.bytes = len(manifest.files), manifest.size
    outcome.added, outcome.removed = list(manifest.added), list(manifest.removed)
    outcome.signed_by = await check_signature(config, opened)
    row, got = await store_bundles.received(store, name)
    if row is not None and got.origin is None and row.version:
        raise UsageError(
            f"mirror {name} is made from a source; bundle import writes only a copy that "
            "receives bundles (--name another)"
        )
    if got.origin is not None and got.origin != manifest.copy:
        raise BundleError(
            f"mirror {name} receives bundles of {got.origin}, and this one is of {manifest.copy}"
        )
    current = published_checksum(DirView(directory)) if directory.exists() else None
    at = got.origin_version
    if at == manifest.to_version and current == manifest.to_index:
        outcome.status, outcome.version = "unchanged", row.version if row else 0
        outcome.message = (
            f"mirror {name} already holds version {at} of {manifest.copy}: nothing to import"
        )
        return outcome
    if at == manifest.to_version:
        raise BundleError(
            f"mirror {name} holds version {at} of {manifest.copy} already, but its published "
            f"index ({directory}) is not that version's; check it with "
            f"'mirrorsync verify --mirror {name}'"
        )
    if at == manifest.from_version and not manifest.full:
        if current not in (manifest.from_index, manifest.to_index):
            raise BundleError(
                f"mirror {name}: its published index ({directory}) is not that of version "
                f"{at} of {manifest.copy} the bundle starts from; check it with "
                f"'mirrorsync verify --mirror {name}'"
            )
    elif not (manifest.full and manifest.to_version > at):
        raise _refuse_order(name, manifest.copy, at, manifest)
    stager = _Stager(directory, manifest, modes, dry_run)
    if not dry_run:
        files.make_dirs(directory, modes)
        files.remove_temporaries(directory)
    try:
        await anyio.to_thread.run_sync(read_members, opened, stager.start, stager.end)
        outcome.written = len(stager.staged)
        if dry_run:
            return outcome
        placed = await anyio.to_thread.run_sync(stager.place, manifest.to_index)
    finally:
        stager.abandon()
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime(_TIME_FORMAT)
    row = await store_bundles.ensure_received(store, name, str(directory), manifest.copy)
    target = DirTarget(directory, modes)
    # Read once: the state place() checked is the one now published.
    keep = (
        placed if placed is not None else await anyio.to_thread.run_sync(referenced, target.view())
    )
    digest = hashlib.sha256(opened.data).hexdigest()
    record = store_bundles.Imported(
        manifest.copy,
        manifest.from_version,
        manifest.to_version,
        digest,
        stamp,
        len(manifest.files),
        manifest.size,
    )
    mirror_id = row.id

    async def also(conn: Connection, version: int) -> None:
        await store_bundles.record_import(conn, mirror_id, version, record)

    recorded = await store_mirrors.record_published(
        store,
        row,
        Published(manifest.to_index, frozenset(keep.binaries), keep.bytes, f"bundle:{digest}"),
        stamp,
        also,
    )
    outcome.version = recorded.version
    orphans = unreferenced(await target.inventory(), keep)
    since = await store_mirrors.note_orphans(store, row.id, orphans, stamp)
    gone = due(since, (now or datetime.now(UTC)).astimezone(UTC), delete_after)
    outcome.deleted = await target.delete(gone)
    await store_mirrors.forget_orphans(store, row.id, gone)
    return outcome


def bundle_summary(manifest: BundleManifest) -> dict[str, object]:
    """What ``bundle show`` prints: the copy, the versions joined, what it carries."""
    return {
        "copy": manifest.copy,
        "from": manifest.from_version,
        "to": manifest.to_version,
        "full": manifest.full,
        "from_index": manifest.from_index,
        "to_index": manifest.to_index,
        "created_by": manifest.created_by,
        "created_at": manifest.created_at,
        "volumes": manifest.volumes,
        "files": len(manifest.files),
        "bytes": manifest.size,
        "state_files": manifest.state_files,
        "state_bytes": manifest.state_bytes,
        "added": list(manifest.added),
        "removed": list(manifest.removed),
    }
