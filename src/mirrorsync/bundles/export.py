"""``bundle export``: a copy's published state, or what changed since a version, as a
bundle (tar, numbered tar volumes, or a directory), streamed in bounded memory.

The new state is read back from the copy (its published index, as ``mirror`` left
it). The receiver's state is the one an earlier export of that version carried
(recorded with it), else that version's index if it is still in the copy. The
bundle carries every file of the new state the receiver does not hold with the same
content; a full one carries all of it. The export is recorded, so the next one
defaults to ``--since`` this version.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio

from mirrorsync import __version__
from mirrorsync.bundles import state as states
from mirrorsync.bundles.manifest import (
    KEY_NAME,
    MANIFEST_NAME,
    MEMBER_DIR,
    SIGNATURE_NAME,
    BundleFile,
    BundleManifest,
    member_name,
    publish_order,
)
from mirrorsync.bundles.tarvol import (
    BLOCK,
    END,
    Sha256,
    VolumeWriter,
    member_bytes,
    read_file_chunks,
    volume_paths,
)
from mirrorsync.config import Config
from mirrorsync.errors import CopyError, UsageError
from mirrorsync.gpg import export_public, sign_detached
from mirrorsync.mirrors import files
from mirrorsync.mirrors.publish import published_checksum
from mirrorsync.mirrors.target import DirView
from mirrorsync.store import Store
from mirrorsync.store import bundles as store_bundles
from mirrorsync.store import mirrors as store_mirrors

log = logging.getLogger("mirrorsync.bundle")

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass
class ExportOutcome:
    copy: str
    status: str  # exported | paths | unchanged
    from_version: int = 0
    to_version: int = 0
    files: int = 0
    bytes: int = 0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # the bundle's files (volumes)
    carried: list[str] = field(default_factory=list)  # --paths-only: what the receiver lacks
    signed_by: str | None = None
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "copy": self.copy,
            "status": self.status,
            "from": self.from_version,
            "to": self.to_version,
            "files": self.files,
            "bytes": self.bytes,
            "added": self.added,
            "removed": self.removed,
            "volumes": self.paths,
            "signed_by": self.signed_by,
        }
        if self.status == "paths":
            out["paths"] = self.carried
        return out


@dataclass(frozen=True, slots=True)
class ExportRequest:
    name: str
    out: Path | None
    since: int | None = None
    full: bool = False
    split: int | None = None
    as_dir: bool = False
    sign: str | None = None
    paths_only: bool = False


async def export_bundle(
    config: Config, store: Store, request: ExportRequest, *, now: datetime | None = None
) -> ExportOutcome:
    copy = config.mirror(request.name)
    if not copy.is_directory:
        raise UsageError(
            f"mirror {copy.name} is at {copy.path}: bundle export reads a directory copy"
        )
    root = copy.directory
    row = await store_mirrors.find(store, copy.name)
    if row is None or not row.version or row.index_checksum is None:
        raise UsageError(f"mirror {copy.name} has never been published: nothing to export")
    if published_checksum(DirView(root)) != row.index_checksum:
        raise CopyError(
            f"{root}: the copy on disk is not its published version {row.version}; "
            f"run 'mirrorsync verify --mirror {copy.name}'"
        )
    outcome = ExportOutcome(copy.name, "exported", to_version=row.version)
    new = await anyio.to_thread.run_sync(states.read_state, root)
    since = 0 if request.full else request.since
    if since is None:
        last = await store_bundles.last_exported(store, row.id)
        since = last or 0
        if last == row.version:
            outcome.status = "unchanged"
            outcome.from_version = row.version
            outcome.message = (
                f"mirror {copy.name}: version {row.version} was exported last; nothing new to "
                "carry (--since VERSION or --full makes a bundle anyway)"
            )
            return outcome
    if since >= row.version:
        raise UsageError(
            f"--since {since}: mirror {copy.name} is at version {row.version}; "
            "a bundle joins an earlier version to it"
        )
    old: states.State = {}
    from_index = None
    if since:
        from_index = await store_bundles.version_checksum(store, row.id, since)
        if from_index is None:
            raise UsageError(f"--since {since}: mirror {copy.name} never published that version")
        recorded = await store_bundles.exported_state(store, row.id, since)
        if recorded is not None:
            old = states.unpack(recorded)
        elif files.size_of(root / f"blobs/sha256/{from_index[:2]}/{from_index}") is not None:
            old = await anyio.to_thread.run_sync(states.read_state, root, from_index)
        else:
            raise UsageError(
                f"--since {since}: version {since} of mirror {copy.name} was never exported "
                "from this site and its index is no longer in the copy; use --full, or --since "
                "a version exported before ('mirrorsync bundle list')"
            )
    carried = states.changed(new, old)
    outcome.from_version = since
    outcome.added = sorted(states.binaries(new) - states.binaries(old))
    outcome.removed = sorted(states.binaries(old) - states.binaries(new))
    outcome.files = len(carried)
    outcome.bytes = sum(size for size, _ in {v[1]: v for v in carried.values()}.values())
    at = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = at.strftime(_TIME_FORMAT)
    if request.paths_only:
        outcome.status = "paths"
        outcome.carried = sorted(carried)
    else:
        assert request.out is not None
        paths = sorted(carried, key=lambda p: publish_order(p, row.index_checksum or ""))
        await _write(
            root, request, from_index, row.index_checksum, paths, carried, new, outcome, at
        )
    await store_bundles.record_export(
        store, row.id, since, row.version, stamp, outcome.files, outcome.bytes, states.pack(new)
    )
    return outcome


def _volumes(
    paths: list[str], carried: states.State, split: int | None, reserve: int
) -> tuple[dict[str, int], int]:
    """Each content's volume: whole members, each volume at most ``split`` bytes."""
    volume_of: dict[str, int] = {}
    if split is None:
        return {carried[p][1]: 0 for p in paths}, 1
    if reserve + len(END) > split:
        raise UsageError(f"--split {split}: the bundle manifest alone is larger than a volume")
    volume, used = 0, reserve
    for p in paths:
        size, digest = carried[p]
        if digest in volume_of:
            continue
        need = member_bytes(size)
        if need + len(END) > split:
            raise UsageError(
                f"--split {split}: {p} takes {need} bytes in a tar, more than a volume holds"
            )
        if used + need + len(END) > split:
            volume, used = volume + 1, 0
        volume_of[digest] = volume
        used += need
    return volume_of, volume + 1


