"""Where a copy is written: the one interface every kind of copy target implements.

A copy run (``mirrors/run.py``) and its helpers (``download.py``, ``publish.py``,
``check.py``) never touch a file system or an object store directly: they write
through a :class:`CopyTarget`, chosen from ``mirrors[].path``:

- ``/dir``, ``~/dir`` or ``file:///dir``: :class:`DirTarget` (``mirrors/files.py``);
- ``s3://bucket/prefix``: ``mirrors/s3target.py``;
- ``oci://registry/repo``, ``oci+http://``: the OCI target (``mirrors/ocitarget.py``).

What every target guarantees, and what the copy run relies on:

1. ``put_blob`` is called only with a staged file whose length and sha256 were
   checked; a blob gets its name (content address) only complete.
2. ``put_manifest`` replaces one small file (spec manifest, layout, keys) as a
   whole: a reader sees the old bytes or the new, never a part.
3. ``publish_index`` is called LAST, once every file the new index references was
   put: it writes the index blob, then the index manifest naming it.
4. ``delete`` is called only after a publish, only for what the published index
   does not reference (and ``delete_after`` has passed).
5. ``exists`` is the incremental check: True only if the object at ``rel`` has
   ``size`` and (unless ``trusted``: the published state references it, so this
   copy checked it when it wrote it) the sha256 ``digest``.

:class:`TargetView` is the same copy seen from a worker thread (blocking calls):
reading back the published state (``publish.referenced``) and ``verify --mirror``
(``check.check_copy``) run there.
"""

from __future__ import annotations

import importlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from mirrorsync.errors import CopyError
from mirrorsync.mirrors import files, layout
from mirrorsync.mirrors.layout import INDEX_MANIFEST, blob_relpath

if TYPE_CHECKING:
    from mirrorsync.config import MirrorCopy
    from mirrorsync.fetch import HttpClient, Tally


class TargetView(Protocol):
    """A copy target read from a worker thread (``anyio.to_thread``): blocking calls."""

    #: The directory of a directory target; None for an object store (no modes, no links).
    local: Path | None

    def where(self, rel: str) -> str:
        """``rel`` as messages name it: a path, or the object's URL (credentials masked)."""
        ...

    def read(self, rel: str) -> bytes | None:
        """The object's bytes (None if absent); CopyError if it cannot be read."""
        ...

    def size(self, rel: str) -> int | None:
        """The object's size (None if absent, or not a regular file)."""
        ...

    def sha256(self, rel: str) -> str | None:
        """The sha256 of the object's bytes, read in full (None if absent)."""
        ...

    def listing(self, *, links: bool = False) -> dict[str, os.stat_result]:
        """Every object under the parts a copy owns (``blobs/``, ``v3/``), temporaries
        left out; an object store's as regular files of its size. ``links``: a
        directory's symbolic links are listed (``verify --mirror``), not refused."""
        ...


class CopyTarget(Protocol):
    """Where one copy is written (see the module's guarantees)."""

    #: The copy's location as messages name it (credentials masked).
    display: str

    def view(self) -> TargetView:
        """The target as seen from a worker thread."""
        ...

    async def prepare(self) -> None:
        """Before a (non dry) run: make the directory, remove what a killed run left."""
        ...

    async def read(self, rel: str) -> bytes | None:
        """A small object's bytes (manifest, layout, key); None if absent."""
        ...

    async def exists(self, rel: str, size: int, digest: str, *, trusted: bool) -> bool:
        """Whether ``rel`` already holds ``size`` bytes with sha256 ``digest``."""
        ...

    async def staging(self, rel: str) -> Path:
        """A new local file to download the blob ``rel`` into before ``put_blob``."""
        ...

    async def put_blob(self, rel: str, staged: Path, size: int, digest: str) -> None:
        """Give the checked ``staged`` file its name ``rel``; ``staged`` is gone after."""
        ...

    def discard(self, staged: Path) -> None:
        """Remove a staged file whose download failed."""
        ...

    async def put_manifest(self, rel: str, data: bytes) -> None:
        """Replace the small object ``rel`` with ``data`` as a whole."""
        ...

    async def publish_index(self, blob_rel: str, data: bytes, manifest: bytes) -> None:
        """LAST: the index blob (if not there yet), then the index manifest."""
        ...

    async def inventory(self) -> dict[str, int]:
        """Every object under the copy's own parts with its size (no temporaries)."""
        ...

    async def delete(self, rels: list[str]) -> int:
        """Delete objects of the copy (never outside it); returns how many were deleted."""
        ...

    def failure(self, exc: OSError) -> CopyError:
        """The one-line error for an OSError met while writing the copy."""
        ...

    async def aclose(self) -> None: ...


def is_url(path: str) -> bool:
    """Whether ``mirrors[].path`` names a target by URL (rather than a directory)."""
    return "://" in path


def target_scheme(path: str) -> str:
    """``dir``, ``s3``, ``oci`` or ``oci+http``: the kind of target ``mirrors[].path`` names."""
    if not is_url(path) or path.startswith("file://"):
        return "dir"
    return path.split("://", 1)[0].lower()


