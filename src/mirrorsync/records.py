"""Record classes for the modules ``status`` imports, without ``dataclasses`` (start-up).

``@dataclass`` costs ``status`` about 15 ms before it reads a row: importing
``dataclasses`` (and with it ``inspect``, ``ast``, ``dis``, ``tokenize``), then
compiling six or seven generated methods for each of the ~30 row classes of the
health model and the store readers it calls. :func:`record` makes the same
classes from the same declarations with generic methods instead: the same
``__init__`` (positional or keyword, defaults, ``field(default_factory=...)``), the
same ``__repr__``, ``__eq__``, ``__hash__``, ``__match_args__``, ``__slots__`` and
frozenness (``dataclasses.FrozenInstanceError``'s message, as an ``AttributeError``).
``dataclasses.fields``, ``asdict``, ``astuple``, ``replace`` and ``is_dataclass``
work on them: ``__dataclass_fields__`` is built, importing ``dataclasses`` then,
the first time anything asks. Type checkers see ``dataclasses.dataclass`` itself.

Only what mirrorsync's records use is supported (``frozen``, ``slots``, ``field``'s
``default``, ``default_factory``, ``repr``, ``init`` and ``compare``, ``__post_init__``
without init-only variables; no inheritance from a dataclass, which is refused).
``tests/test_records.py`` holds each behaviour to ``dataclasses``'s.
"""

from __future__ import annotations

import itertools

