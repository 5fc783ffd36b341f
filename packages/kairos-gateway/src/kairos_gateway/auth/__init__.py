"""JWT bearer authentication: `JwtVerifier` and its parts.

* `verifier` - `JwtVerifier`: bearer parsing, signature and claim checks (pyjwt).
* `jwks` - `JwksKeys`: keys from a JWKS URL, fetched with aiohttp off the hot path.
* `cache` - `TokenCache`: verified tokens (LRU, bounded by each token's ``exp``).
* `claims` - per-route claim rules and claim-to-header forwarding.
* `keys` - which algorithms a key type may verify (the alg-confusion defence).
"""

from .cache import TokenCache
from .claims import check_route_claims, claim_matches, forwarded_headers
from .jwks import JwksKeys
from .verifier import MAX_TOKEN_CHARS, Claims, JwtVerifier, bearer_token

__all__ = [
    "MAX_TOKEN_CHARS",
    "Claims",
    "JwksKeys",
    "JwtVerifier",
    "TokenCache",
    "bearer_token",
    "check_route_claims",
    "claim_matches",
    "forwarded_headers",
]
