"""Tar volumes of a bundle, written and read as streams, in bounded memory.

Writing: each member is a 512-byte header (GNU format, so a blob over 8 GiB still
fits) and its bytes copied 1 MiB at a time, padded to 512; every volume ends with
two zero blocks, so each is a whole tar by itself (``tar -tf`` lists it). Volumes
are written under temporary names and renamed into place once all are complete:
an interrupted export leaves no bundle that looks whole.

Reading trusts nothing: a header must be a plain file (a link, a device, a
directory, a long-name or pax extension are refused), its name one the bundle
manifest expects, its size the size the manifest gives (an oversize member is
refused before a byte of it is read); a volume that ends early is refused naming
the member it ended in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mirrorsync.errors import BundleError

BLOCK = 512
CHUNK = 1 << 20
END = b"\0" * (2 * BLOCK)
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_KINDS = {
    tarfile.LNKTYPE: "a hard link",
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.DIRTYPE: "a directory",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.GNUTYPE_LONGNAME: "a long-name extension",
    tarfile.GNUTYPE_LONGLINK: "a long-link extension",
    tarfile.XHDTYPE: "a pax extension",
    tarfile.XGLTYPE: "a pax extension",
}


def member_bytes(size: int) -> int:
    """What a member of ``size`` bytes takes in a tar: header and padded data."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = mtime
    info.type = tarfile.REGTYPE
    buf = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")
    assert len(buf) == BLOCK, name  # names are short: never a long-name extension
    return buf


def volume_paths(out: Path, volumes: int) -> list[Path]:
    """The files of a bundle at ``out``: ``out`` itself, or ``out.000``, ``out.001``..."""
    if volumes == 1:
        return [out]
    return [out.with_name(f"{out.name}.{i:03d}") for i in range(volumes)]


class VolumeWriter:
    """Writes the members of one bundle into its volumes, each under a temporary name."""

    def __init__(self, paths: list[Path], mtime: int) -> None:
        self.paths = paths
        self.temps = [p.with_name(f".{p.name}.part") for p in paths]
        self.mtime = mtime
        self.volume = -1
        self.out: BinaryIO | None = None
        self.written = 0

    def start(self, volume: int) -> None:
        self._close()
        self.volume = volume
        try:
            self.out = open(self.temps[volume], "wb")  # noqa: SIM115 (closed in _close)
        except OSError as exc:
            raise BundleError(f"{self.paths[volume]}: cannot write: {exc.strerror}") from None

    def add(self, name: str, size: int, chunks: Iterator[bytes]) -> None:
        """One member: its header, the chunks (exactly ``size`` bytes) and the padding."""
        assert self.out is not None
        where = self.paths[self.volume]
        try:
            self.out.write(header(name, size, self.mtime))
            n = 0
            for chunk in chunks:
                n += len(chunk)
                self.out.write(chunk)
            if n != size:
                raise BundleError(f"{name}: read {n} bytes, expected {size}")
            self.out.write(b"\0" * (-size % BLOCK))
            self.written += member_bytes(size)
        except OSError as exc:
            raise BundleError(f"{where}: cannot write: {exc.strerror}") from None

    def _close(self) -> None:
        if self.out is None:
            return
        out, self.out = self.out, None
        try:
            out.write(END)
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            raise BundleError(f"{self.paths[self.volume]}: cannot write: {exc.strerror}") from None
        finally:
            out.close()

    def finish(self) -> None:
        """Complete the last volume and rename every volume into place."""
        self._close()
        for temp, path in zip(self.temps, self.paths, strict=True):
            os.replace(temp, path)

    def abandon(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        for temp in self.temps:
            with contextlib.suppress(OSError):
                temp.unlink()


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    size: int


class TarReader:
    """The members of one tar volume, read once from the start, as a stream."""

    def __init__(self, stream: BinaryIO, where: str) -> None:
        self.stream = stream
        self.where = where  # the volume, for error messages
        self.last = "the start"  # the member read last, for error messages

    def next(self) -> Member | None:
        """The next member's header (None: the end of the archive)."""
        buf = self._exactly(BLOCK, f"the header after {self.last}")
        if buf == b"\0" * BLOCK:
            return None
        try:
            info = tarfile.TarInfo.frombuf(buf, "utf-8", "strict")
        except (tarfile.HeaderError, UnicodeDecodeError):
            raise BundleError(
                f"{self.where}: damaged tar header after {self.last}; the bundle is damaged"
            ) from None
        name = info.name[:200]
        if info.size < 0:  # base-256 sizes may be negative: data() would read to the end
            raise BundleError(
                f"{self.where}: member {name!r} has a negative size; the bundle is damaged"
            )
        if info.type not in _FILE_TYPES:
            kind = _KINDS.get(info.type, f"of type {info.type!r}")
            raise BundleError(f"{self.where}: member {name!r} is {kind}; a bundle holds files only")
        self.last = name
        return Member(info.name, info.size)

    def data(self, member: Member, sink: Callable[[bytes], None]) -> None:
        """Pass the member's bytes to ``sink`` in chunks, then skip its padding."""
        left = member.size
        while left:
            chunk = self.stream.read(min(CHUNK, left))
            if not chunk:
                raise BundleError(
                    f"{self.where}: ends inside {member.name} ({member.size - left} of "
                    f"{member.size} bytes); the volume is truncated"
                )
            left -= len(chunk)
            sink(chunk)
        self._exactly(-member.size % BLOCK, f"the padding of {member.name}")

    def _exactly(self, n: int, what: str) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.stream.read(n - len(data))
            if not chunk:
                raise BundleError(f"{self.where}: ends before {what}; the volume is truncated")
            data += chunk
        return data


def read_file_chunks(path: Path, size: int) -> Iterator[bytes]:
    """The bytes of a copy's file (never through a link), 1 MiB at a time."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        left = size
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk


_POOL: ThreadPoolExecutor | None = None


class Sha256:
    """sha256 of a stream, computed chunk by chunk in a helper thread while the caller
    reads and writes the next (hashlib lets go of the GIL on large updates): checking
    every byte costs little more wall time than copying it. Chunks are hashed in order."""

    def __init__(self) -> None:
        global _POOL
        if _POOL is None:
            _POOL = ThreadPoolExecutor(1, thread_name_prefix="mirrorsync-sha256")
        self.pool = _POOL
        self.digest = hashlib.sha256()
        self.pending: Future[None] | None = None

    def update(self, chunk: bytes) -> None:
        if self.pending is not None:
            self.pending.result()
        self.pending = self.pool.submit(self.digest.update, chunk)

    def hexdigest(self) -> str:
        if self.pending is not None:
            self.pending.result()
            self.pending = None
        return self.digest.hexdigest()
