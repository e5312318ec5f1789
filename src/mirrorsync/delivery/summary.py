"""A short human summary of a batch of events, for the chat and notification formats.

Events are grouped by release and stack, in the order they first appear; each
group says what changed (``develop/e4s: +20 -3``), names its first few added and
removed specs ("first 5 listed") and links to a page when the webhook has a
``link`` template. Names come from upstream and are untrusted: unprintable
characters (controls, bidi, separators, zero-width) are replaced, each name is bounded, and every
renderer (``formats``) escapes them for its markup through ``Markup``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mirrorsync.store.eventlog import Event

#: Names of added (and of removed) specs listed per stack.
SAMPLE = 5
#: Stacks listed per message; the rest are counted.
MAX_GROUPS = 10
#: Characters of one untrusted name shown.
MAX_NAME = 80

_NOTES = {
    "release.added": "release added",
    "release.removed": "release removed",
    "stack.added": "stack added",
    "stack.removed": "stack removed",
}


def clean(text: str, limit: int = MAX_NAME) -> str:
    """An untrusted name made one bounded line: every character Python does not call
    printable becomes ``?``: controls, bidi marks and overrides (they would reorder
    the text around a name), line and paragraph separators (U+2028 starts a new
    line in many clients), zero-width characters, the byte-order mark."""
    out = text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def bound(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Group:
    """What one batch did to one stack (or to a release, for release events)."""

    release: str
    stack: str | None
    added: int = 0
    removed: int = 0
    missing: int = 0  # spec.manifest_missing
    added_names: list[str] = field(default_factory=list)
    removed_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # "stack added", "copy x published ..."
    link: str | None = None

    @property
    def where(self) -> str:
        return f"{self.release}/{self.stack}" if self.stack is not None else self.release

    @property
    def counts(self) -> str:
        return f"+{self.added} -{self.removed}"


@dataclass
class Summary:
    """A batch, summarised: a title and the groups to list."""

    events: int
    groups: list[Group]
    more_groups: int = 0  # groups left out (MAX_GROUPS)
    ping: str | None = None  # the webhook's name, for a test message

    @property
    def single(self) -> Group | None:
        return self.groups[0] if len(self.groups) == 1 and not self.more_groups else None

    @property
    def link(self) -> str | None:
        """The first group's link: what a notification's click opens."""
        return next((g.link for g in self.groups if g.link), None)


def _spec_name(event: Event) -> str:
    name = event.name or (event.hash or "?")[:7]
    return clean(f"{name}@{event.version}" if event.version else name)


def link_for(template: str | None, release: str, stack: str | None) -> str | None:
    """The template with its placeholders filled, each value percent-encoded whole;
    None without a template, or for a release's group when it names ``{stack}``."""
    if template is None or (stack is None and "{stack}" in template):
        return None
    values = {"release": release, "stack": stack or ""}
    return template.replace("{release}", urllib.parse.quote(values["release"], safe="")).replace(
        "{stack}", urllib.parse.quote(values["stack"], safe="")
    )


def summarize(events: Sequence[Event], link: str | None = None) -> Summary:
    groups: dict[tuple[str, str | None], Group] = {}
    for event in events:
        stack = event.stack if not event.type.startswith("release.") else None
        group = groups.get((event.release, stack))
        if group is None:
            group = Group(clean(event.release), clean(stack) if stack is not None else None)
            group.link = link_for(link, event.release, stack)
            groups[(event.release, stack)] = group
        if event.type == "spec.added":
            group.added += 1
            if len(group.added_names) < SAMPLE:
                group.added_names.append(_spec_name(event))
        elif event.type == "spec.removed":
            group.removed += 1
            if len(group.removed_names) < SAMPLE:
                group.removed_names.append(_spec_name(event))
        elif event.type == "spec.manifest_missing":
            group.missing += 1
        elif event.type == "mirror.updated":
            group.notes.append(
                f"copy {clean(event.mirror or '?')} published {event.binaries or 0} binaries "
                f"(+{event.added or 0} -{event.removed or 0})"
            )
        elif event.type in _NOTES:
            group.notes.append(_NOTES[event.type])
    listed = list(groups.values())
    return Summary(len(events), listed[:MAX_GROUPS], max(0, len(listed) - MAX_GROUPS))


def ping_summary(webhook: str) -> Summary:
    return Summary(0, [], ping=webhook)


@dataclass(frozen=True, slots=True)
class Markup:
    """How a format writes text: ``escape`` for untrusted text, ``bold`` around a
    (escaped) phrase, ``link(url, escaped text)``."""

    escape: Callable[[str], str]
    bold: Callable[[str], str]
    link: Callable[[str, str], str]


PLAIN = Markup(lambda s: s, lambda s: s, lambda url, text: f"{text}: {url}")


def title(summary: Summary, m: Markup) -> str:
    if summary.ping is not None:
        return f"mirrorsync: test message from webhook {m.escape(clean(summary.ping))}"
    single = summary.single
    if single is not None:
        return f"mirrorsync: {m.escape(single.where)}: {_headline(single, m)}"
    stacks = len(summary.groups) + summary.more_groups
    return f"mirrorsync: {summary.events} changes in {stacks} stacks and releases"


def _headline(group: Group, m: Markup) -> str:
    return ", ".join(_facts(group, m, 1))


def _facts(group: Group, m: Markup, notes: int) -> list[str]:
    """``+20 -3``, up to ``notes`` notes (and how many more), manifests missing."""
    facts = []
    if group.added or group.removed or not (group.notes or group.missing):
        facts.append(group.counts)
    facts += [m.escape(note) for note in group.notes[:notes]]
    if len(group.notes) > notes:
        facts.append(f"{len(group.notes) - notes} more")
    if group.missing:
        facts.append(f"{group.missing} manifests missing")
    return facts


def group_line(group: Group, m: Markup) -> str:
    """``develop/e4s: +20 -3, stack added; added: a@1, b@2 (first 5 listed); link``."""
    line = m.bold(m.escape(group.where)) + ": " + ", ".join(_facts(group, m, 3))
    for label, names, count in (
        ("added", group.added_names, group.added),
        ("removed", group.removed_names, group.removed),
    ):
        if names:
            listed = ", ".join(m.escape(n) for n in names)
            more = f" (first {len(names)} listed)" if count > len(names) else ""
            line += f"; {label}: {listed}{more}"
    if group.link:
        line += "; " + m.link(group.link, "link")
    return line


def lines(summary: Summary, m: Markup) -> list[str]:
    """One line per listed group, and one counting those left out."""
    out = [group_line(g, m) for g in summary.groups]
    if summary.more_groups:
        out.append(f"and {summary.more_groups} more stacks or releases")
    return out


def plain_text(summary: Summary) -> str:
    """The title and lines as plain text (ntfy, Matrix ``body``, CloudEvents)."""
    return "\n".join([title(summary, PLAIN), *("- " + line for line in lines(summary, PLAIN))])
