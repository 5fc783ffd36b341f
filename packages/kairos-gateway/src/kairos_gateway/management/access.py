"""Who may call the management API (`/api/...`).

With an admin token set (`KAIROS_ADMIN_TOKEN`), every call needs
`Authorization: Bearer <token>` (compared in constant time). Without one, only clients
on a loopback address may call it, so a gateway started without a token is not open
to the network. `/health`, `/ready`, `/live` and `/metrics` are not part of this.
"""

from __future__ import annotations

import hmac
import ipaddress

from kairos_core import Forbidden, Unauthorized
from tornado.httputil import HTTPHeaders


def authorize(headers: HTTPHeaders, peer_ip: str, token: str | None) -> None:
    """Raise `Unauthorized` or `Forbidden` unless the caller may use the management API."""
    if token:
        scheme, _, presented = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            raise Unauthorized("the management API needs a valid admin token")
        return
    try:
        loopback = ipaddress.ip_address(peer_ip).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise Forbidden(
            "no admin token is configured, so the management API only answers loopback clients"
        )
