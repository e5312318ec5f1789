"""Pure parsers: bytes in, typed records out. No I/O happens in this package.

Every parser raises :class:`mirrorsync.errors.FormatError` and nothing else on
bad input, so callers can name the offending URL and refuse the document. The
rule holds in one place: each public parser is declared with
``formats._common.parser``, which lists it in ``PARSERS`` (the property tests
fuzz every entry) and turns any other exception into a FormatError.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping

from mirrorsync.formats._common import PARSERS


def all_parsers() -> Mapping[str, Callable[[bytes, str | None], object]]:
    """Every parser of this package by document kind (importing each module registers its own)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return PARSERS
