"""Words every layer and the command line share, importable at no cost: the event
types and the ``did you mean`` guess. ``mirrorsync --help`` needs them, and so
must not pay for the configuration's parser (yaml, msgspec) to get them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

EventType = Literal[
    "spec.added",
    "spec.removed",
    "stack.added",
    "stack.removed",
    "release.added",
    "release.removed",
    "spec.manifest_missing",
    "mirror.updated",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """``; did you mean 'X'?`` for the closest known word, else nothing."""
    import difflib  # only a mistake pays for it

    close = difflib.get_close_matches(word, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
