"""JwtVerifier with static keys: token rules, security cases, route claims, the cache.

Tokens are minted with pyjwt here; tests/gateway/test_jwt_interop.py mints them with
another library and covers JWKS.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from kairos_core.auth import JwtConfig
from kairos_core.errors import Forbidden, Unauthorized
from kairos_gateway.auth import JwtVerifier, TokenCache, forwarded_headers

NOW = 1_700_000_000.0
SECRET = "k" * 64  # long enough for HS512 (RFC 7518 §3.2)
ISSUER = "https://idp.example"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _pem(public_key: Any) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
RSA_PEM = _pem(RSA_KEY.public_key())
EC_PEM = _pem(EC_KEY.public_key())
ED_PEM = _pem(ED_KEY.public_key())
SIGNING = {"rsa": RSA_KEY, "ec": EC_KEY, "ed": ED_KEY, "secret": SECRET}
PUBLIC = {"rsa": RSA_PEM, "ec": EC_PEM, "ed": ED_PEM}


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "kairos",
        "sub": "alice",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "roles": ["reader", "writer"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(payload: dict[str, Any] | None = None, *, key: str = "secret", alg: str = "HS256") -> str:
    return jwt.encode(payload if payload is not None else claims(), SIGNING[key], algorithm=alg)


def verifier(key: str = "secret", clock: Clock | None = None, **config: Any) -> JwtVerifier:
    source = {"secret": SECRET} if key == "secret" else {"public_key": PUBLIC[key]}
    settings = {"issuer": ISSUER, "audience": "kairos", **source, **config}
    return JwtVerifier(JwtConfig.model_validate(settings), clock=clock or Clock())


def verify(v: JwtVerifier, token: str) -> Mapping[str, Any]:
    result = v.authenticate(f"Bearer {token}")
    assert isinstance(result, Mapping), "static keys must answer synchronously"
    return result


def rejection(v: JwtVerifier, authorization: str | None) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        v.authenticate(authorization)
    return info.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(alg: str, signature: str = "") -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}.{signature}"


# -- valid tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        ("secret", "HS256"),
        ("secret", "HS384"),
        ("secret", "HS512"),
        ("rsa", "RS256"),
        ("rsa", "PS256"),
        ("ec", "ES256"),
        ("ed", "EdDSA"),
    ],
)
def test_valid_token_verifies(key: str, alg: str) -> None:
    v = verifier(key, algorithms=[alg])
    result = verify(v, mint(key=key, alg=alg))
    assert result["sub"] == "alice"
    assert result["roles"] == ["reader", "writer"]


@pytest.mark.parametrize(
    ("overrides", "config"),
    [
        ({"exp": int(NOW) - 59}, {}),  # expired, but within the 60 s leeway
        ({"nbf": int(NOW) + 59}, {}),
        ({"iat": int(NOW) + 59}, {}),
        ({"aud": ["other", "kairos"]}, {}),
        ({"aud": "kairos"}, {"audience": ["other", "kairos"]}),
        ({"aud": "anything"}, {"audience": None}),  # no audience configured: not checked
        ({"iss": "whoever"}, {"issuer": None}),
        ({"tenant": "acme"}, {"required_claims": ["tenant"]}),
        ({"exp": NOW + 0.5}, {}),  # NumericDate may be fractional
    ],
)
def test_edge_cases_that_pass(overrides: dict[str, Any], config: dict[str, Any]) -> None:
    assert verify(verifier(**config), mint(claims(**overrides)))["sub"] == "alice"


# -- rejected tokens ------------------------------------------------------------------


def _tamper_payload(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64(json.dumps(claims(sub='mallory')).encode())}.{signature}"


def _tamper_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{header}.{payload}.{flipped}{signature[1:]}"


INVALID_TOKENS: list[tuple[str, dict[str, Any], Any, str]] = [
    ("expired", {}, lambda: mint(claims(exp=int(NOW) - 61)), "token expired"),
    ("exp exactly at leeway", {}, lambda: mint(claims(exp=int(NOW) - 60)), "token expired"),
    ("nbf in future", {}, lambda: mint(claims(nbf=int(NOW) + 61)), "not yet valid"),
    ("iat in future", {}, lambda: mint(claims(iat=int(NOW) + 61)), "issued in the future"),
    ("exp missing", {}, lambda: mint(claims(exp=None)), "no expiry"),
    ("exp not a number", {}, lambda: mint(claims(exp="tomorrow")), "'exp'"),
    ("exp is a bool", {}, lambda: mint(claims(exp=True)), "'exp'"),
    ("wrong iss", {}, lambda: mint(claims(iss="https://evil.example")), "issuer"),
    ("iss missing", {}, lambda: mint(claims(iss=None)), "'iss'"),
    ("wrong aud (string)", {}, lambda: mint(claims(aud="other")), "audience"),
    ("wrong aud (list)", {}, lambda: mint(claims(aud=["a", "b"])), "audience"),
    (
        "wrong aud (configured list)",
        {"audience": ["x", "y"]},
        lambda: mint(claims(aud=["a", "kairos"])),
        "audience",
    ),
    ("aud missing", {}, lambda: mint(claims(aud=None)), "'aud'"),
    (
        "missing required claim",
        {"required_claims": ["tenant"]},
        lambda: mint(),
        "'tenant'",
    ),
    ("tampered payload", {}, lambda: _tamper_payload(mint()), "signature"),
    ("tampered signature", {}, lambda: _tamper_signature(mint()), "signature"),
    (
        "signed with another secret",
        {},
        lambda: jwt.encode(claims(), "z" * 64, algorithm="HS256"),
        "signature",
    ),
    ("alg not in allow-list", {}, lambda: mint(alg="HS512"), "algorithm not allowed"),
    ("alg none", {}, lambda: unsigned("none", "c2ln"), "algorithm not allowed"),
    ("alg None", {}, lambda: unsigned("None", "c2ln"), "algorithm not allowed"),
    ("alg NONE", {}, lambda: unsigned("NONE", "c2ln"), "algorithm not allowed"),
    ("alg nOnE", {}, lambda: unsigned("nOnE", "c2ln"), "algorithm not allowed"),
    ("bad base64 header", {}, lambda: "a.b.c", "malformed token"),
    ("non-JSON header", {}, lambda: f"{b64(b'not json')}.{b64(b'{}')}.c2ln", "malformed"),
    ("JSON array header", {}, lambda: f"{b64(b'[1]')}.{b64(b'{}')}.c2ln", "malformed"),
    ("non-JSON payload", {}, lambda: mint_raw_payload(b"not json"), "malformed"),
]


def mint_raw_payload(payload: bytes) -> str:
    return jwt.api_jws.encode(payload, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("config", "make", "detail"),
    [case[1:] for case in INVALID_TOKENS],
    ids=[case[0] for case in INVALID_TOKENS],
)
def test_invalid_token(config: dict[str, Any], make: Any, detail: str) -> None:
    token = make()
    error = rejection(verifier(**config), f"Bearer {token}")
    assert error.status == 401
    assert error.error == "invalid_token"
    assert detail in error.detail
    assert token not in error.detail
    assert SECRET not in error.detail
    assert error.headers() == [("WWW-Authenticate", 'Bearer realm="kairos", error="invalid_token"')]


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_without_signature_is_malformed(alg: str) -> None:
    error = rejection(verifier(), f"Bearer {unsigned(alg)}")
    assert error.error == "invalid_token"  # RFC 6750 3.1: a malformed token


def test_alg_none_is_refused_even_if_configured() -> None:
    with pytest.raises(ValueError, match="never allowed"):
        JwtConfig.model_validate({"secret": SECRET, "algorithms": ["none"]})


# -- algorithm confusion --------------------------------------------------------------


def test_hs256_signed_with_the_rsa_public_key_is_rejected() -> None:
    # The classic attack: the attacker knows the public key and uses its PEM as an
    # HMAC secret. pyjwt refuses PEM HMAC keys, so sign by hand.
    import hashlib
    import hmac

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(RSA_PEM.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{body}.{b64(mac)}"
    error = rejection(verifier("rsa", algorithms=["RS256"]), f"Bearer {forged}")
    assert (error.error, error.detail) == ("invalid_token", "token algorithm not allowed")


def test_rs256_token_against_hmac_verifier_is_rejected() -> None:
    error = rejection(verifier(), f"Bearer {mint(key='rsa', alg='RS256')}")
    assert (error.error, error.detail) == ("invalid_token", "token algorithm not allowed")


def test_algorithm_must_fit_the_key_type() -> None:
    # ES256 is allowed by config, but the key is RSA: an ES256 token is refused.
    v = verifier("rsa", algorithms=["RS256", "ES256"])
    error = rejection(v, f"Bearer {mint(key='ec', alg='ES256')}")
    assert error.detail == "token algorithm not allowed"
    assert verify(v, mint(key="rsa", alg="RS256"))["sub"] == "alice"


def test_public_key_that_fits_no_algorithm_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="cannot verify"):
        verifier("ec", algorithms=["RS256"])


def test_pem_as_hmac_secret_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="secret cannot be used for HS256"):
        JwtVerifier(JwtConfig.model_validate({"secret": RSA_PEM, "algorithms": ["HS256"]}))


def test_secret_too_short_for_hs512_is_a_config_error() -> None:
    config = JwtConfig.model_validate({"secret": "s" * 32, "algorithms": ["HS256", "HS512"]})
    with pytest.raises(ValueError, match="too weak for HS512"):
        JwtVerifier(config)


# -- the Authorization header ---------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "Basic YWxpY2U6c2VjcmV0", "Token abc", "Bearer\tabc"])
def test_no_bearer_credentials_get_no_error_code(value: str | None) -> None:
    error = rejection(verifier(), value)
    assert error.error is None
    assert error.headers() == [("WWW-Authenticate", 'Bearer realm="kairos"')]


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer    "])
def test_a_bearer_scheme_without_a_token_is_invalid_request(value: str) -> None:
    error = rejection(verifier(), value)
    assert (error.status, error.error) == (401, "invalid_request")


@pytest.mark.parametrize(
    "value",
    [
        "Bearer abc",  # 1 segment
        "Bearer abc.def",  # 2 segments
        "Bearer a.b.c.d",
        "Bearer a..c",
        "Bearer !!!.def.ghi",  # not base64url
        "Bearer eyJh=.eyJh.sig",  # padding is not base64url in JWS
        "Bearer a.b.c extra",
        "Bearer " + "a" * 17_000,  # over MAX_TOKEN_CHARS (16 KiB)
    ],
)
def test_a_malformed_token_is_invalid_token(value: str) -> None:
    """RFC 6750 3.1: ``invalid_token`` for a token "expired, revoked, malformed, or
    invalid for other reasons"; ``invalid_request`` is for a malformed request."""
    error = rejection(verifier(), value)
    assert (error.status, error.error) == (401, "invalid_token")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
