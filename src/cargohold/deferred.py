"""`dataclass`, run on a class's first use instead of at its definition.

`dataclasses.dataclass` compiles each class's generated methods (``__init__``,
``__repr__``, ``__eq__``, ``__hash__``, frozen ``__setattr__`` and
``__delattr__``) when the class statement runs: about a millisecond per class,
which every process importing `cargohold.model` paid at start-up (a command
that lists nothing builds none of these objects). A class decorated with
`deferred_dataclass` is an ordinary class until it is first used; then the
standard decorator runs on it, once, with the options given here. Afterwards it
is exactly the class `dataclass` makes.

First use is any of: making an instance (``__init__``; a copy or an unpickled
instance: ``__setstate__``), asking whether it is a dataclass or for its fields
(`dataclasses.is_dataclass`, `dataclasses.fields`, `__dataclass_fields__`),
or asking for its signature (`inspect.signature`). A field that needs
`dataclasses.field` takes this module's `field`, which makes it then: neither
this module nor the classes using it import `dataclasses` (and the `inspect`
it loads) before a class is used.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T", bound=type)

_lock = threading.RLock()


_READ_FIRST = ("__dataclass_fields__", "__dataclass_params__", "__match_args__", "__signature__")
"""Class attributes whose reading completes the class (``__signature__``: `inspect.signature`)."""


class _Completing:
    """A class attribute that completes its class when read, then reads what `dataclass` set
    in its place (None for what it sets nothing for: ``__signature__``, so that `inspect`
    reads the generated ``__init__``)."""

    def __init__(self, cls: type, name: str) -> None:
        self.cls, self.name = cls, name

    def __get__(self, instance: Any, owner: type) -> Any:
        complete(self.cls)
        return getattr(self.cls, self.name, None)


class _Field:
    """The arguments of a `dataclasses.field` made when its class is completed."""

    __slots__ = ("kwargs",)

    def __init__(self, kwargs: dict) -> None:
        self.kwargs = kwargs


def field(**kwargs: Any) -> Any:
    """`dataclasses.field(**kwargs)`, for a class decorated with `deferred_dataclass`."""
    return _Field(kwargs)


def complete(cls: type) -> type:
    """Run `dataclass` on `cls` now if it has not run yet (once, also across threads); return `cls`."""
    with _lock:
        options = cls.__dict__.get("_deferred_options")
        if options is None:
            return cls
        import dataclasses

        for name in ("_deferred_options", "__init__", "__setstate__", *_READ_FIRST):
            delattr(cls, name)
        for name, value in list(vars(cls).items()):
            if isinstance(value, _Field):
                setattr(cls, name, dataclasses.field(**value.kwargs))
        dataclasses.dataclass(**options)(cls)
    return cls


def deferred_dataclass(**options: Any) -> Callable[[T], T]:
    """Decorate a class as ``@dataclass(**options)`` would, on its first use (see the module)."""

    def decorate(cls: T) -> T:
        def __init__(self, *args, **kwargs) -> None:  # the first instance: complete, then initialise
            complete(cls)
            type(self).__init__(self, *args, **kwargs)

        def __setstate__(self, state: Any) -> None:  # the first copy or unpickled instance
            complete(cls)
            setstate = getattr(type(self), "__setstate__", None)
            if setstate is not None:
                setstate(self, state)
            elif state:
                self.__dict__.update(state)

        cls._deferred_options = dict(options)
        cls.__init__ = __init__
        cls.__setstate__ = __setstate__
        for name in _READ_FIRST:
            setattr(cls, name, _Completing(cls, name))
        return cls

    return decorate
