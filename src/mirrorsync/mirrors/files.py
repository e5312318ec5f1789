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

Files and the directories made for them get the copy's :class:`Modes` whatever the
process umask (the shipped unit runs with ``UMask=0077``): a copy exists to be read
by a web server and by users, not only by the account that writes it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mirrorsync.errors import CopyError
from mirrorsync.mirrors.layout import OWNED, link_error, lstat_if_present, open_file

TEMP_SUFFIX = ".part"


@dataclass(frozen=True, slots=True)
class Modes:
    """Permissions of a copy's files; its directories add x wherever a file has r."""

    file: int = 0o644

    @property
    def directory(self) -> int:
        return self.file | ((self.file & 0o444) >> 2)


#: Readable by everyone, written by the owner only (``mode: "0644"``, the default).
DEFAULT_MODES = Modes()


def temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def disk_error(path: Path, exc: OSError) -> CopyError:
    """A one-line error naming the file (disk full, permissions...)."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    return CopyError(f"{path}: cannot write: {reason}")


def _refuse_link(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISLNK(mode):
        raise link_error(path)


def make_dirs(directory: Path, modes: Modes) -> None:
    """Create ``directory`` and its missing parents, each with ``modes.directory``
    whatever the umask (directories already there are left as they are)."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            continue  # made meanwhile (another worker of this run)
        except OSError as exc:
            raise disk_error(d, exc) from None
        try:  # a set-group-ID bit inherited from the parent stays (a shared group)
            os.chmod(d, modes.directory | (os.stat(d).st_mode & stat.S_ISGID))
        except OSError as exc:
            raise disk_error(d, exc) from None


def make_parent(path: Path, modes: Modes) -> None:
    """Make ``path``'s directory (with ``modes``), refusing a link among the
    directories of the copy above it."""
    inside: list[Path] = []  # the directories between the copy's own part and the file
    for ancestor in path.parents:
        inside.append(ancestor)
        if ancestor.name in OWNED:  # blobs/ or v3/: above it is the copy's path, not ours
            for directory in inside:
                _refuse_link(directory)
            break
    make_dirs(path.parent, modes)


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


def place(temp: Path, final: Path, modes: Modes) -> None:
    """Give ``temp`` its mode, flush it and rename it to ``final`` (atomic), then flush
    the directory."""
    try:
        os.chmod(temp, modes.file)
        fsync_file(temp)
        os.replace(temp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        remove_quietly(temp)
        raise disk_error(final, exc) from None


def write_atomic(final: Path, data: bytes, modes: Modes) -> None:
    """Replace ``final`` with ``data`` (temporary file, flush, rename, flush directory)."""
    make_parent(final, modes)
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
    place(temp, final, modes)


def sha256_if_present(path: Path) -> str | None:
    """The file's sha256 in hex, read in chunks; None if absent; a link or non-regular
    file refused, as :func:`read_if_present`."""
    fd = open_file(path)
    if fd is None:
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        try:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        except OSError as exc:
            raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return digest.hexdigest()


def lstat(path: Path) -> os.stat_result:
    """The file's own status (a symbolic link is not followed)."""
    try:
        return os.lstat(path)
    except OSError as exc:
        raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None


def symlink_in(root: Path, rel: str) -> str | None:
    """The first directory of ``rel`` under ``root`` that is a symbolic link, if any."""
    path = root
    for part in rel.split("/")[:-1]:
        path = path / part
        if path.is_symlink():
            return path.relative_to(root).as_posix()
    return None


def size_of(path: Path) -> int | None:
    """The size of the file at ``path`` (never of a link's target: a link is refused);
    None if there is no regular file there."""
    found = lstat_if_present(path)
    if found is None:
        return None
    if stat.S_ISLNK(found.st_mode):
        raise link_error(path)
    return found.st_size if stat.S_ISREG(found.st_mode) else None


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def walk(root: Path, *, links: bool = False) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file under the parts of ``root`` a copy owns.

    CopyError at the first symbolic link: none is ever followed, listed or deleted.
    With ``links`` (``verify --mirror``, which reports them), a link is listed as it
    is instead, never entered; a linked ``blobs/`` or ``v3/`` is passed over.
    """
    for part in OWNED:
        top = root / part
        if links and top.is_symlink():
            continue
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
                if entry.is_symlink() and not links:
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
