"""Output for people and for programs, in one vocabulary.

People get plain aligned tables on stdout, written row by row as they are read:
a table of a million events costs the memory of one row. Sizes, counts,
durations and times have one human form each (``human_size``, ``plural``,
``human_duration``, ``human_time``). Programs get JSON (``--json``): one
document, or one object per line for streams; times there are the stored
RFC 3339 UTC values, at full precision.

Every human line passes one gate, :func:`mirrorsync.units.humane`: :func:`say` for
lines, :class:`TableWriter` for titles and cells. A command module prints nothing
itself (``tests/test_cli_render.py`` checks that no ``cli/cmd_*`` module calls
``print`` or writes to ``sys.stdout``), so a raw timestamp or a ``0.00s`` cannot
reach a person whatever a command formats by hand. Names are not figures: whatever
upstream or the user named (a stack, release, package, version, hash, path, mirror,
webhook) goes into a line or a cell as :func:`verbatim` (``verbatim(row.stack)``) and
comes out as it was written, however much it looks like a time or a count
(``tests/test_verbatim_names.py``).

Scripts that want the tables get them as lines (``--no-headers``: no title, no
header, no rule; one line per row) or tab-separated (``--format tsv``: a header
line, then one line per row, a tab between cells). The setting is process-wide
(:func:`set_table_style`, from the command line), so every table obeys it.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime

from mirrorsync.choices import TABLE_FORMATS as TABLE_FORMATS
from mirrorsync.records import record

# The one human form of sizes, counts and durations, shared with the log lines.
from mirrorsync.text import escape, unescaped
from mirrorsync.units import Verbatim, humane
from mirrorsync.units import human_duration as human_duration
from mirrorsync.units import human_size as human_size
from mirrorsync.units import human_time as human_time
from mirrorsync.units import parse_time as parse_time
from mirrorsync.units import plural as plural
from mirrorsync.units import verbatim as verbatim

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:  # rich costs ~0.1 s to import: only the progress displays pay it
    from typing import Any, TextIO

    from rich.console import Console

    from mirrorsync.delivery import WebhookResult

_GAP = "  "


def console(stderr: bool = False) -> Console:
    """A rich console, for the live displays on stderr (and the demo)."""
    from rich.console import Console

    # rich writes its own escape sequences: it gets the stream under the escaping one.
    stream = unescaped(sys.stderr if stderr else sys.stdout)
    # Piped output should not be cut at 80 columns.
    width = None if stream.isatty() else 200
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def say(*parts: object, stderr: bool = False) -> None:
    """A line for people (``print``'s replacement), through the one gate of human forms."""
    text = " ".join(str(p) for p in parts)
    (sys.stderr if stderr else sys.stdout).write(humane(text) + "\n")


def below_table(lines: list[str]) -> None:
    """Long messages (errors naming URLs) after a table, a blank line between."""
    if lines:
        say()
        say("\n".join(lines))


# -- human units (sizes, counts, durations: mirrorsync.units) -------------------


def ago(stored: str | None, now: datetime | None = None) -> str:
    """``5m ago``, ``3d04h ago``, or the time itself when it is in the future."""
    if not stored:
        return ""
    then = parse_time(stored)
    seconds = ((now or datetime.now(UTC)) - then).total_seconds()
    if seconds < 0:
        return human_time(stored)
    if seconds < 60:
        return "just now"
    return f"{human_duration(seconds)} ago"


# -- tables ----------------------------------------------------------------------


#: Table formats the command line offers (``--format``).


@record(frozen=True, slots=True)
class TableStyle:
    """How every table of this process is printed (``--format``, ``--no-headers``)."""

    format: str = "table"  # "table": aligned for people; "tsv": tab-separated for programs
    headers: bool = True  # False: no title, no header line, no rule; rows only


_style = TableStyle()


def set_table_style(style: TableStyle) -> None:
    """Set how every table is printed from now on (``cli.main``, once per process)."""
    global _style
    _style = style


def tsv_cell(value: str) -> str:
    """A cell of a TSV line: a backslash doubled, then tab, newline and every control
    escaped (``\\x09``, ``\\x0a``): one value cannot split a cell or a row, and the
    escaping can be undone unambiguously."""
    return escape(value.replace("\\", "\\\\"))


@record(frozen=True, slots=True)
class Column:
    name: str
    width: int = 0  # at least this wide (a streamed table cannot look ahead)
    right: bool = False


class TableWriter:
    """A table printed row by row: a title, a header, a rule, then each row at once.

    Columns are as wide as their ``width`` (or header); a longer value widens its
    own row only, so only the last column should hold values of unbounded length.
    The process's :class:`TableStyle` decides what is printed: with ``headers``
    off only the rows; as ``tsv`` a header line and the rows, cells joined by tabs.
    """

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        title: str | None = None,
        out: TextIO | None = None,
        style: TableStyle | None = None,
    ) -> None:
        self.columns = columns
        self.widths = [max(c.width, len(c.name)) for c in columns]
        self.out = out or sys.stdout
        self.style = style or _style
        self.tsv = self.style.format == "tsv"
        if not self.style.headers:
            return
        if self.tsv:
            self.out.write("\t".join(tsv_cell(c.name) for c in columns) + "\n")
            return
        if title:
            self.out.write(humane(title) + "\n")
        self._write([c.name for c in columns])
        self._write(["-" * w for w in self.widths])

    def _write(self, cells: Sequence[str]) -> None:
        if self.tsv:
            self.out.write("\t".join(cells) + "\n")
            return
        parts = []
        last = len(cells) - 1
        for i, (cell, column, width) in enumerate(
            zip(cells, self.columns, self.widths, strict=True)
        ):
            if column.right:
                parts.append(cell.rjust(width))
            else:
                parts.append(cell if i == last else cell.ljust(width))
        self.out.write(_GAP.join(parts).rstrip() + "\n")

    def row(self, values: Sequence[object]) -> None:
        cell = tsv_cell if self.tsv else escape
        self._write(["" if v is None else cell(_human_cell(v)) for v in values])


