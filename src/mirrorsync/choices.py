"""The fixed choices of the options every command takes, importable at no cost:
``mirrorsync --help`` lists them and must not pay for logging, tables or even
``typing`` to get them (issue 31, start-up)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Literal

    LogFormat = Literal["plain", "json"]

#: ``--log-format``: one line per event, or one JSON object per line (mirrorsync.logs).
LOG_FORMATS: tuple[LogFormat, ...] = ("plain", "json")
#: ``--format``: tables as aligned columns or tab-separated values (mirrorsync.cli.render).
TABLE_FORMATS = ("table", "tsv")
