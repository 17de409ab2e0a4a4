"""One small registry shared by every plug-in family.

Node types, alert parsers, checkers, intelligence providers and notify
drivers each own a ``Registry``; a plug-in module registers itself with the
``register`` decorator and the family's package imports its modules so the
decorators run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownPlugin(LookupError):
    """Raised when a registry is asked for a key nobody registered."""

    def __init__(self, family: str, key: str, known: list[str]):
        self.family = family
        self.key = key
        self.known = known
        super().__init__(f"Unknown {family}: {key} (known: {', '.join(known) or 'none'})")


class Registry(Generic[T]):
    """A name -> plug-in mapping for one family (``family`` names it in errors)."""

    def __init__(self, family: str):
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, key: str) -> Callable[[T], T]:
        """Decorator registering the decorated object under ``key``.

        Raises ValueError at import time when ``key`` is already taken.
        """

        def decorator(obj: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.family} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, key: str) -> T:
        """Return the plug-in registered as ``key``; raises UnknownPlugin."""
        try:
            return self._items[key]
        except (KeyError, TypeError):
            raise UnknownPlugin(self.family, key, self.keys()) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._items

    def keys(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))