@pytest.mark.parametrize("spaces", [" ", "   "])
def test_scheme_is_case_insensitive_and_spaces_are_flexible(scheme: str, spaces: str) -> None:
    result = verifier().authenticate(f"{scheme}{spaces}{mint()}")
    assert isinstance(result, Mapping)


@pytest.mark.parametrize(
    "value",
    [
        "Bearer " + "a" * 1_000_000,
        "Bearer " + ".".join(["eyJ" + "a" * 333_333] * 3),
        "A" * 1_000_000,
        "Bearer " + mint() + "a" * 1_000_000,
    ],
    ids=["one segment", "three segments", "no scheme", "valid prefix"],
)
def test_a_megabyte_header_is_rejected_quickly(value: str) -> None:
    v = verifier()
    started = time.perf_counter()
    error = rejection(v, value)
    assert time.perf_counter() - started < 0.05
    assert error.status == 401
    assert len(error.detail) < 100


# -- claims ---------------------------------------------------------------------------


def test_claims_are_read_only() -> None:
    result = verify(verifier(), mint())
    with pytest.raises(TypeError):
        result["sub"] = "mallory"  # type: ignore[index]


ROUTE_CLAIMS: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    ({"role": "admin"}, {"role": "admin"}, True),
    ({"role": "admin"}, {"role": "user"}, False),
    ({"role": ["admin", "ops"]}, {"role": "ops"}, True),
    ({"role": ["admin", "ops"]}, {"role": "user"}, False),
    ({"roles": "admin"}, {"roles": ["reader", "admin"]}, True),
    ({"roles": ["admin", "ops"]}, {"roles": ["reader", "ops"]}, True),
    ({"roles": ["admin"]}, {"roles": ["reader", "writer"]}, False),
    ({"level": 3}, {"level": 3}, True),
    ({"level": 3}, {"level": "3"}, False),
    ({"level": "3"}, {"level": 3}, False),
    ({"level": [1, 3]}, {"level": 3}, True),
    ({"admin": True}, {"admin": True}, True),
    ({"admin": True}, {"admin": False}, False),
    ({"admin": True}, {"admin": 1}, False),
    ({"level": 1}, {"level": True}, False),
    ({"scope": "write"}, {"scope": "read write"}, True),
    ({"scope": "admin"}, {"scope": "read write"}, False),
    ({"scp": ["write"]}, {"scp": "read write"}, True),
    ({"role": "admin"}, {}, False),  # missing claim
    ({"role": "admin", "tenant": "acme"}, {"role": "admin", "tenant": "evil"}, False),
    ({"role": "admin", "tenant": "acme"}, {"role": "admin", "tenant": "acme"}, True),
    ({"role": "admin"}, {"role": None}, False),
]


