"""`TokenCache`: verified tokens, so a repeated token costs a dict lookup, not a signature.

Keyed by the exact token string (a token differing in one byte is a different key and
is verified afresh). An entry lives until the token's ``exp`` and no longer, whatever
the leeway: a token inside its leeway window is simply verified again. The cache is a
bounded LRU; ``max_entries == 0`` disables it.
"""

from __future__ import annotations

from collections import OrderedDict
from types import MappingProxyType
from typing import Any

__all__ = ["TokenCache"]


class TokenCache:
    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, MappingProxyType[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> MappingProxyType[str, Any] | None:
        """The claims of ``token`` if it was verified and has not expired by ``now``."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return entry[1]

    def put(
        self, token: str, claims: MappingProxyType[str, Any], expires_at: float, now: float
    ) -> None:
        if self.max_entries == 0 or now >= expires_at:
            return
        entries = self._entries
        entries[token] = (expires_at, claims)
        entries.move_to_end(token)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
