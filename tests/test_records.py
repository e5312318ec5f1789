"""mirrorsync.records.record behaves as dataclasses.dataclass for what records use.

Each class is made twice from one body, by ``record`` and by ``dataclass``, and
every behaviour is compared: construction (positional, keyword, defaults,
factories, errors), repr, equality, hashing, frozenness, slots, match_args,
pickling, and dataclasses' own functions (fields, asdict, astuple, replace).
Then every record class of the modules ``status`` imports is checked the same way.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from mirrorsync import health, location, records, redact
from mirrorsync.cli import render
from mirrorsync.store import dialect, events, mirrors, overview, queries, webhooks
from mirrorsync.store import health as store_health

Maker = Callable[..., Any]


def twins(body: Callable[[Maker, Any], type], **kwargs: bool) -> tuple[Any, Any]:
    return (
        body(records.record(**kwargs), records.field),
        body(dataclasses.dataclass(**kwargs), dataclasses.field),
    )


def point(deco: Maker, field: Any) -> type:
    class Point:
        """A point."""

        x: int
        y: int = 0
        tags: dict[str, int] = field(default_factory=dict)
        secret: str | None = field(default=None, repr=False)

        @property
        def total(self) -> int:
            return self.x + self.y

    return deco(Point)  # type: ignore[no-any-return]


def outcome(deco: Maker, field: Any) -> type:
    class Outcome:
        by: dict[str, int] = field(default_factory=dict)
        n: int = 0

    return deco(Outcome)  # type: ignore[no-any-return]


def derived(deco: Maker, field: Any) -> type:
    class Derived:  # as redact.Url: a field made by __post_init__, not compared
        address: str
        display: str = field(init=False, compare=False)

        def __post_init__(self) -> None:
            object.__setattr__(self, "display", self.address.upper())

    return deco(Derived)  # type: ignore[no-any-return]


def shout(make: Any, *args: Any, **kwargs: Any) -> str:
    """What ``make(*args, **kwargs)`` gives: its repr, or the kind of error it raises."""
    try:
        return repr(make(*args, **kwargs))
    except TypeError:
        return "TypeError"


@pytest.mark.parametrize("kwargs", [{"frozen": True, "slots": True}, {"frozen": True}])
def test_a_frozen_record_is_the_dataclass(kwargs: dict[str, bool]) -> None:
    ours, theirs = twins(point, **kwargs)
    for args, kw in (
        ((1,), {}),
        ((1, 2), {}),
        ((1,), {"y": 5, "secret": "s"}),
        ((), {"x": 3, "tags": {"a": 1}}),
        ((), {}),
        ((1, 2, {}, None, 9), {}),
        ((1,), {"x": 2}),
        ((1,), {"nope": 2}),
    ):
        assert shout(ours, *args, **kw) == shout(theirs, *args, **kw), (args, kw)
    a, b = ours(1, 2, {"k": 1}, "s"), theirs(1, 2, {"k": 1}, "s")
    assert repr(a) == repr(b) == "point.<locals>.Point(x=1, y=2, tags={'k': 1})"
    assert a == ours(1, 2, {"k": 1}, "s") and a != ours(1, 3) and a != b
    assert (a == b) is False and a.__eq__(b) is NotImplemented
    assert shout(hash, a) == shout(hash, b) == "TypeError"  # a dict field: unhashable
    c = ours(1, 2, None, "s")
    assert hash(c) == hash(ours(1, 2, None, "s")) == hash(theirs(1, 2, None, "s"))
    assert a.total == b.total == 3
    for obj in (a, b):
        with pytest.raises(AttributeError, match="cannot assign to field 'x'"):
            obj.x = 5
        with pytest.raises(AttributeError, match="cannot delete field 'y'"):
            del obj.y
    assert ours.__match_args__ == theirs.__match_args__ == ("x", "y", "tags", "secret")
    assert hasattr(a, "__dict__") == hasattr(b, "__dict__") == ("slots" not in kwargs)
    assert getattr(ours, "__slots__", None) == getattr(theirs, "__slots__", None)
    assert ours.__doc__ == "A point."
    assert [(f.name, f.type, f.repr) for f in dataclasses.fields(a)] == [
        (f.name, f.type, f.repr) for f in dataclasses.fields(b)
    ]
    assert dataclasses.asdict(a) == dataclasses.asdict(b)
    assert dataclasses.astuple(a) == dataclasses.astuple(b)
    assert dataclasses.replace(a, y=9) == ours(1, 9, {"k": 1}, "s")
    match a:
        case ours(1, 2):
            pass
        case _:
            pytest.fail("no match")
    assert dataclasses.is_dataclass(a) and dataclasses.is_dataclass(ours)


def test_init_false_compare_false_and_post_init_are_the_dataclasses() -> None:
    ours, theirs = twins(derived, frozen=True, slots=True)
    for args, kw in (((), {"address": "a"}), (("a",), {}), (("a", "b"), {}), ((), {})):
        assert shout(ours, *args, **kw) == shout(theirs, *args, **kw), (args, kw)
    a, b = ours("x"), theirs("x")
    assert a.display == b.display == "X"
    object.__setattr__(a, "display", "other")
    assert a == ours("x") and hash(a) == hash(ours("x")) == hash(theirs("x"))
    assert ours.__match_args__ == theirs.__match_args__ == ("address",)
    assert dataclasses.asdict(ours("y")) == dataclasses.asdict(theirs("y"))
    assert dataclasses.replace(ours("y"), address="z").display == "Z"


def test_a_mutable_record_is_the_dataclass() -> None:
    ours, theirs = twins(outcome, slots=True)
    a, b = ours(), theirs()
    a.by["x"] = 1
    b.by["x"] = 1
    a.n = b.n = 2
    assert repr(a).split("(", 1)[1] == repr(b).split("(", 1)[1]
    assert a == ours({"x": 1}, 2) and ours().by is not ours().by
    assert ours.__hash__ is None and theirs.__hash__ is None
    assert dataclasses.asdict(a) == dataclasses.asdict(b) == {"by": {"x": 1}, "n": 2}


def test_what_records_do_not_support_is_refused() -> None:
    class Base:
        x: int

    with pytest.raises(TypeError, match="non-default argument"):

        @records.record
        class Bad:
            x: int = 0
            y: int  # type: ignore[misc]

    with pytest.raises(TypeError, match="inherit"):
        records.record(type("Sub", (dataclasses.dataclass(Base),), {"__annotations__": {}}))


RECORD_MODULES = (
    health,
    location,
    redact,
    render,
    dialect,
    events,
    mirrors,
    overview,
    queries,
    webhooks,
    store_health,
)


def test_the_modules_status_imports_make_their_rows_by_record() -> None:
    """Each row class there is a record, with the fields dataclasses would give it."""
    found = 0
    for module in RECORD_MODULES:
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                if "__record__" not in vars(value):
                    assert "__dataclass_fields__" not in vars(value), value
                    continue
                found += 1
                fields = dataclasses.fields(value)
                initialised = tuple(f.name for f in fields if f.init)
                assert initialised == getattr(value, "__match_args__", None), value
    assert found >= 30
    problem = health.Problem("stack_stale", "s:r/x", "s:r/x: stale")
    assert pickle.loads(pickle.dumps(problem)) == problem
    assert dataclasses.replace(problem, line="s:r/x: late").what == "late"
