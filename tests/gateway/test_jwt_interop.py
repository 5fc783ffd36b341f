"""Interop and JWKS: tokens minted by jwcrypto, keys served by a real local HTTP server.

The verifier uses pyjwt; every token here is minted by jwcrypto, so a shared
misreading of the specs by one library cannot hide. The JWKS server is a Tornado
application on an unused loopback port that counts its hits; the verifier's clock is
injected, so TTLs and refresh intervals are driven without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any

import pytest
from jwcrypto import jwk
from jwcrypto import jwt as jwcrypto_jwt
from kairos_core.auth import JwtConfig
from kairos_core.errors import Unauthorized
from kairos_gateway.auth import JwtVerifier
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

NOW = 1_700_000_000.0
WAIT_S = 5.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def mint(key: jwk.JWK, alg: str, *, kid: str | None = None, **claims: Any) -> str:
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    payload = {"sub": "alice", "iat": int(NOW), "exp": int(NOW) + 3600, **claims}
    token = jwcrypto_jwt.JWT(header=header, claims=payload)
    token.make_signed_token(key)
    return str(token.serialize())


def rsa_key(kid: str) -> jwk.JWK:
    return jwk.JWK.generate(kty="RSA", size=2048, kid=kid)


KEY1 = rsa_key("key-1")
KEY2 = rsa_key("key-2")
EC_KEY = jwk.JWK.generate(kty="EC", crv="P-256", kid="ec-1")


# -- static keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "key", "source"),
    [
        ("HS256", jwk.JWK.from_password("s" * 48), {"secret": "s" * 48}),
        ("RS256", KEY1, {"public_key": KEY1.export_to_pem().decode()}),
        ("ES256", EC_KEY, {"public_key": EC_KEY.export_to_pem().decode()}),
    ],
)
def test_tokens_minted_by_jwcrypto_verify(alg: str, key: jwk.JWK, source: dict[str, str]) -> None:
    verifier = JwtVerifier(
        JwtConfig.model_validate({**source, "algorithms": [alg], "audience": "kairos"}),
        clock=Clock(),
    )
    result = verifier.authenticate(f"Bearer {mint(key, alg, aud=['x', 'kairos'])}")
    assert isinstance(result, Mapping)
    assert result["sub"] == "alice"
    with pytest.raises(Unauthorized, match="audience"):
        verifier.authenticate(f"Bearer {mint(key, alg, aud='x')}")


# -- a real JWKS server ---------------------------------------------------------------


class JwksServer:
    def __init__(self) -> None:
        self.keys: list[jwk.JWK] = [KEY1]
        self.hits = 0
        self.status = 200
        self.cache_control: str | None = None
        self.extra_keys: list[dict[str, Any]] = []
        self._server: HTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def document(self) -> dict[str, Any]:
        return {"keys": [k.export_public(as_dict=True) for k in self.keys] + self.extra_keys}

    async def start(self) -> JwksServer:
        server = self

        class Handler(web.RequestHandler):
            def get(self) -> None:
                server.hits += 1
                self.set_status(server.status)
                if server.cache_control:
                    self.set_header("Cache-Control", server.cache_control)
                self.set_header("Content-Type", "application/json")
                self.write(server.document())

        sock, self.port = bind_unused_port()
        self._server = HTTPServer(web.Application([(r"/.well-known/jwks.json", Handler)]))
        self._server.add_sockets([sock])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            async with asyncio.timeout(WAIT_S):
                await self._server.close_all_connections()
            self._server = None


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = await JwksServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def make_verifier() -> AsyncIterator[Any]:
    made: list[JwtVerifier] = []

    def make(url: str, clock: Clock, **config: Any) -> JwtVerifier:
        settings = {
            "jwks_url": url,
            "algorithms": ["RS256", "PS256", "ES256"],
            "jwks_refresh_interval_s": 30,
            **config,
        }
        verifier = JwtVerifier(JwtConfig.model_validate(settings), clock=clock)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        async with asyncio.timeout(WAIT_S):
            await verifier.close()


async def settle(verifier: JwtVerifier) -> None:
    """Wait (bounded) for the JWKS fetch running now, if any."""
    assert verifier.jwks is not None
    task = verifier.jwks.fetching
    if task is not None:
        await verifier.jwks.wait(task)


def sync_claims(verifier: JwtVerifier, token: str) -> Mapping[str, Any]:
    result = verifier.authenticate(f"Bearer {token}")
    assert isinstance(result, Mapping), "a held key must answer synchronously"
    return result


async def claims_after_fetch(verifier: JwtVerifier, token: str) -> Mapping[str, Any]:
    result = verifier.authenticate(f"Bearer {token}")
    assert not isinstance(result, Mapping), "an unknown key must wait for a fetch"
    async with asyncio.timeout(WAIT_S):
        return await result


async def test_key_rotation(jwks_server: JwksServer, make_verifier: Any) -> None:
    clock = Clock()
    verifier = make_verifier(jwks_server.url, clock)
    await verifier.start()
    assert jwks_server.hits == 1
    old_token = mint(KEY1, "RS256", kid="key-1")
    assert sync_claims(verifier, old_token)["sub"] == "alice"

    jwks_server.keys = [KEY2]
    clock.now += 31  # past the refresh interval
    new_token = mint(KEY2, "RS256", kid="key-2", sub="bob")
    assert (await claims_after_fetch(verifier, new_token))["sub"] == "bob"
    assert jwks_server.hits == 2
    assert sync_claims(verifier, new_token)["sub"] == "bob"

    # key-1 left the set: its tokens, even cached ones, are refused from now on.
    with pytest.raises(Unauthorized, match="unknown signing key"):
        verifier.authenticate(f"Bearer {old_token}")
    assert jwks_server.hits == 2


async def test_bogus_kid_flood_costs_at_most_one_fetch(
    jwks_server: JwksServer, make_verifier: Any
) -> None:
    clock = Clock()
    verifier = make_verifier(jwks_server.url, clock)
    await verifier.start()
    clock.now += 31
    results = [
        verifier.authenticate(f"Bearer {mint(KEY1, 'RS256', kid=f'bogus-{i}')}") for i in range(100)
    ]
    pending = [r for r in results if isinstance(r, Awaitable)]
    async with asyncio.timeout(WAIT_S):
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
    assert len(outcomes) == 100
    assert all(isinstance(o, Unauthorized) and o.error == "invalid_token" for o in outcomes)
    assert jwks_server.hits == 2

    # Within the interval, more bogus kids are refused at once, without a fetch.
    clock.now += 29
    for i in range(100):
        with pytest.raises(Unauthorized, match="unknown signing key"):
            verifier.authenticate(f"Bearer {mint(KEY1, 'RS256', kid=f'more-{i}')}")
    await settle(verifier)
    assert jwks_server.hits == 2
    assert sync_claims(verifier, mint(KEY1, "RS256", kid="key-1"))["sub"] == "alice"


async def test_outage_keeps_the_last_good_keys(
    jwks_server: JwksServer, make_verifier: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    verifier = make_verifier(jwks_server.url, clock, jwks_cache_ttl_s=60)
    await verifier.start()
    await jwks_server.stop()
    caplog.set_level(logging.WARNING, logger="kairos.gateway")
    for i in range(3):
        clock.now += 61  # stale: each fresh token starts a background fetch, which fails
        assert sync_claims(verifier, mint(KEY1, "RS256", kid="key-1", n=i))["n"] == i
        await settle(verifier)
    warnings = [r for r in caplog.records if "JWKS fetch" in r.getMessage()]
    assert len(warnings) == 1, "one warning per failure streak"
    assert "keeping the last good keys" in warnings[0].getMessage()


async def test_server_errors_keep_the_last_good_keys(
    jwks_server: JwksServer, make_verifier: Any
) -> None:
    clock = Clock()
    verifier = make_verifier(jwks_server.url, clock, jwks_cache_ttl_s=60)
    await verifier.start()
    jwks_server.status = 503
    clock.now += 61
    assert sync_claims(verifier, mint(KEY1, "RS256", kid="key-1"))["sub"] == "alice"
    await settle(verifier)
    assert jwks_server.hits == 2
    assert sync_claims(verifier, mint(KEY1, "RS256", kid="key-1", n=2))["n"] == 2


async def test_no_keys_at_start_then_recovery(jwks_server: JwksServer, make_verifier: Any) -> None:
    clock = Clock()
    jwks_server.status = 500
    verifier = make_verifier(jwks_server.url, clock)
    async with asyncio.timeout(WAIT_S):
        await verifier.start()  # logged, not raised
    token = mint(KEY1, "RS256", kid="key-1")
    with pytest.raises(Unauthorized, match="signing keys unavailable") as info:
        verifier.authenticate(f"Bearer {token}")
    assert info.value.error == "invalid_token"
    jwks_server.status = 200
    clock.now += 30
    assert (await claims_after_fetch(verifier, token))["sub"] == "alice"


async def test_cache_control_max_age_is_honoured(
    jwks_server: JwksServer, make_verifier: Any
) -> None:
    clock = Clock()
    jwks_server.cache_control = "public, max-age=60"
    verifier = make_verifier(jwks_server.url, clock, jwks_refresh_interval_s=5)
    await verifier.start()
    clock.now += 59
    sync_claims(verifier, mint(KEY1, "RS256", kid="key-1", n=1))
    assert verifier.jwks.fetching is None
    clock.now += 2
    sync_claims(verifier, mint(KEY1, "RS256", kid="key-1", n=2))  # stale keys still serve
    assert verifier.jwks.fetching is not None
    await settle(verifier)
    assert jwks_server.hits == 2


@pytest.mark.parametrize("directive", ["no-store", "no-cache", "max-age=0"])
async def test_no_caching_directives_refresh_at_most_once_per_interval(
    jwks_server: JwksServer, make_verifier: Any, directive: str
) -> None:
    clock = Clock()
    jwks_server.cache_control = directive
    verifier = make_verifier(jwks_server.url, clock, jwks_refresh_interval_s=10)
    await verifier.start()
    for i in range(20):
        clock.now += 1
        sync_claims(verifier, mint(KEY1, "RS256", kid="key-1", n=i))
        await settle(verifier)
    assert jwks_server.hits == 1 + 2  # the start, then one fetch per 10 s


async def test_ttl_longer_than_max_age_is_capped_by_config(
    jwks_server: JwksServer, make_verifier: Any
) -> None:
    clock = Clock()
    jwks_server.cache_control = "max-age=86400"
    verifier = make_verifier(jwks_server.url, clock, jwks_cache_ttl_s=100)
    await verifier.start()
    clock.now += 101
    sync_claims(verifier, mint(KEY1, "RS256", kid="key-1"))
    await settle(verifier)
    assert jwks_server.hits == 2


async def test_jwks_key_type_and_alg_must_match_the_token(
    jwks_server: JwksServer, make_verifier: Any
) -> None:
    clock = Clock()
    pinned = KEY2.export_public(as_dict=True) | {"alg": "RS256"}
    jwks_server.keys = [KEY1, EC_KEY]
    jwks_server.extra_keys = [pinned]
    verifier = make_verifier(jwks_server.url, clock)
    await verifier.start()
    # An RSA key without "alg" serves RS* and PS*; one pinned to RS256 serves only that.
    assert sync_claims(verifier, mint(KEY1, "PS256", kid="key-1"))["sub"] == "alice"
    assert sync_claims(verifier, mint(KEY2, "RS256", kid="key-2"))["sub"] == "alice"
    assert sync_claims(verifier, mint(EC_KEY, "ES256", kid="ec-1"))["sub"] == "alice"
    for token in (mint(KEY2, "PS256", kid="key-2"), mint(KEY1, "RS256", kid="ec-1")):
        with pytest.raises(Unauthorized, match="unknown signing key"):
            verifier.authenticate(f"Bearer {token}")


async def test_kid_less_token_tries_the_matching_keys(
    jwks_server: JwksServer, make_verifier: Any
) -> None:
    clock = Clock()
    jwks_server.keys = [KEY1, KEY2]
    verifier = make_verifier(jwks_server.url, clock)
    await verifier.start()
    assert sync_claims(verifier, mint(KEY2, "RS256"))["sub"] == "alice"
    other = rsa_key("other")
    with pytest.raises(Unauthorized, match="signature"):
        verifier.authenticate(f"Bearer {mint(other, 'RS256')}")


async def test_concurrent_requests_for_a_new_kid_share_one_fetch(
    jwks_server: JwksServer, make_verifier: Any
) -> None:
    clock = Clock()
    verifier = make_verifier(jwks_server.url, clock)
    await verifier.start()
    jwks_server.keys = [KEY1, KEY2]
    clock.now += 31
    pending = [
        verifier.authenticate(f"Bearer {mint(KEY2, 'RS256', kid='key-2', n=i)}") for i in range(20)
    ]
    assert all(isinstance(p, Awaitable) for p in pending)
    async with asyncio.timeout(WAIT_S):
        results = await asyncio.gather(*pending)  # type: ignore[arg-type]
    assert [r["n"] for r in results] == list(range(20))
    assert jwks_server.hits == 2


async def test_unreachable_jwks_url_is_bounded(make_verifier: Any) -> None:
    clock = Clock()
    sock, port = bind_unused_port()  # bound, never accepting: connections hang
    sock.listen(0)
    try:
        verifier = make_verifier(f"http://127.0.0.1:{port}/jwks", clock, jwks_timeout_s=0.2)
        async with asyncio.timeout(WAIT_S):
            await verifier.start()
        assert verifier.jwks is not None
        assert not verifier.jwks.loaded
    finally:
        sock.close()


async def test_close_during_a_fetch_fails_waiters_cleanly(make_verifier: Any) -> None:
    clock = Clock()
    sock, port = bind_unused_port()  # accepts into the backlog, never answers
    sock.listen(8)
    try:
        verifier = make_verifier(f"http://127.0.0.1:{port}/jwks", clock, jwks_timeout_s=10)
        pending = verifier.authenticate(f"Bearer {mint(KEY1, 'RS256', kid='key-1')}")
        assert isinstance(pending, Awaitable)
        waiter = asyncio.ensure_future(pending)
        async with asyncio.timeout(WAIT_S):
            await verifier.close()
            with pytest.raises(Unauthorized, match="signing keys unavailable"):
                await waiter
    finally:
        sock.close()
