"""Backend selection. Round robin for now; one object per route, owned by the snapshot."""

from __future__ import annotations

import itertools


class RoundRobin:
    """Hands out backend indexes 0..n-1 in turn."""

    __slots__ = ("_counter", "_size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a route needs at least one backend")
        self._size = size
        self._counter = itertools.count()

    def pick(self) -> int:
        return next(self._counter) % self._size
