"""Who may call the management API (`/api/...`) and, when restricted, `/metrics`.

With an admin token (``KAIROS_ADMIN_TOKEN``, else ``admin.token`` or
``admin.token_sha256`` in the config), every call needs ``Authorization: Bearer
<token>``. The presented token is hashed and the digests compared in constant time, so
neither the token's content nor its length leaks through timing. Without a token, only
clients on a loopback address may call the API, so a gateway started without one is not
open to the network. `/health`, `/ready` and `/live` are never restricted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Literal

from kairos_core import AdminConfig, Forbidden, Unauthorized
from tornado.httputil import HTTPHeaders

TokenSource = Literal["KAIROS_ADMIN_TOKEN", "admin.token", "admin.token_sha256"]


@dataclass(frozen=True, slots=True)
class AdminCredential:
    """The SHA-256 of the admin token, and where it came from (for the start-up log)."""

    digest: bytes
    source: TokenSource

    def __repr__(self) -> str:
        return f"AdminCredential(source={self.source!r})"


def credential(env_token: str | None, admin: AdminConfig) -> AdminCredential | None:
    """The token in force: the environment's wins over the config's."""
    if env_token:
        return AdminCredential(hashlib.sha256(env_token.encode()).digest(), "KAIROS_ADMIN_TOKEN")
    if admin.token is not None:
        token = admin.token.get_secret_value().encode()
        return AdminCredential(hashlib.sha256(token).digest(), "admin.token")
    if admin.token_sha256 is not None:
        digest = bytes.fromhex(admin.token_sha256.get_secret_value())
        return AdminCredential(digest, "admin.token_sha256")
    return None


def is_loopback(peer_ip: str) -> bool:
    try:
        return ipaddress.ip_address(peer_ip).is_loopback
    except ValueError:
        return False


def authorize(headers: HTTPHeaders, peer_ip: str, required: AdminCredential | None) -> None:
    """Raise `Unauthorized` or `Forbidden` unless the caller may use the management API."""
    if required is not None:
        scheme, _, presented = headers.get("Authorization", "").partition(" ")
        digest = hashlib.sha256(presented.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, required.digest):
            raise Unauthorized("the management API needs a valid admin token")
        return
    if not is_loopback(peer_ip):
        raise Forbidden(
            "no admin token is configured, so the management API only answers loopback clients"
        )
