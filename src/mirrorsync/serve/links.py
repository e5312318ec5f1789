"""Every URL the web view names, built in one place: each name a path segment of its
own, percent-encoded whole (a ``/`` or ``?`` in an upstream name stays in its segment)."""

from __future__ import annotations

from urllib.parse import quote, urlencode


def seg(value: object) -> str:
    """One path segment: every character but the unreserved ones percent-encoded."""
    return quote(str(value), safe="")


def stack(source: str, release: str, name: str) -> str:
    return f"/stacks/{seg(source)}/{seg(release)}/{seg(name)}"


def diff(source: str, release: str, name: str, a: int | str, b: int | str) -> str:
    return f"{stack(source, release, name)}/diff?{urlencode({'from': a, 'to': b})}"


def package(name: str) -> str:
    return f"/packages/{seg(name)}"


def event(event_id: int) -> str:
    return f"/events/{event_id}"


def events(**filters: object) -> str:
    query = urlencode([(k, v) for k, v in filters.items() if v not in (None, "")])
    return "/events" + (f"?{query}" if query else "")


#: Feeds: ``/feeds/<scope>.<atom|json>``; ``scope`` one of these kinds plus its names.
def feed(kind: str, *names: str, fmt: str) -> str:
    if kind == "all":
        return f"/feeds/all.{fmt}"
    *head, last = [seg(n) for n in names]
    return "/".join(["/feeds", kind, *head, f"{last}.{fmt}"])


def feeds(kind: str, *names: str) -> tuple[str, str]:
    """(Atom, JSON Feed) of one scope."""
    return feed(kind, *names, fmt="atom"), feed(kind, *names, fmt="json")
