"""Per-route claim rules and claim forwarding: pure functions of verified claims."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from kairos_core.errors import Forbidden
from kairos_core.route import ClaimValue

__all__ = ["check_route_claims", "claim_matches", "forwarded_headers"]

#: OAuth scope claims hold space-delimited strings (RFC 8693 §4.2, RFC 9068 §2.2.3).
_SPACE_DELIMITED = frozenset({"scope", "scp"})
# CR, LF and NUL would split or truncate the header; other controls are not valid either.
_UNSAFE_HEADER_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _same(held: object, wanted: object) -> bool:
    # JSON true is not 1 and "1" is not 1: booleans and strings match only their own type.
    if isinstance(held, bool | str) or isinstance(wanted, bool | str):
        return type(held) is type(wanted) and held == wanted
    return held == wanted


def claim_matches(name: str, value: object, accepted: ClaimValue | list[ClaimValue]) -> bool:
    """Whether a token's claim ``value`` satisfies a route's accepted value(s).

    A list claim (e.g. roles) passes when it contains an accepted value; a ``scope`` or
    ``scp`` string is split on spaces first. Types must agree: ``true`` does not match
    ``1``, nor ``"1"`` match ``1``.
    """
    wanted = accepted if isinstance(accepted, list) else [accepted]
    if isinstance(value, str) and name in _SPACE_DELIMITED:
        value = value.split()
    held = value if isinstance(value, list) else [value]
    return any(_same(h, w) for h in held for w in wanted)


def check_route_claims(
    claims: Mapping[str, Any],
    required: Mapping[str, ClaimValue | list[ClaimValue]] | None,
) -> None:
    """Raise `Forbidden` (``insufficient_scope``) unless every required claim matches."""
    if not required:
        return
    for name, accepted in required.items():
        if name not in claims or not claim_matches(name, claims[name], accepted):
            raise Forbidden(
                f"the token's {name!r} claim does not grant access to this route",
                error="insufficient_scope",
            )


def forwarded_headers(
    claims: Mapping[str, Any], forward: Mapping[str, str]
) -> list[tuple[str, str]]:
    """Request headers carrying claims to the backend: ``forward`` maps claim -> header.

    Strings go as they are, anything else as compact JSON. A claim that is absent, or
    whose value holds control characters (CR, LF, NUL, ...) or characters outside
    latin-1, is left out. The caller must still remove any client-sent header of the
    same names, or a client could forge a claim the token does not carry.
    """
    out: list[tuple[str, str]] = []
    for claim, header in forward.items():
        if claim not in claims:
            continue
        value = claims[claim]
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if _UNSAFE_HEADER_CHARS.search(text) or not _latin1(text):
            continue
        out.append((header, text))
    return out


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