def open_target(copy: MirrorCopy, client: HttpClient, workdir: Path, tally: Tally) -> CopyTarget:
    """The target ``copy.path`` names; requests go through ``client`` (the one fetch
    client: throttle, retries, deadlines, masking), counted in ``tally``."""
    scheme = target_scheme(copy.path)
    if scheme == "dir":
        return DirTarget(copy.directory, files.Modes(copy.file_mode))
    # Each kind in a module of its own, imported only when a copy uses it.
    module = {"s3": "s3target", "oci": "ocitarget", "oci+http": "ocitarget"}.get(scheme)
    if module is not None:
        try:
            opener: Callable[..., CopyTarget] = importlib.import_module(
                f"mirrorsync.mirrors.{module}"
            ).open_target
        except (ImportError, AttributeError):
            raise CopyError(f"{copy.path}: {scheme}:// copy targets are not available") from None
        return opener(copy, client, workdir, tally)
    raise CopyError(f"{copy.path}: unknown kind of copy target {scheme!r}")


class DirView:
    """A directory copy read from a worker thread."""

    def __init__(self, root: Path) -> None:
        self.local: Path | None = root
        self.root = root

    def where(self, rel: str) -> str:
        return str(self.root / rel)

    def read(self, rel: str) -> bytes | None:
        return layout.read_if_present(self.root / rel)

    def size(self, rel: str) -> int | None:
        return files.size_of(self.root / rel)

    def sha256(self, rel: str) -> str | None:
        return files.sha256_if_present(self.root / rel)

    def listing(self, *, links: bool = False) -> dict[str, os.stat_result]:
        return {
            rel: files.lstat(path)
            for rel, path in files.walk(self.root, links=links)
            if not path.name.endswith(files.TEMP_SUFFIX)  # a killed run's: the next removes it
        }


class DirTarget:
    """A local directory (``mirrors/files.py``): temporary name, flush, rename."""

    def __init__(self, root: Path, modes: files.Modes) -> None:
        self.root = root
        self.modes = modes
        self.display = str(root)

    def view(self) -> TargetView:
        return DirView(self.root)

    async def prepare(self) -> None:
        files.make_dirs(self.root, self.modes)
        files.remove_temporaries(self.root)

    async def read(self, rel: str) -> bytes | None:
        return layout.read_if_present(self.root / rel)

    async def exists(self, rel: str, size: int, digest: str, *, trusted: bool) -> bool:
        final = self.root / rel
        if files.size_of(final) != size:
            return False
        if trusted:
            return True
        try:  # a file this copy did not check itself is hashed (a link is never read)
            return await anyio.to_thread.run_sync(files.sha256_if_present, final) == digest
        except CopyError:
            return False

    async def staging(self, rel: str) -> Path:
        final = self.root / rel
        files.make_parent(final, self.modes)
        return files.temp_path(final)

    async def put_blob(self, rel: str, staged: Path, size: int, digest: str) -> None:
        await anyio.to_thread.run_sync(files.place, staged, self.root / rel, self.modes)

    def discard(self, staged: Path) -> None:
        files.remove_quietly(staged)

    async def put_manifest(self, rel: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(files.write_atomic, self.root / rel, data, self.modes)

    async def publish_index(self, blob_rel: str, data: bytes, manifest: bytes) -> None:
        await anyio.to_thread.run_sync(self._publish, blob_rel, data, manifest)

    def _publish(self, blob_rel: str, data: bytes, manifest: bytes) -> None:
        blob = self.root / blob_rel
        if files.size_of(blob) != len(data):
            files.write_atomic(blob, data, self.modes)
        files.write_atomic(self.root / INDEX_MANIFEST, manifest, self.modes)

    async def inventory(self) -> dict[str, int]:
        return await anyio.to_thread.run_sync(self._inventory)

    def _inventory(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rel, path in files.walk(self.root):
            if path.name.endswith(files.TEMP_SUFFIX):
                continue
            size = files.size_of(path)
            if size is not None:
                out[rel] = size
        return out

    async def delete(self, rels: list[str]) -> int:
        return await anyio.to_thread.run_sync(self._delete, rels)

    def _delete(self, rels: list[str]) -> int:
        count = 0
        for rel in rels:
            path = self.root / rel
            try:
                path.unlink()
                count += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CopyError(f"{path}: cannot delete: {exc.strerror or exc}") from None
            parent = path.parent
            while parent != self.root and parent.name not in layout.OWNED:
                try:
                    parent.rmdir()  # only when empty
                except OSError:
                    break
                parent = parent.parent
        return count

    def failure(self, exc: OSError) -> CopyError:
        return files.disk_error(Path(exc.filename or self.root), exc)

    async def aclose(self) -> None:
        return None


def index_blob_size(view: TargetView, checksum: str) -> int | None:
    return view.size(blob_relpath("sha256", checksum))


def regular_stat(size: int) -> os.stat_result:
    """An object store's object as a directory listing would show a regular file."""
    return os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, size, 0, 0, 0))
