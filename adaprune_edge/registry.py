"""Named registries with "did you mean" errors (lm-evaluation-harness style)."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from adaprune_edge.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → object map; unknown names raise ConfigError listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._baselines: set[str] = set()
        self._help: dict[str, str] = {}

    def register(self, name: str, baseline: bool = False, help: str = "") -> Callable[[T], T]:
        """baseline=True: usable by name, but not a choice of the search space (e.g. `random`).
        help: a few words `--help` shows after the name (`listing`)."""
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            self._help[name] = help
            if baseline:
                self._baselines.add(name)
            return obj

        return deco

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        raise ConfigError(unknown_name_message(self.kind, name, self.names()))

    def names(self) -> list[str]:
        return sorted(self._items)

    def help(self, name: str) -> str:
        """The registration's short description ('' when none was given)."""
        return self._help.get(name, "")

    def listing(self, described: bool = True) -> str:
        """'a, b (what b does), c' in registration order, for a CLI option's help."""
        return ", ".join(f"{n} ({h})" if described and (h := self._help[n]) else n for n in self._items)

    def searchable(self) -> tuple[str, ...]:
        """Names the search space chooses from, in registration order (baselines left out)."""
        return tuple(n for n in self._items if n not in self._baselines)

    def __contains__(self, name: str) -> bool:
        return name in self._items


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """One line: unknown X 'name' (did you mean 'y'?); known: a, b, c."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; known: {', '.join(known)}"