def print_table(
    columns: Sequence[str | Column],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    stderr: bool = False,
) -> None:
    """A small table whose rows are all known: columns as wide as their widest value."""
    cols = [c if isinstance(c, Column) else Column(c, right=_numeric(c)) for c in columns]
    cell = tsv_cell if _style.format == "tsv" else escape
    cells = [["" if v is None else cell(_human_cell(v)) for v in row] for row in rows]
    cols = [
        Column(c.name, max([c.width, *(len(r[i]) for r in cells)]), c.right)
        for i, c in enumerate(cols)
    ]
    writer = TableWriter(cols, title=title, out=sys.stderr if stderr else sys.stdout)
    for row in cells:
        writer._write(row)  # cells already escaped, once


def _human_cell(value: object) -> str:
    """A cell's text through the gate of human forms; a float has no human form of its
    own (a duration? a size?): the command says which, or the table refuses it."""
    if isinstance(value, float):
        raise TypeError(f"a table cell needs a human form, not the float {value!r}")
    if isinstance(value, Verbatim):  # a name, as written
        return str(value)
    return humane(str(value))


def print_webhook_results(results: list[WebhookResult], *, stderr: bool = False) -> None:
    """One row per webhook a command delivered to (``once``, ``webhooks retry``)."""
    print_table(
        ["webhook", "delivered", "requests", "pending", "dead", "next attempt", "error"],
        [
            (
                verbatim(r.name),
                r.delivered_events,
                r.requests,
                r.pending_events,
                r.dead_events,
                human_time(r.next_attempt_at) if r.pending_events else "",
                "disabled (see below)" if r.disabled else r.error or "",  # said once, below
            )
            for r in results
        ],
        stderr=stderr,
    )


def _numeric(name: str) -> bool:
    return name.startswith(("+", "-")) or name in {"version", "specs", "id", "events"}


# -- JSON ------------------------------------------------------------------------


# json is imported by each printer of it: status's table needs none of it (start-up).


def print_json(value: Any) -> None:
    import json

    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def print_raw(line: str) -> None:
    """A line for scripts, exactly as given (``bundle export --paths-only``, a
    bundle's file list): machine output, like JSON, does not pass the human gate."""
    sys.stdout.write(line + "\n")


def print_json_line(value: Any) -> None:
    import json

    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")


async def print_json_array(
    items: AsyncIterator[Any], *, head: dict[str, Any] | None = None, key: str = ""
) -> None:
    """One JSON document written as its items are read: an array, or ``head`` plus
    ``key`` holding the array. One item per line, so memory does not grow with it."""
    import json

    out = sys.stdout
    if head is not None:
        opening = json.dumps(head, separators=(", ", ": "))[:-1]
        out.write(f"{opening}{', ' if head else ''}{json.dumps(key)}: [")
    else:
        out.write("[")
    first = True
    async for item in items:
        out.write(("\n" if first else ",\n") + json.dumps(item, separators=(",", ":")))
        first = False
    out.write("\n]}\n" if head is not None else "\n]\n")
