"""``export pages``: documents written from the synced state."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from mirrorsync.cli.common import open_store
from mirrorsync.cli.render import (
    plural,
    print_json,
    say,
    verbatim,
)
from mirrorsync.config import load_config
from mirrorsync.errors import EXIT_OK


async def export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    out = Path(args.out)
    async with await open_store(config) as store:
        from mirrorsync.export import export_pages
        from mirrorsync.store.manifests import release_packages, release_view

        written = await export_pages(
            store, release=args.release, out=out, packages=args.packages, source=args.source
        )
        removed: list[Path] = []
        if args.clean:
            view = await release_view(store, args.release, args.source)
            removed = _clean_pages(out / args.release, set(await release_packages(store, view)))
    if args.json:
        print_json(
            {
                "release": args.release,
                "out": str(out / args.release),
                "page_count": len(written),
                "pages": [str(path) for path in written],
                "removed": [str(path) for path in removed],
            }
        )
    else:
        say(f"wrote {plural(len(written), 'page')} under {verbatim(out / args.release)}")
        if args.clean:
            say(
                f"removed {plural(len(removed), 'page')} of packages no longer in "
                f"{verbatim(args.release)}"
            )
    return EXIT_OK


def _clean_pages(release_dir: Path, packages: set[str]) -> list[Path]:
    """Remove ``<package>/specs.md`` of packages not in ``packages``; keep anything else.

    A package directory is removed only when the page was all it held.
    """
    from mirrorsync.export import PAGE_NAME

    removed = []
    for page in sorted(release_dir.glob(f"*/{PAGE_NAME}")):
        if page.parent.name in packages:
            continue
        page.unlink()
        removed.append(page)
        with contextlib.suppress(OSError):  # not empty: someone else's files stay
            page.parent.rmdir()
    return removed
