"""`JwtVerifier`: bearer-token authentication for protected routes.

The hot path is synchronous. `JwtVerifier.authenticate` returns the claims directly
when it can decide at once: a token from the verified-token cache, any token under a
static key (``secret`` or ``public_key``), or a JWKS token whose key is already held.
Only a JWKS token naming a key we do not have, while a JWKS fetch may run, gets an
awaitable back; it waits (bounded) for that fetch. So the common case creates no
coroutine::

    result = verifier.authenticate(request.headers.get("Authorization"))
    claims = result if isinstance(result, MappingProxyType) else await result

(`authenticate_async` does exactly that.) Failures raise `Unauthorized` (401) with an
RFC 6750 ``error``: none when there are no bearer credentials at all (missing header,
another scheme), ``invalid_request`` for a bearer scheme with no token at all (a
missing parameter), and, as RFC 6750 section 3.1 says of a token that is "expired,
revoked, malformed, or invalid for other reasons", ``invalid_token`` for every token
presented that does not verify (not three base64url segments, over `MAX_TOKEN_CHARS`,
undecodable, unsigned, bad signature, algorithm not allowed for the key, expired, not
yet valid, issued in the future, wrong ``iss``/``aud``, missing claim, unknown key, no
JWKS keys). `check_route_claims` raises `Forbidden` (403, ``insufficient_scope``).

Decisions: ``exp`` is always required (a token without one would be valid forever);
``exp``/``nbf``/``iat`` are checked against the injected clock with ``leeway_s``;
``aud`` is checked only when an audience is configured. When the JWKS cannot be fetched
and no key is held, tokens get 401 ``invalid_token`` ("signing keys unavailable"), as
Envoy's jwt_authn answers a failed remote JWKS fetch; `start` logs the failure and does
not raise.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK
from jwt.algorithms import AllowedPublicKeys, get_default_algorithms
from kairos_core.auth import HMAC_ALGORITHMS, JwtConfig
from kairos_core.errors import Unauthorized
from kairos_core.route import ClaimValue

from .cache import TokenCache
from .claims import check_route_claims, forwarded_headers
from .jwks import JwksKeys, SessionFactory
from .keys import public_key_algorithms

__all__ = ["MAX_TOKEN_CHARS", "Claims", "JwtVerifier", "bearer_token"]

#: The verified claims: a read-only mapping shared with the cache (nested lists and
#: dicts are shared too: never mutate them). A concrete type, so telling claims from
#: an awaitable is a cheap ``isinstance(result, MappingProxyType)``.
Claims = MappingProxyType[str, Any]
#: A bearer token longer than this is refused before any parsing (real ones are < 4 KiB).
MAX_TOKEN_CHARS = 16 * 1024

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# A JWK from the set, an HMAC secret, or a loaded public key (of a type
# `keys.public_key_algorithms` accepts, which is all pyjwt verifies with).
_VerifyKey = PyJWK | bytes | AllowedPublicKeys


def _invalid(detail: str) -> Unauthorized:
    return Unauthorized(detail, error="invalid_token")


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` value, or raise `Unauthorized`."""
    if authorization is None:
        raise Unauthorized("missing bearer token")
    scheme, _, rest = authorization.partition(" ")
    if len(scheme) != 6 or scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")
    token = rest.strip(" ")
    if not token:
        raise Unauthorized("empty bearer token", error="invalid_request")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("bearer token too large", error="invalid_token")
    return token


def _translate(exc: jwt.PyJWTError) -> Unauthorized:
    """A short, safe detail for a pyjwt failure (never the token or key)."""
    if isinstance(exc, jwt.InvalidSignatureError):
        return _invalid("invalid token signature")
    if isinstance(exc, jwt.InvalidAudienceError):
        return _invalid("invalid token audience")
    if isinstance(exc, jwt.InvalidIssuerError):
        return _invalid("invalid token issuer")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return _invalid(f"token lacks the required {exc.claim!r} claim")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return _invalid("token algorithm not allowed")
    if isinstance(exc, jwt.InvalidKeyError):
        return _invalid("signing key not usable")
    if isinstance(exc, jwt.DecodeError):
        return _invalid("malformed token")
    return _invalid("invalid token")


