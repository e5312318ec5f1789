"""Orchestration: for each source and stack, fetch what changed and record it."""

from mirrorsync.sync.outcome import RunReport, StackOutcome
from mirrorsync.sync.progress import RunProgress
from mirrorsync.sync.run import run_once

__all__ = ["RunProgress", "RunReport", "StackOutcome", "run_once"]
