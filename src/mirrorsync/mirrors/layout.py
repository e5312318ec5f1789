"""A copy's files as they lie on disk: their names in Spack's v3 layout, and reading
them without ever following a link.

Below the copy machinery (``files``, which writes them; ``check``, ``publish``,
``run``): ``status``'s check of a published copy (``ondisk``) reads an index
manifest and the sizes of two files with this alone, without importing what
writing a copy needs (issue 31, start-up). Paths are a ``Path`` or text.
"""

from __future__ import annotations

import errno
import os
import stat

from mirrorsync.errors import CopyError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from pathlib import Path

LAYOUT = "v3/layout.json"
INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"
KEY_INDEX_MANIFEST = "v3/manifests/key/keys.manifest.json"
#: The parts of the directory a copy owns; anything else in it is left alone.
OWNED = ("blobs", "v3")


def blob_relpath(algorithm: str, checksum: str) -> str:
    return f"blobs/{algorithm}/{checksum[:2]}/{checksum}"


def link_error(path: Path | str) -> CopyError:
    """The one line for a symbolic link found where a copy keeps its files."""
    return CopyError(
        f"{path}: a symbolic link inside the copy; mirrorsync never follows links in a "
        "copy, so it writes and deletes nothing: remove the link (the copy's own path "
        "may be a link, nothing under it may)"
    )


def open_file(path: Path | str) -> int | None:
    """A descriptor of the regular file at ``path``, None if there is none; a link (never
    followed) or anything else (a FIFO never blocks: ``O_NONBLOCK``) is CopyError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_error(path) from None
        raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CopyError(f"{path}: not a regular file; a copy holds only files")
    return fd


def read_if_present(path: Path | str, limit: int | None = None) -> bytes | None:
    """The file's bytes (None if there is none); a link or a non-regular file is refused,
    and so is one larger than ``limit`` bytes (CopyError; no more than that is read)."""
    fd = open_file(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read() if limit is None else file.read(limit + 1)
        except OSError as exc:
            raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if limit is not None and len(data) > limit:
        raise CopyError(f"{path}: larger than {limit} bytes, more than such a file holds")
    return data


def lstat_if_present(path: Path | str) -> os.stat_result | None:
    """The status of what is at ``path`` itself (a link is not followed); None if nothing."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CopyError(f"{path}: cannot read: {exc.strerror or exc}") from None


def file_size(path: Path | str) -> int | None:
    """The size of a regular file; None if absent or not a regular file (a link...)."""
    st = lstat_if_present(path)
    return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None