__all__ = ["field", "record"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from dataclasses import dataclass as record
    from dataclasses import field as field
else:
    _MISSING = object()

    class _Field:
        __slots__ = ("compare", "default", "default_factory", "init", "repr")

        def __init__(self, default, default_factory, repr, init, compare):
            self.default = default
            self.default_factory = default_factory
            self.repr = repr
            self.init = init
            self.compare = compare

    def field(*, default=_MISSING, default_factory=_MISSING, repr=True, init=True, compare=True):
        """``dataclasses.field``, with the arguments mirrorsync's records use."""
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("cannot specify both default and default_factory")
        return _Field(default, default_factory, repr, init, compare)

    class _LazyFields:
        """``__dataclass_fields__``, made by ``dataclasses`` itself (from the same
        declarations) the first time it is asked for."""

        def __get__(self, instance, owner):
            import dataclasses

            namespace = {"__annotations__": {}}
            for name, annotation, default, factory, shown, init, compare in owner.__record__[
                "fields"
            ]:
                namespace["__annotations__"][name] = annotation
                kwargs = {"repr": shown, "init": init, "compare": compare}
                if factory is not _MISSING:
                    kwargs["default_factory"] = factory
                elif default is not _MISSING:
                    kwargs["default"] = default
                namespace[name] = dataclasses.field(**kwargs)
            twin = dataclasses.dataclass(type(owner.__name__, (), namespace))
            fields = twin.__dataclass_fields__
            type.__setattr__(owner, "__dataclass_fields__", fields)
            return fields

    class FrozenInstanceError(AttributeError):
        """Raised on an assignment to a frozen record (as ``dataclasses``'s is)."""

    def _is_classvar(annotation: str) -> bool:
        return annotation.startswith(("ClassVar", "typing.ClassVar", "InitVar"))

    def record(cls=None, /, *, frozen=False, slots=False):
        """``dataclasses.dataclass`` for mirrorsync's records (see the module)."""

        def wrap(cls):
            return _make(cls, frozen, slots)

        return wrap if cls is None else wrap(cls)

    def _make(cls, frozen, slots):
        if any(hasattr(b, "__dataclass_fields__") for b in cls.__mro__[1:]):
            raise TypeError(f"{cls.__name__}: a record cannot inherit from a dataclass")
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (as dataclasses)
        fields = []
        for name, annotation in annotations.items():
            if isinstance(annotation, str) and _is_classvar(annotation):
                continue
            value = cls.__dict__.get(name, _MISSING)
            if isinstance(value, _Field):
                default, factory, shown = value.default, value.default_factory, value.repr
                init, compare = value.init, value.compare
            else:
                default, factory, shown, init, compare = value, _MISSING, True, True, True
            fields.append((name, annotation, default, factory, shown, init, compare))
        initialised = [f for f in fields if f[5]]
        for before, after in itertools.pairwise(initialised):
            if (before[2], before[3]) != (_MISSING, _MISSING) and after[2:4] == (
                _MISSING,
                _MISSING,
            ):
                raise TypeError(f"non-default argument {after[0]!r} follows default argument")
        names = tuple(f[0] for f in fields)
        compared = tuple(f[0] for f in fields if f[6])
        post_init = cls.__dict__.get("__post_init__")
        body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
        for name in names:
            body.pop(name, None)
        body["__record__"] = {"fields": fields, "frozen": frozen}
        body["__dataclass_fields__"] = _LazyFields()
        body.setdefault("__match_args__", tuple(f[0] for f in initialised))
        if slots:
            if "__slots__" in cls.__dict__:
                raise TypeError(f"{cls.__name__} already specifies __slots__")
            body["__slots__"] = names
        setter = object.__setattr__
        defaults = [(f[0], f[2], f[3]) for f in initialised]
        unset = [
            (f[0], f[2], f[3]) for f in fields if not f[5] and (f[2], f[3]) != (_MISSING, _MISSING)
        ]
        qualname = cls.__qualname__

        def __init__(self, *args, **kwargs):
            if len(args) > len(defaults):
                raise TypeError(
                    f"{qualname}.__init__() takes {len(defaults) + 1} positional arguments "
                    f"but {len(args) + 1} were given"
                )
            for i, (name, default, factory) in enumerate(defaults):
                if i < len(args):
                    if name in kwargs:
                        raise TypeError(
                            f"{qualname}.__init__() got multiple values for argument {name!r}"
                        )
                    value = args[i]
                elif name in kwargs:
                    value = kwargs.pop(name)
                elif factory is not _MISSING:
                    value = factory()
                elif default is not _MISSING:
                    value = default
                else:
                    raise TypeError(
                        f"{qualname}.__init__() missing 1 required positional argument: {name!r}"
                    )
                setter(self, name, value)
            if kwargs:
                raise TypeError(
                    f"{qualname}.__init__() got an unexpected keyword argument {next(iter(kwargs))!r}"
                )
            for name, default, factory in unset:  # init=False with a default
                setter(self, name, default if factory is _MISSING else factory())
            if post_init is not None:
                post_init(self)

        shown = tuple(f[0] for f in fields if f[4])

        def __repr__(self):
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
            return f"{type(self).__qualname__}({inner})"

        def __eq__(self, other):
            if other.__class__ is self.__class__:
                return tuple(getattr(self, n) for n in compared) == tuple(
                    getattr(other, n) for n in compared
                )
            return NotImplemented

        def __hash__(self):
            return hash(tuple(getattr(self, n) for n in compared))

        methods = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
        declared = cls.__dict__
        explicit_hash = "__hash__" in declared and not (
            declared["__hash__"] is None and "__eq__" in declared
        )
        if frozen:

            def __setattr__(self, name, value):
                if type(self) is new or name in names:
                    raise FrozenInstanceError(f"cannot assign to field {name!r}")
                super(new, self).__setattr__(name, value)

            def __delattr__(self, name):
                if type(self) is new or name in names:
                    raise FrozenInstanceError(f"cannot delete field {name!r}")
                super(new, self).__delattr__(name)

            methods["__setattr__"] = __setattr__
            methods["__delattr__"] = __delattr__
        for name, method in methods.items():
            if name not in declared:
                method.__qualname__ = f"{qualname}.{name}"
                body[name] = method
        if not explicit_hash:  # eq and frozen: hashable by the fields; eq alone: not hashable
            if frozen:
                __hash__.__qualname__ = f"{qualname}.__hash__"
            body["__hash__"] = __hash__ if frozen else None
        if slots and frozen:  # as dataclasses: pickling sets the fields past __setattr__

            def __getstate__(self):
                return [getattr(self, n) for n in names]

            def __setstate__(self, state):
                for n, v in zip(names, state, strict=True):
                    setter(self, n, v)

            body["__getstate__"] = __getstate__
            body["__setstate__"] = __setstate__
        new = type(cls)(cls.__name__, cls.__bases__, body)
        new.__qualname__ = qualname
        return new
