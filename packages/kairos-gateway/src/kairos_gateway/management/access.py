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

Named tokens (``admin.tokens``, ``KAIROS_ADMIN_TOKENS``) add roles: each call needs the
role `needed_role` gives it, and a token with less gets 403 naming both. The single
token has the ``admin`` role; without any token, loopback callers may do everything.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from kairos_core import AdminConfig, AdminRole, Forbidden, Unauthorized, role_allows
from tornado.httputil import HTTPHeaders

from ..settings import NamedToken

TokenSource = Literal[
    "KAIROS_ADMIN_TOKEN",
    "KAIROS_ADMIN_TOKENS",
    "admin.token",
    "admin.token_sha256",
    "admin.tokens",
]

_READS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class AdminCredential:
    """The SHA-256 of a token, its name and role, and where it came from."""

    digest: bytes
    source: TokenSource
    name: str = "admin"
    role: AdminRole = "admin"

    def __repr__(self) -> str:
        return f"AdminCredential(name={self.name!r}, role={self.role!r}, source={self.source!r})"


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def credentials(
    env_token: str | None, admin: AdminConfig, env_tokens: Sequence[NamedToken] = ()
) -> tuple[AdminCredential, ...]:
    """Every token in force: the single admin token (the environment's wins over the
    config's), then the named ones of the config and of the environment."""
    found: list[AdminCredential] = []
    if env_token:
        found.append(AdminCredential(_sha256(env_token), "KAIROS_ADMIN_TOKEN"))
    elif admin.token is not None:
        found.append(AdminCredential(_sha256(admin.token.get_secret_value()), "admin.token"))
    elif admin.token_sha256 is not None:
        digest = bytes.fromhex(admin.token_sha256.get_secret_value())
        found.append(AdminCredential(digest, "admin.token_sha256"))
    for entry in admin.tokens:
        if entry.token is not None:
            digest = _sha256(entry.token.get_secret_value())
        else:
            assert entry.token_sha256 is not None  # the model requires one of them
            digest = bytes.fromhex(entry.token_sha256.get_secret_value())
        found.append(AdminCredential(digest, "admin.tokens", entry.name, entry.role))
    for named in env_tokens:
        found.append(
            AdminCredential(_sha256(named.token), "KAIROS_ADMIN_TOKENS", named.name, named.role)
        )
    return tuple(found)


def needed_role(method: str, path: str, query: Mapping[str, str] | None = None) -> AdminRole:
    """The least role that may make this management API call.

    Reads are a viewer's, except the configuration with its secrets in clear
    (``GET /api/config?secrets=clear``), an admin's; changing routes (and validating
    one), reloading and rolling back are an operator's; the whole configuration and its
    sections (authentication, limits, CORS, the tokens themselves) are an admin's.
    Validating a whole configuration (``POST /api/config/validate``) changes nothing
    and shows no secret: an operator's, like validating a route.
    """
    if method in _READS:
        if path == "/api/config" and query is not None and query.get("secrets") == "clear":
            return "admin"
        return "viewer"
    if path in ("/api/config/reload", "/api/config/rollback", "/api/config/validate"):
        return "operator"
    if path == "/api/config" or path.startswith("/api/config/"):
        return "admin"
    return "operator"


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


def authorize(
    headers: HTTPHeaders,
    peer_ip: str,
    required: Sequence[AdminCredential],
    needed: AdminRole = "viewer",
) -> AdminCredential | None:
    """The caller's credential (None: no token is configured, and the caller is a
    loopback one), or raise `Unauthorized` / `Forbidden`: no valid token, a role short
    of ``needed``, or (without tokens) a caller that is not on loopback."""
    if required:
        scheme, _, presented = headers.get("Authorization", "").partition(" ")
        digest = hashlib.sha256(presented.strip().encode()).digest()
        caller = None
        for candidate in required:  # every digest compared: no early exit to time
            if hmac.compare_digest(digest, candidate.digest) and caller is None:
                caller = candidate
        if scheme.lower() != "bearer" or caller is None:
            raise Unauthorized("the management API needs a valid admin token")
        if not role_allows(caller.role, needed):
            raise Forbidden(
                f"this call needs the {needed} role; the token {caller.name!r} has the "
                f"{caller.role} role"
            )
        return caller
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
    return None
