"""Who may call the management API (`/api/...`) and, when restricted, `/metrics`.

With an admin token (``KAIROS_ADMIN_TOKEN``, else ``admin.token`` or
``admin.token_sha256`` in the config), every call needs ``Authorization: Bearer
<token>``. The presented token is hashed and the digests compared in constant time, so
neither the token's content nor its length leaks through timing. Without a token, only
clients on a loopback address may call the API, so a gateway started without one is not
open to the network; and only requests addressed to a loopback name (``Host``) and, when
they come from a web page, from a loopback origin (``Origin``). The last two stop a
page in a browser on the gateway's machine from calling the API, through DNS rebinding
(its own name made to resolve to 127.0.0.1) or a cross-site request: it would turn the
gateway into an open proxy to any internal host. `/health`, `/ready` and `/live` are
never restricted.
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


def is_loopback_name(host: str) -> bool:
    """``host`` (a Host header or an origin's host, port allowed) names this machine:
    ``localhost`` or a ``.localhost`` name (RFC 6761: browsers resolve those to
    loopback themselves), or a loopback address (``127.0.0.1``, ``[::1]``)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return False
    else:
        name, _, port = host.partition(":")
        if port and not port.isdigit():
            return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    return is_loopback(name)


def _loopback_origin(origin: str) -> bool:
    scheme, sep, host = origin.strip().partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and is_loopback_name(host)


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
    host = headers.get("Host")
    if host is None or not is_loopback_name(host):
        raise Forbidden(
            "no admin token is configured, so the management API only answers requests "
            "addressed to localhost, 127.0.0.1 or [::1] (the Host header); set an admin "
            "token to reach it by another name"
        )
    origin = headers.get("Origin")
    if origin is not None and not _loopback_origin(origin):
        raise Forbidden(
            "no admin token is configured, so the management API refuses requests from web "
            "pages of other origins (Origin header)"
        )
