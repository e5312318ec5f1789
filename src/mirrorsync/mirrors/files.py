"""The files of a local copy: where each one lives, and writing them so no reader sees half.

Every file is written under a temporary name in its own directory
(``.<name>.<random>.part``), flushed to disk, then renamed into place; the
directory is flushed after the rename. A name in place therefore always holds
complete, checked content, even across SIGKILL or power loss. Temporary files
left by a killed run are never referenced and are removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from mirrorsync.errors import CopyError

TEMP_SUFFIX = ".part"
LAYOUT = "v3/layout.json"
INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"
KEY_INDEX_MANIFEST = "v3/manifests/key/keys.manifest.json"
#: The parts of the directory a copy owns; anything else in it is left alone.
OWNED = ("blobs", "v3")


def blob_relpath(algorithm: str, checksum: str) -> str:
    return f"blobs/{algorithm}/{checksum[:2]}/{checksum}"


def temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def disk_error(path: Path, exc: OSError) -> CopyError:
    """A one-line error naming the file (disk full, permissions...)."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    return CopyError(f"{path}: cannot write: {reason}")


def make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(path.parent, exc) from None


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot flush a directory; the rename is still atomic
    finally:
        os.close(fd)


def place(temp: Path, final: Path) -> None:
    """Flush ``temp`` and rename it to ``final`` (atomic), then flush the directory."""
    try:
        fsync_file(temp)
        os.replace(temp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        remove_quietly(temp)
        raise disk_error(final, exc) from None


def write_atomic(final: Path, data: bytes) -> None:
    """Replace ``final`` with ``data`` (temporary file, flush, rename, flush directory)."""
    make_parent(final)
    temp = temp_path(final)
    try:
        with temp.open("wb") as out:
            out.write(data)
    except OSError as exc:
        remove_quietly(temp)
        raise disk_error(final, exc) from None
    place(temp, final)


def read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None


def size_of(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file under the parts of ``root`` a copy owns."""
    for part in OWNED:
        top = root / part
        if not top.is_dir():
            continue
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CopyError(f"{directory}: cannot list: {exc.strerror or exc}") from None
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    path = Path(entry.path)
                    yield path.relative_to(root).as_posix(), path


def remove_temporaries(root: Path) -> int:
    """Delete what a killed run left half-written; returns how many."""
    removed = 0
    for _, path in walk(root):
        if path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX):
            remove_quietly(path)
            removed += 1
    return removed