@pytest.mark.parametrize(("required", "token_claims", "allowed"), ROUTE_CLAIMS)
def test_route_claims(
    required: dict[str, Any], token_claims: dict[str, Any], allowed: bool
) -> None:
    v = verifier()
    if allowed:
        v.check_route_claims(token_claims, required)
        return
    with pytest.raises(Forbidden) as info:
        v.check_route_claims(token_claims, required)
    assert (info.value.status, info.value.error) == (403, "insufficient_scope")
    assert info.value.headers() == [
        ("WWW-Authenticate", 'Bearer realm="kairos", error="insufficient_scope"')
    ]


@pytest.mark.parametrize("required", [None, {}])
def test_no_route_claims_allow_anything(required: dict[str, Any] | None) -> None:
    verifier().check_route_claims({}, required)


def test_forwarded_headers() -> None:
    token_claims = {
        "sub": "alice",
        "n": 3,
        "ok": True,
        "roles": ["a", "b"],
        "org": {"id": 7},
        "evil": "x\r\nX-Admin: 1",
        "nul": "a\x00b",
        "lf": "a\nb",
        "latin": "Jos\u00e9",
        "wide": "\u6771\u4eac",
    }
    forward = {k: f"X-Claim-{k}" for k in [*token_claims, "absent"]}
    assert forwarded_headers(token_claims, forward) == [
        ("X-Claim-sub", "alice"),
        ("X-Claim-n", "3"),
        ("X-Claim-ok", "true"),
        ("X-Claim-roles", '["a","b"]'),
        ("X-Claim-org", '{"id":7}'),
        ("X-Claim-latin", "Jos\u00e9"),
    ]
    assert verifier().forwarded_headers(token_claims, {"sub": "X-User"}) == [("X-User", "alice")]


