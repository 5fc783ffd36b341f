"""JWT authentication of a route (``auth_required``): the bearer token must verify.

``on_request`` verifies the token (401 / 403 with the RFC 6750 challenge otherwise)
and keeps the claims on the request; ``before_upstream`` removes client-sent copies of
the claim headers (else a client could forge a claim), drops the token with
``strip_authorization``, and adds the verified claims as headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from kairos_core import ClaimValue

from ..chain import Policy, Request, UpstreamRequest

if TYPE_CHECKING:
    from ..auth import Claims, JwtVerifier

__all__ = ["JwtPolicy"]


class JwtPolicy(Policy):
    name = "jwt"
    priority = 1450

    __slots__ = (
        "drop_headers",
        "forward_claims",
        "forward_header_names",
        "required_claims",
        "strip_authorization",
        "verifier",
    )

    def __init__(
        self,
        verifier: JwtVerifier,
        *,
        required_claims: Mapping[str, ClaimValue | list[ClaimValue]] | None,
        forward_claims: Mapping[str, str],
        strip_authorization: bool,
    ) -> None:
        self.verifier = verifier
        self.required_claims = required_claims
        #: Claim -> header, the route's entries over the `jwt` block's.
        self.forward_claims = forward_claims
        #: Lower-cased names of those headers: client-sent copies are always removed.
        self.forward_header_names = frozenset(h.lower() for h in forward_claims.values())
        self.strip_authorization = strip_authorization
        drop = self.forward_header_names
        self.drop_headers = drop | {"authorization"} if strip_authorization else drop

    def on_request(self, request: Request) -> Awaitable[None] | None:
        """Only the Authorization header is read, never the query string."""
        result = self.verifier.authenticate(request.headers.get("Authorization"))
        if isinstance(result, MappingProxyType):
            self._accept(request, result)
            return None
        return self._verified_later(request, result)

    async def _verified_later(self, request: Request, pending: Awaitable[Claims]) -> None:
        self._accept(request, await pending)

    def _accept(self, request: Request, claims: Mapping[str, Any]) -> None:
        if self.required_claims:
            self.verifier.check_route_claims(claims, self.required_claims)
        request.claims = claims

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> None:
        drop = self.drop_headers
        headers = upstream.headers
        if drop:
            headers = [(k, v) for k, v in headers if k.lower() not in drop]
        if self.forward_claims and request.claims is not None:
            headers += self.verifier.forwarded_headers(request.claims, self.forward_claims)
        upstream.headers = headers
