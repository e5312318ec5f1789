"""The files of a local copy: where each one lives, and writing them so no reader sees half.

Every file is written under a temporary name in its own directory
(``.<name>.<random>.part``), flushed to disk, then renamed into place; the
directory is flushed after the rename. A name in place therefore always holds
complete, checked content, even across SIGKILL or power loss. Temporary files
left by a killed run are never referenced and are removed by the next run.

Nothing here follows a symbolic link: a link anywhere in the parts a copy owns
(``blobs/``, ``v3/``) is refused with one line naming it, before anything is
written or deleted, so a link planted in the copy can neither make it write
outside its directory nor delete files elsewhere as unreferenced. Files are
opened with ``O_NOFOLLOW`` (and temporary files created with ``O_EXCL``) as well.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
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


def link_error(path: Path) -> CopyError:
    """The one line for a symbolic link found where a copy keeps its files."""
    return CopyError(
        f"{path}: a symbolic link inside the copy; mirrorsync never follows links in a "
        "copy, so it writes and deletes nothing: remove the link (the copy's own path "
        "may be a link, nothing under it may)"
    )


def _refuse_link(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISLNK(mode):
        raise link_error(path)


def make_parent(path: Path) -> None:
    """Make ``path``'s directory, refusing a link among the directories of the copy above it."""
    inside: list[Path] = []  # the directories between the copy's own part and the file
    for ancestor in path.parents:
        inside.append(ancestor)
        if ancestor.name in OWNED:  # blobs/ or v3/: above it is the copy's path, not ours
            for directory in inside:
                _refuse_link(directory)
            break
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
        # A new file of our own, never a link or a file planted at its name.
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666
        )
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except OSError as exc:
        remove_quietly(temp)
        raise disk_error(final, exc) from None
    place(temp, final)


def read_if_present(path: Path) -> bytes | None:
    """The file's bytes (None if there is none); a link or a non-regular file is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_error(path) from None
        raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CopyError(f"{path}: not a regular file; a copy holds only files")
            return file.read()
        except OSError as exc:
            raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None


def size_of(path: Path) -> int | None:
    """The size of the file at ``path`` (never of a link's target: a link is refused);
    None if there is no regular file there."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISLNK(found.st_mode):
        raise link_error(path)
    return found.st_size if stat.S_ISREG(found.st_mode) else None


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file under the parts of ``root`` a copy owns.

    CopyError at the first symbolic link: none is ever followed, listed or deleted.
    """
    for part in OWNED:
        top = root / part
        _refuse_link(top)
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
                if entry.is_symlink():
                    raise link_error(Path(entry.path))
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