# -- the verified-token cache ---------------------------------------------------------


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = jwt.PyJWT.decode_complete

    def counting(self: jwt.PyJWT, token: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(token)
        return original(self, token, *args, **kwargs)

    monkeypatch.setattr(jwt.PyJWT, "decode_complete", counting)
    return calls


def test_repeated_token_is_served_from_the_cache(decode_calls: list[str]) -> None:
    v = verifier()
    token = mint()
    first = verify(v, token)
    second = verify(v, token)
    assert second is first
    assert decode_calls == [token]


def test_cache_entry_never_outlives_exp(decode_calls: list[str]) -> None:
    clock = Clock()
    v = verifier(clock=clock)
    token = mint(claims(exp=int(NOW) + 10))
    verify(v, token)
    clock.now = NOW + 9.9
    verify(v, token)
    assert len(decode_calls) == 1
    clock.now = NOW + 10  # at exp: re-verified (still inside the leeway, so accepted)
    verify(v, token)
    assert len(decode_calls) == 2
    clock.now = NOW + 70  # past exp + leeway: rejected, although it was cached
    assert rejection(v, f"Bearer {token}").detail == "token expired"


def test_cache_is_a_bounded_lru(decode_calls: list[str]) -> None:
    v = verifier(cache_size=3)
    tokens = [mint(claims(sub=f"user{i}")) for i in range(5)]
    for token in tokens[:3]:
        verify(v, token)
    verify(v, tokens[0])  # most recently used: survives the next two insertions
    for token in tokens[3:]:
        verify(v, token)
    assert v.token_cache is not None
    assert len(v.token_cache) == 3
    decode_calls.clear()
    verify(v, tokens[0])
    verify(v, tokens[4])
    assert decode_calls == []
    verify(v, tokens[1])  # evicted
    assert decode_calls == [tokens[1]]


def test_cache_size_zero_disables_the_cache(decode_calls: list[str]) -> None:
    v = verifier(cache_size=0)
    token = mint()
    verify(v, token)
    verify(v, token)
    assert len(decode_calls) == 2
    assert v.token_cache is None


def test_rejected_tokens_are_not_cached(decode_calls: list[str]) -> None:
    v = verifier()
    token = mint(claims(iss="https://evil.example"))
    for _ in range(2):
        rejection(v, f"Bearer {token}")
    assert len(decode_calls) == 2


def test_token_cache_unit() -> None:
    cache = TokenCache(2)
    cache.put("a", {"n": 1}, expires_at=10, now=0)
    cache.put("b", {"n": 2}, expires_at=10, now=0)
    cache.put("late", {"n": 3}, expires_at=5, now=5)  # already expired: not stored
    assert len(cache) == 2
    assert cache.get("a", 9.99) == {"n": 1}
    assert cache.get("a", 10) is None
    assert len(cache) == 1
    with pytest.raises(ValueError, match="max_entries"):
        TokenCache(-1)
