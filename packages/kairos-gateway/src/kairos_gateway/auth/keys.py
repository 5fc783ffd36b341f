"""Which algorithms a key may verify: the key type decides, not the token header.

This is the defence against algorithm confusion: an RSA public key only ever verifies
RS*/PS* signatures, an EC key only the ES* algorithm of its curve, an Ed25519/Ed448 key
only EdDSA, and an HMAC secret only HS*. The token's ``alg`` must be in the
intersection of this set and the configured allow-list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from kairos_core.auth import HMAC_ALGORITHMS

__all__ = [
    "EC_ALGORITHM_BY_CURVE",
    "HMAC_ALGORITHMS",
    "RSA_ALGORITHMS",
    "jwk_algorithms",
    "public_key_algorithms",
]

RSA_ALGORITHMS: frozenset[str] = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
#: cryptography curve name -> the one JWS algorithm that curve serves (RFC 7518 §3.4).
EC_ALGORITHM_BY_CURVE: Mapping[str, str] = {
    "secp256r1": "ES256",
    "secp384r1": "ES384",
    "secp521r1": "ES512",
}
_JWK_EC_CURVES: Mapping[str, str] = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_JWK_OKP_CURVES = frozenset({"Ed25519", "Ed448"})


def public_key_algorithms(key: object) -> frozenset[str]:
    """The JWS algorithms a loaded public key can verify (empty: none we support)."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = EC_ALGORITHM_BY_CURVE.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def jwk_algorithms(jwk: Mapping[str, Any]) -> frozenset[str]:
    """The JWS algorithms a JWK may verify, from ``kty``/``crv``, narrowed by its ``alg``.

    Keys marked for another use (``use`` other than ``sig``, or ``key_ops`` without
    ``verify``) and symmetric (``oct``) keys serve none: a published JWKS holds public
    keys, and an HMAC secret never comes from a URL.
    """
    use = jwk.get("use")
    if use is not None and use != "sig":
        return frozenset()
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return frozenset()
    kty = jwk.get("kty")
    crv = jwk.get("crv")
    if kty == "RSA":
        algs = RSA_ALGORITHMS
    elif kty == "EC" and isinstance(crv, str) and crv in _JWK_EC_CURVES:
        algs = frozenset({_JWK_EC_CURVES[crv]})
    elif kty == "OKP" and crv in _JWK_OKP_CURVES:
        algs = frozenset({"EdDSA"})
    else:
        return frozenset()
    alg = jwk.get("alg")
    if alg is None:
        return algs
    return algs & {alg} if isinstance(alg, str) else frozenset()
