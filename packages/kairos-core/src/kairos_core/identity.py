"""Route identity: a route's ``name``, its ``tags``, and the id it is addressed by.

A route's id is its ``name`` when it has one. A route without a name (every kairos-rs
config) gets a derived id: ``r-`` and the first 12 hex digits of the SHA-256 of its
sorted, comma-joined methods, a space and its ``external_path``::

    sha256("GET,POST /api/users/{id}") -> "r-2e80e22e2a32"

So the same route has the same id in every process, after every restart and reload,
and the id changes only when its methods or path do (give it a ``name`` to keep one
across such edits). Two routes cannot have the same methods and path (the table refuses
them), so derived ids are unique; a name may not take that shape (``r-`` and 12 hex
digits), so a name never collides with a derived id; nor may it be ``validate``. Ids
never start with ``/``, which is how the management API tells ``/api/routes/{id}``
from ``/api/routes/{external_path}``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from .errors import FieldError

__all__ = [
    "DERIVED_ID_PATTERN",
    "MAX_TAGS",
    "RESERVED_NAMES",
    "ROUTE_NAME_PATTERN",
    "TAG_PATTERN",
    "derived_route_id",
    "duplicate_name_errors",
    "looks_derived",
    "route_id",
]

#: A route name: a letter or digit, then letters, digits, ``_ . -``; at most 64.
ROUTE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: A tag: the same characters plus ``:`` (``team:payments``); at most 64.
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
#: Tags a route may carry.
MAX_TAGS = 16
#: Names a route may not take: ``/api/routes/validate`` is an endpoint of its own.
RESERVED_NAMES = frozenset({"validate"})
#: What a derived id looks like (a name may not).
DERIVED_ID_PATTERN = r"^r-[0-9a-f]{12}$"
_DERIVED = re.compile(DERIVED_ID_PATTERN)


class _Identified(Protocol):
    @property
    def name(self) -> str | None: ...
    @property
    def methods(self) -> Sequence[str]: ...
    @property
    def external_path(self) -> str: ...


def derived_route_id(methods: Iterable[str], external_path: str) -> str:
    """The id of an unnamed route with these methods and path (see the module doc)."""
    key = ",".join(sorted({m.upper() for m in methods})) + " " + external_path
    return "r-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def route_id(route: _Identified) -> str:
    """The route's name, else its derived id."""
    if route.name is not None:
        return route.name
    return derived_route_id(route.methods, route.external_path)


def looks_derived(name: str) -> bool:
    return _DERIVED.match(name) is not None


def duplicate_name_errors(routes: Sequence[_Identified]) -> list[FieldError]:
    """Routes whose ids (names, or derived ids) are the same, at ``routers[i].name``."""
    first: dict[str, int] = {}
    errors: list[FieldError] = []
    for index, route in enumerate(routes):
        rid = route_id(route)
        other = first.setdefault(rid, index)
        if other != index:
            errors.append(
                FieldError(
                    ("routers", index, "name"),
                    f"routers[{other}] has the same name; route names must be unique",
                    rid,
                )
            )
    return errors