def _time_claim(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"invalid {name!r} claim")
    return float(value)


class JwtVerifier:
    """Verifies bearer tokens against one `JwtConfig`; see the module docstring.

    ``clock`` (seconds since the epoch) drives the time claims, the cache and the JWKS
    schedule. ``session_factory`` makes the aiohttp session for JWKS fetches; it is
    called lazily, on the running loop, at the first fetch (default: a plain
    `aiohttp.ClientSession`; it is closed by `close`).
    """

    def __init__(
        self,
        config: JwtConfig,
        *,
        clock: Callable[[], float] = time.time,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._leeway = float(config.leeway_s)
        self._allowed = frozenset(config.algorithms)
        self._audience = config.audience
        self._issuer = config.issuer
        self._cache = TokenCache(config.cache_size) if config.cache_size else None
        self._decoder = jwt.PyJWT(
            options={
                # Time claims are checked here against the injected clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": config.audience is not None,
                "require": list(config.required_claims),
                # A key below pyjwt's minimum is an error, never a warning per request.
                "enforce_minimum_key_length": True,
            }
        )
        self._static_key: _VerifyKey = b""
        self._static_algs: frozenset[str] = frozenset()
        self._jwks: JwksKeys | None = None
        if config.secret is not None:
            self._static_key = config.secret.get_secret_value().encode()
            self._static_algs = self._allowed & HMAC_ALGORITHMS
            self._check_static_key("secret")
        elif config.public_key is not None:
            try:
                public_key = load_pem_public_key(config.public_key.encode())
            except ValueError as exc:
                raise ValueError("public_key is not a valid PEM public key") from exc
            self._static_algs = self._allowed & public_key_algorithms(public_key)
            self._static_key = cast("AllowedPublicKeys", public_key)
            if not self._static_algs:
                raise ValueError(
                    f"public_key cannot verify any of the algorithms {sorted(self._allowed)}"
                )
            self._check_static_key("public_key")
        else:
            assert config.jwks_url is not None  # JwtConfig guarantees exactly one source
            self._jwks = JwksKeys(
                config.jwks_url,
                self._allowed,
                ttl_s=config.jwks_cache_ttl_s,
                refresh_interval_s=config.jwks_refresh_interval_s,
                timeout_s=config.jwks_timeout_s,
                clock=clock,
                session_factory=session_factory,
                on_keys_removed=self._keys_removed,
            )
        self._static_alg_list = sorted(self._static_algs)

    def _check_static_key(self, field: str) -> None:
        algorithms = get_default_algorithms()
        for alg in sorted(self._static_algs):
            try:
                prepared = algorithms[alg].prepare_key(self._static_key)
            except jwt.InvalidKeyError as exc:
                raise ValueError(f"{field} cannot be used for {alg}: {exc}") from None
            problem = algorithms[alg].check_key_length(prepared)
            if problem:
                raise ValueError(f"{field} is too weak for {alg}: {problem}")

    def _keys_removed(self) -> None:
        # A key left the JWKS (revoked or rotated out): forget tokens it vouched for.
        if self._cache is not None:
            self._cache.clear()

    @property
    def token_cache(self) -> TokenCache | None:
        return self._cache

    @property
    def jwks(self) -> JwksKeys | None:
        """The JWKS key store (None with a static key), for health and metrics."""
        return self._jwks

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the JWKS once (bounded by ``jwks_timeout_s``); a failure is only logged."""
        if self._jwks is not None:
            await self._jwks.refresh()

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    # -- authentication ------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Claims | Awaitable[Claims]:
        """The verified claims of the request's bearer token, or an awaitable of them.

        Raises `Unauthorized`. Must run on the event loop when a JWKS is configured.
        """
        token = bearer_token(authorization)
        now = self._clock()
        if self._cache is not None:
            claims = self._cache.get(token, now)
            if claims is not None:
                return claims
        return self._verify(token, now)

    async def authenticate_async(self, authorization: str | None) -> Claims:
        result = self.authenticate(authorization)
        return result if isinstance(result, MappingProxyType) else await result

    def _verify(self, token: str, now: float) -> Claims | Awaitable[Claims]:
        if _TOKEN_SHAPE.fullmatch(token) is None:
            raise Unauthorized("malformed bearer token", error="invalid_token")
        jwks = self._jwks
        if jwks is None:
            # One key, so pyjwt's own allow-list check (the key's algorithms only) is
            # all that is needed, and the header is parsed once.
            return self._decode(token, (self._static_key,), self._static_alg_list, now)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid("malformed token") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise _invalid("token algorithm not allowed")
        kid = header.get("kid")
        jwks.refresh_if_stale(now)
        keys = jwks.lookup(kid, alg)
        if keys:
            return self._decode(token, keys, (alg,), now)
        fetch = jwks.refresh_for_unknown_kid(now)
        if fetch is None:
            raise self._no_key()
        return self._verify_after_fetch(token, kid, alg, fetch)

    async def _verify_after_fetch(
        self, token: str, kid: str | None, alg: str, fetch: asyncio.Task[None]
    ) -> Claims:
        assert self._jwks is not None
        await self._jwks.wait(fetch)
        keys = self._jwks.lookup(kid, alg)
        if not keys:
            raise self._no_key()
        return self._decode(token, keys, (alg,), self._clock())

    def _no_key(self) -> Unauthorized:
        if self._jwks is not None and not self._jwks.loaded:
            return _invalid("signing keys unavailable")
        return _invalid("unknown signing key")

    def _decode(
        self, token: str, keys: Sequence[_VerifyKey], algorithms: Sequence[str], now: float
    ) -> Claims:
        failure: jwt.PyJWTError | None = None
        for key in keys:  # several only for a kid-less token under a JWKS
            try:
                decoded = self._decoder.decode_complete(
                    token,
                    key=key,
                    algorithms=algorithms,
                    audience=self._audience,
                    issuer=self._issuer,
                )
            except jwt.InvalidSignatureError as exc:
                failure = exc
                continue
            except jwt.PyJWTError as exc:
                raise _translate(exc) from exc
            except (ValueError, TypeError, RecursionError) as exc:
                raise _invalid("malformed token") from exc
            payload: dict[str, Any] = decoded["payload"]
            expires_at = self._check_times(payload, now)
            claims = MappingProxyType(payload)
            if self._cache is not None:
                self._cache.put(token, claims, expires_at, now)
            return claims
        raise _translate(failure or jwt.InvalidSignatureError()) from failure

    def _check_times(self, payload: Mapping[str, Any], now: float) -> float:
        leeway = self._leeway
        exp = _time_claim(payload, "exp")
        if exp is None:
            raise _invalid("token has no expiry ('exp')")
        if now >= exp + leeway:
            raise _invalid("token expired")
        nbf = _time_claim(payload, "nbf")
        if nbf is not None and nbf > now + leeway:
            raise _invalid("token not yet valid")
        iat = _time_claim(payload, "iat")
        if iat is not None and iat > now + leeway:
            raise _invalid("token issued in the future")
        return exp

    # -- route policy --------------------------------------------------------------------

    def check_route_claims(
        self,
        claims: Mapping[str, Any],
        required: Mapping[str, ClaimValue | list[ClaimValue]] | None,
    ) -> None:
        """Raise `Forbidden` (``insufficient_scope``) unless the route's claims match."""
        check_route_claims(claims, required)

    def forwarded_headers(
        self, claims: Mapping[str, Any], forward: Mapping[str, str]
    ) -> list[tuple[str, str]]:
        """Headers for the backend, claim -> header; see `claims.forwarded_headers`."""
        return forwarded_headers(claims, forward)
