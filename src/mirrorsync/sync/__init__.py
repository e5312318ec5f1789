"""Orchestration: for each source and stack, fetch what changed and record it.

Importing the package imports none of its modules: the engine (``index``,
``manifests``, ``crawl``, ``pool``) serves the copies and ``verify`` without the run that
drives the copies and the webhooks (``run``). The names below come from their
modules when first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mirrorsync.sync.outcome import StackOutcome
    from mirrorsync.sync.progress import RunProgress
    from mirrorsync.sync.report import RunReport
    from mirrorsync.sync.run import run_once

__all__ = ["RunProgress", "RunReport", "StackOutcome", "run_once"]

_HOME = {
    "RunProgress": "progress",
    "RunReport": "report",
    "StackOutcome": "outcome",
    "run_once": "run",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"mirrorsync.sync.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
