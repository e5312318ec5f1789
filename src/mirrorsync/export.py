"""``export pages``: cache.spack.io package pages from the latest synced state of a release.

One page per package, ``<out>/<release>/<package>/specs.md``, in the generator's
format (FORMATS.md section 5), with tarball sizes where the crawler recorded
them. Packages are read and written one at a time, so memory is bounded by the
largest package, not the release.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import anyio

from mirrorsync.errors import UsageError
from mirrorsync.formats.pages import Page, PageSpec, render_page, summarise
from mirrorsync.store import Store
from mirrorsync.store.manifests import package_rows, release_packages, release_view

PAGE_NAME = "specs.md"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]*$")


async def export_pages(
    store: Store,
    *,
    release: str,
    out: Path,
    packages: Sequence[str] = (),
    source: str | None = None,
) -> list[Path]:
    """Write the pages of ``packages`` (default: every package) of ``release``; return them."""
    view = await release_view(store, release, source)
    known = await release_packages(store, view)
    if packages:
        unknown = sorted(set(packages) - set(known))
        if unknown:
            raise UsageError(f"release {release} has no package {', '.join(unknown)}")
        names = sorted(set(packages))
    else:
        names = known
    for name in (release, *names):
        if not _SAFE_NAME.match(name):
            raise UsageError(f"{name!r} cannot be used as a directory name for a page")
    written = []
    for name in names:
        rows = await package_rows(store, view, name)
        specs = tuple(
            PageSpec(
                hash=r.spec.hash,
                version=r.spec.version,
                compiler=r.spec.compiler or "none",
                os=r.spec.os,
                platform=r.spec.platform,
                target=r.spec.target,
                variants=r.spec.variants,
                stacks=r.stacks,
                size=r.size,
                tarball=None,
            )
            for r in rows
        )
        data = render_page(Page(name, release, summarise(specs), specs))
        path = out / release / name / PAGE_NAME
        await anyio.to_thread.run_sync(_write, path, data)
        written.append(path)
    return written


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically, so a reader never sees half a page.

    The temporary file has a name of its own each time and is created new
    (``O_EXCL | O_NOFOLLOW``): a file or link planted at a guessable name is
    never written through.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(tmp, flags, 0o666), "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