async def _write(
    root: Path,
    request: ExportRequest,
    from_index: str | None,
    to_index: str,
    paths: list[str],
    carried: states.State,
    new: states.State,
    outcome: ExportOutcome,
    at: datetime,
) -> None:
    def manifest_for(volume_of: dict[str, int], volumes: int) -> BundleManifest:
        return BundleManifest(
            copy=outcome.copy,
            from_version=outcome.from_version,
            from_index=from_index,
            to_version=outcome.to_version,
            to_index=to_index,
            created_by=f"mirrorsync {__version__}",
            created_at=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            files=tuple(
                BundleFile(p, carried[p][0], carried[p][1], volume_of[carried[p][1]]) for p in paths
            ),
            added=tuple(outcome.added),
            removed=tuple(outcome.removed),
            volumes=volumes,
            state_files=len(new),
            state_bytes=sum(size for size, _ in new.values()),
        )

    key = await export_public(request.sign) if request.sign else b""
    reserve = 0
    for _ in range(4):  # the manifest (and signature) share the first volume's room
        volume_of, volumes = _volumes(paths, carried, request.split, reserve)
        manifest = manifest_for(volume_of, volumes)
        data = manifest.render()
        signature = b""
        if request.sign:
            signature = await sign_detached(data, request.sign)
            outcome.signed_by = request.sign
        control = sum(member_bytes(len(x)) for x in (data, signature, key) if x)
        if request.split is None or control <= reserve:
            break
        reserve = control + 4 * BLOCK
    else:  # pragma: no cover - the manifest's size settles after one pass
        raise UsageError("--split: the bundle manifest does not fit in a volume")
    assert request.out is not None
    if request.as_dir:
        await anyio.to_thread.run_sync(
            _write_dir, root, request.out, manifest, data, signature, key
        )
        outcome.paths = [str(request.out)]
    else:
        targets = volume_paths(request.out, manifest.volumes)
        await anyio.to_thread.run_sync(
            _write_tar, root, targets, manifest, data, signature, key, int(at.timestamp())
        )
        outcome.paths = [str(p) for p in targets]


def _checked(root: Path, f: BundleFile) -> Iterator[bytes]:
    """The file's bytes, checked against its size and sha256 as they are read."""
    digest = Sha256()  # in a helper thread, while the chunk is written
    n = 0
    for chunk in read_file_chunks(root / f.path, f.size):
        digest.update(chunk)
        n += len(chunk)
        yield chunk
    if n != f.size or digest.hexdigest() != f.sha256:
        raise CopyError(
            f"{root / f.path}: not the file the published index names (size or sha256 "
            "differ); 'mirrorsync verify --mirror' finds what else is damaged"
        )


def _write_tar(
    root: Path,
    targets: list[Path],
    manifest: BundleManifest,
    data: bytes,
    signature: bytes,
    key: bytes,
    mtime: int,
) -> None:
    for target in targets:
        if not target.parent.is_dir():
            raise UsageError(f"{target}: no such directory to write the bundle into")
    writer = VolumeWriter(targets, mtime)
    try:
        for volume in range(manifest.volumes):
            writer.start(volume)
            if volume == 0:
                writer.add(MANIFEST_NAME, len(data), iter([data]))
                if signature:
                    writer.add(SIGNATURE_NAME, len(signature), iter([signature]))
                if key:
                    writer.add(KEY_NAME, len(key), iter([key]))
            for digest in manifest.in_volume(volume):
                f = manifest.members[digest][0]
                writer.add(member_name(digest), f.size, _checked(root, f))
        writer.finish()
    except BaseException:
        writer.abandon()
        raise


def _write_dir(
    root: Path, out: Path, manifest: BundleManifest, data: bytes, signature: bytes, key: bytes
) -> None:
    """A directory bundle: ``files/<sha256>``, then the manifest last (a directory
    without ``bundle.json`` is not a bundle, so an interrupted one is never taken)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: exists and is not an empty directory")
    (out / MEMBER_DIR).mkdir(parents=True, exist_ok=True)
    try:
        for digest, group in manifest.members.items():
            target = out / member_name(digest)
            temp = target.with_name(f".{target.name}.part")
            with open(temp, "wb") as f:
                for chunk in _checked(root, group[0]):
                    f.write(chunk)
            os.replace(temp, target)
        for name, content in ((SIGNATURE_NAME, signature), (KEY_NAME, key), (MANIFEST_NAME, data)):
            if content:
                (out / name).write_bytes(content)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
