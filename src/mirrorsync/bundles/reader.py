"""Opening a bundle (a tar, numbered tar volumes, or a directory) and reading its
members as a stream, refusing anything its manifest does not list.

``BUNDLE`` may name a tar file, the first volume of a split bundle (``X.000``) or
their common name (``X``), or a directory written with ``--dir``.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirrorsync.bundles.manifest import (
    KEY_NAME,
    MANIFEST_NAME,
    MAX_KEY_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    MEMBER_DIR,
    SIGNATURE_NAME,
    BundleManifest,
    member_name,
    parse,
)
from mirrorsync.bundles.tarvol import CHUNK, Member, TarReader, volume_paths
from mirrorsync.errors import BundleError, UsageError

_VOLUME = re.compile(r"^(?P<base>.+)\.000$")
_MEMBER = re.compile(rf"^{MEMBER_DIR}/([0-9a-f]{{64}})$")
_CONTROL = {MANIFEST_NAME: MAX_MANIFEST_BYTES, SIGNATURE_NAME: MAX_SIGNATURE_BYTES}
_CONTROL[KEY_NAME] = MAX_KEY_BYTES

#: Called for each member: (digest, where) -> the sink its bytes go to, in order.
Sink = Callable[[bytes], None]


@dataclass
class Opened:
    path: Path  # as given
    directory: bool
    volumes: list[Path]  # the tar volumes (empty for a directory)
    data: bytes  # bundle.json, as read
    signature: bytes | None
    key: bytes | None
    manifest: BundleManifest


def _base(bundle: Path) -> tuple[Path, bool]:
    """The bundle's name without a volume number, and whether it was split."""
    found = _VOLUME.match(bundle.name)
    if found:
        return bundle.with_name(found.group("base")), True
    if not bundle.exists() and bundle.with_name(f"{bundle.name}.000").exists():
        return bundle, True
    return bundle, False


def open_bundle(bundle: Path) -> Opened:
    """Read the bundle's manifest (and signature and key), bounded; BundleError if the
    bundle is not one."""
    if bundle.is_dir():
        data = _read_small(bundle / MANIFEST_NAME, MAX_MANIFEST_BYTES, required=True)
        assert data is not None
        signature = _read_small(bundle / SIGNATURE_NAME, MAX_SIGNATURE_BYTES, required=False)
        key = _read_small(bundle / KEY_NAME, MAX_KEY_BYTES, required=False)
        return Opened(bundle, True, [], data, signature, key, parse(data))
    base, split = _base(bundle)
    first = base.with_name(f"{base.name}.000") if split else base
    if not first.exists():
        raise UsageError(f"{bundle}: no such bundle (a tar, volumes NAME.000..., or a directory)")
    control = _control(first)
    data = control.get(MANIFEST_NAME)
    if data is None:
        raise BundleError(f"{first}: its first member is not {MANIFEST_NAME}; not a bundle")
    manifest = parse(data)
    volumes = volume_paths(base, manifest.volumes)
    if manifest.volumes > 1 and not split:
        raise BundleError(f"{bundle}: the first of {manifest.volumes} volumes, yet not named .000")
    if manifest.volumes == 1 and split:
        volumes = [first]
    for i, volume in enumerate(volumes):
        if not volume.exists():
            raise BundleError(f"{volume}: volume {i + 1} of {manifest.volumes} is missing")
    return Opened(
        bundle,
        False,
        volumes,
        data,
        control.get(SIGNATURE_NAME),
        control.get(KEY_NAME),
        manifest,
    )


def _open(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"{path}: not a regular file")
    return fd


def _read_small(path: Path, limit: int, *, required: bool) -> bytes | None:
    if not os.path.lexists(path):
        if required:
            raise BundleError(f"{path}: missing; not a bundle (or one whose export did not end)")
        return None
    fd = _open(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{path}: larger than {limit} bytes; refused")
    return data


def _control(volume: Path) -> dict[str, bytes]:
    """The control members at the start of the first volume."""
    found: dict[str, bytes] = {}
    with os.fdopen(_open(volume), "rb") as stream:
        reader = TarReader(stream, str(volume))
        while (member := reader.next()) is not None and member.name in _CONTROL:
            if member.name in found or member.size > _CONTROL[member.name]:
                raise BundleError(f"{volume}: member {member.name} repeated or oversize")
            if not found and member.name != MANIFEST_NAME:
                break
            parts: list[bytes] = []
            reader.data(member, parts.append)
            found[member.name] = b"".join(parts)
    return found


def read_members(
    opened: Opened,
    start: Callable[[str, str], Sink],
    end: Callable[[str, str], None],
) -> None:
    """Every content of the bundle, once each, checked against the manifest's names
    and sizes: ``start(digest, where)`` gives the sink for its bytes, ``end(digest,
    where)`` is called after the last. BundleError at the first member the manifest
    does not list, of another size, repeated, or missing at the end."""
    members = opened.manifest.members
    seen: set[str] = set()

    def expect(name: str, size: int, where: str) -> str:
        found = _MEMBER.match(name)
        digest = found.group(1) if found else ""
        if digest not in members:
            raise BundleError(
                f"{where}: member {name[:200]!r} is not in the bundle manifest; refused"
            )
        path = members[digest][0].path
        if digest in seen:
            raise BundleError(f"{where}: {path} ({name}) appears twice; refused")
        expected = members[digest][0].size
        if size != expected:
            what = "larger" if size > expected else "smaller"
            raise BundleError(
                f"{where}: {path} ({name}) is {size} bytes, {what} than the {expected} the "
                "manifest gives; the bundle is damaged or tampered with"
            )
        seen.add(digest)
        return digest

    if opened.directory:
        for digest, group in members.items():
            path = opened.path / member_name(digest)
            where = str(opened.path)
            if not os.path.lexists(path):
                raise BundleError(f"{path}: {group[0].path} is missing; the bundle is incomplete")
            fd = _open(path)
            with os.fdopen(fd, "rb", buffering=0) as f:
                expect(member_name(digest), os.fstat(f.fileno()).st_size, where)
                sink = start(digest, where)
                while chunk := f.read(CHUNK):
                    sink(chunk)
            end(digest, where)
        return
    for index, volume in enumerate(opened.volumes):
        where = str(volume)
        with os.fdopen(_open(volume), "rb") as stream:
            reader = TarReader(stream, where)
            member: Member | None
            while (member := reader.next()) is not None:
                if index == 0 and member.name in _CONTROL:
                    if member.size > _CONTROL[member.name]:  # held in memory: bounded
                        raise BundleError(f"{where}: member {member.name} oversize")
                    parts: list[bytes] = []
                    reader.data(member, parts.append)
                    if member.name == MANIFEST_NAME and b"".join(parts) != opened.data:
                        raise BundleError(f"{where}: {MANIFEST_NAME} changed while being read")
                    continue
                digest = expect(member.name, member.size, where)
                reader.data(member, start(digest, where))
                end(digest, where)
    missing = [members[d][0].path for d in members if d not in seen]
    if missing:
        raise BundleError(
            f"{opened.volumes[-1]}: {missing[0]} (and {len(missing) - 1} more) not in the "
            "bundle; it is truncated or incomplete"
        )
