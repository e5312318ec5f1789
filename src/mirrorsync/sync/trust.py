"""The warning a source without ``trusted_keys`` gets once per run (``once`` and
``verify`` alike): its signatures prove nothing against whoever can change the mirror."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mirrorsync.config import PagesSource, Source
from mirrorsync.units import Verbatim

log = logging.getLogger("mirrorsync.sync")


def log_key_trust(sources: Sequence[Source]) -> None:
    """Once per run: a source checking signatures without ``trusted_keys`` trusts
    whatever keys its mirror serves, which proves nothing against whoever can change it."""
    for source in sources:
        if isinstance(source, PagesSource) or not source.verify_signatures:
            continue
        if source.trusted_keys is None:
            log.warning(
                "source %s: signatures are checked against the keys the mirror itself "
                "publishes (no trusted_keys), so they prove nothing against whoever can "
                "change the mirror",
                Verbatim(source.name),
            )
