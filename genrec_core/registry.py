"""One way to make classes findable by name (losses, methods): a decorator
that files a class in its table and refuses a name given twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


def registrar(table: dict[str, T], what: str, set_name: bool = True) -> Callable[[str], Callable[[T], T]]:
    """``register = registrar(TABLE, "loss")``; then ``@register("ce")`` puts the class in
    ``TABLE["ce"]`` (and sets its ``name`` attribute unless ``set_name`` is false)."""

    def register(name: str) -> Callable[[T], T]:
        def deco(cls: T) -> T:
            if name in table:
                raise ValueError(f"{what} {name!r} registered twice")
            if set_name:
                cls.name = name
            table[name] = cls
            return cls

        return deco

    return register
