"""Local copies of build caches: filtered, verified, incremental, never half-published.

``plan`` chooses what a copy holds, ``download`` brings it in checked,
``publish`` writes the index last and deletes last and late; ``planner`` plans one
copy and ``job`` brings it up to date (``outcome``: what it did), and ``run`` does
all of it for every configured copy.

Importing the package imports none of them: ``status`` reads a copy's files
(``ondisk``) without the fetch, sync and delivery chain that ``run`` needs.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (status: ondisk)
if TYPE_CHECKING:
    from typing import Any

    from mirrorsync.mirrors.run import MirrorOutcome, run_mirrors

__all__ = ["MirrorOutcome", "run_mirrors"]


def __getattr__(name: str) -> Any:
    """``MirrorOutcome`` and ``run_mirrors``, from ``mirrors.run`` when first asked for."""
    if name in __all__:
        from mirrorsync.mirrors import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
