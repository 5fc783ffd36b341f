"""Named UI users (``KAIROS_UI_USERS``) with password hashes, each acting with a gateway
token the UI holds (``KAIROS_ADMIN_TOKENS``, the gateway's own format).

``KAIROS_UI_USERS="alice:<hash>:deployer,bob:<hash>:dashboards"``: a user's name, the
PBKDF2-SHA256 hash of their password (`hash_password`, or
``python -m kairos_ui.users``) and the name of the token they act with, from
``KAIROS_ADMIN_TOKENS="deployer:operator:<token>,..."`` (``admin``: the single
``KAIROS_ADMIN_TOKEN``). The gateway still decides what each token may do.
"""

from __future__ import annotations

import base64
import functools
import getpass
import hashlib
import hmac
import re
import secrets
import sys
from dataclasses import dataclass, field

__all__ = [
    "SINGLE_TOKEN",
    "UiUser",
    "UsersError",
    "hash_password",
    "parse_tokens",
    "parse_users",
    "verify_password",
]

_ALGORITHM = "pbkdf2_sha256"
#: The token name that stands for ``KAIROS_ADMIN_TOKEN`` (the gateway's name for it).
SINGLE_TOKEN = "admin"  # noqa: S105  (a name, not a secret)
#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
DEFAULT_ITERATIONS = 600_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_ROLES = ("viewer", "operator", "admin")


class UsersError(ValueError):
    """A malformed ``KAIROS_UI_USERS`` / ``KAIROS_ADMIN_TOKENS`` entry (never echoing a
    hash or token)."""


@dataclass(frozen=True, slots=True)
class UiUser:
    name: str
    password_hash: str = field(repr=False)
    #: The name of the gateway token this user acts with.
    token_name: str


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<digest>``, salt and digest in base64
    (padding optional)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{_ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def _parts(encoded: str) -> tuple[int, bytes, bytes] | None:
    algorithm, _, rest = encoded.partition("$")
    fields = rest.split("$")
    if algorithm != _ALGORITHM or len(fields) != 3 or not fields[0].isdigit():
        return None
    try:
        salt, digest = _unb64(fields[1]), _unb64(fields[2])
    except ValueError:
        return None
    iterations = int(fields[0])
    if not 1_000 <= iterations <= 10_000_000 or not salt or len(digest) != 32:
        return None
    return iterations, salt, digest


def verify_password(password: str, encoded: str | None) -> bool:
    """Does ``password`` match ``encoded``? (None: an unknown user, checked against a
    decoy hash so the answer takes as long.)"""
    known = encoded is not None
    if encoded is None:
        encoded = _decoy()
    parts = _parts(encoded)
    if parts is None:
        return False
    iterations, salt, digest = parts
    given = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return hmac.compare_digest(given, digest) and known


@functools.cache
def _decoy() -> str:
    """A hash for unknown users, so a wrong name costs as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


def parse_users(raw: str) -> tuple[UiUser, ...]:
    """``name:hash:token-name`` entries, comma-separated."""
    users: list[UiUser] = []
    for number, entry in enumerate((e.strip() for e in raw.split(",") if e.strip()), 1):
        fields = entry.split(":")
        if len(fields) != 3 or not all(_NAME.fullmatch(f) for f in fields[::2]):
            raise UsersError(f"KAIROS_UI_USERS entry {number} must be name:hash:token-name")
        name, password_hash, token_name = fields
        if _parts(password_hash) is None:
            raise UsersError(
                f"KAIROS_UI_USERS entry {number} ({name}): the hash must be "
                "pbkdf2_sha256$<iterations>$<salt>$<digest> (python -m kairos_ui.users)"
            )
        if any(u.name == name for u in users):
            raise UsersError(f"KAIROS_UI_USERS entry {number}: the name {name!r} is used twice")
        users.append(UiUser(name, password_hash, token_name))
    return tuple(users)


def parse_tokens(raw: str) -> dict[str, str]:
    """``name:role:token`` entries (the gateway's ``KAIROS_ADMIN_TOKENS``): token by name."""
    tokens: dict[str, str] = {}
    for number, entry in enumerate((e.strip() for e in raw.split(",") if e.strip()), 1):
        name, _, rest = entry.partition(":")
        role, _, token = rest.partition(":")
        if not _NAME.fullmatch(name) or role not in _ROLES or not token:
            raise UsersError(f"KAIROS_ADMIN_TOKENS entry {number} must be name:role:token")
        tokens[name] = token
    return tokens


def main() -> None:  # pragma: no cover - interactive
    """Print the hash of a password typed twice (``python -m kairos_ui.users``)."""
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: ") or not first:
        print("The passwords differ or are empty.", file=sys.stderr)
        raise SystemExit(1)
    print(hash_password(first))


if __name__ == "__main__":  # pragma: no cover
    main()
