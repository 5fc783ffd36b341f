"""``api-key``: a request must carry a known API key in a header, else 401.

Configured keys are kept as SHA-256 digests and the presented key's digest is compared
with each of them by `hmac.compare_digest`, so the check takes the same time whichever
key matches and however much of a wrong key is right. Because only the digest is
needed, a key may be given as ``sha256:<hex>``: ``GET /api/config`` shows plugin
settings as written, so put digests in the config, or the keys in an environment
variable named by ``keys_env``, never the keys themselves in clear.

The check runs in ``on_request`` at priority 1500, before JWT verification (1450), so
a route may require both. ``strip`` (the default) removes the header from the request
sent upstream: the backend never sees the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Annotated, Final

from kairos_core import Unauthorized
from kairos_gateway import Plugin, Policy, Request, UpstreamRequest
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

__all__ = ["MIN_KEY_LENGTH", "ApiKey", "ApiKeyConfig", "ApiKeyRequired", "digest_of", "plugin"]

#: A key given by its digest: ``sha256:`` and 64 hexadecimal digits.
DIGEST_PREFIX: Final = "sha256:"
#: Shorter keys are refused: they could be guessed.
MIN_KEY_LENGTH: Final = 16
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")  # an HTTP field name (RFC 9110)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _check_key(key: str) -> str:
    """``key`` as configured (a digest in lower case), or `ValueError` saying what is
    wrong with it without repeating it."""
    if key.startswith(DIGEST_PREFIX):
        digest = key.removeprefix(DIGEST_PREFIX)
        if not _HEX_DIGEST.fullmatch(digest):
            raise ValueError("a sha256: key must be followed by 64 hexadecimal digits")
        return DIGEST_PREFIX + digest.lower()
    if not _VISIBLE_ASCII.fullmatch(key):
        raise ValueError("a key must be printable ASCII without spaces")
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"a key must be at least {MIN_KEY_LENGTH} characters long")
    return key


def digest_of(key: str) -> bytes:
    """The SHA-256 digest a configured key stands for (a checked key, see `_check_key`)."""
    if key.startswith(DIGEST_PREFIX):
        return bytes.fromhex(key.removeprefix(DIGEST_PREFIX))
    return hashlib.sha256(key.encode()).digest()


def _env_keys(name: str) -> list[str]:
    """The keys in environment variable ``name``: comma-separated, each checked."""
    value = os.environ.get(name, "")
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        raise ValueError(f"environment variable {name} is not set or holds no key")
    for n, key in enumerate(keys, 1):
        try:
            _check_key(key)
        except ValueError as exc:
            raise ValueError(f"key {n} in environment variable {name}: {exc}") from None
    return keys


def _header_name(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise ValueError("a header name is 1 to 64 letters, digits or !#$%&'*+-.^_`|~")
    if name.lower() in {"authorization", "cookie", "host"}:
        raise ValueError(f"{name} has a meaning of its own: choose a header such as X-Api-Key")
    return name


Key = Annotated[str, AfterValidator(_check_key)]


class ApiKeyConfig(BaseModel):
    """``plugins[].config`` of ``api-key``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The request header that carries the key.
    header: Annotated[str, AfterValidator(_header_name)] = "X-Api-Key"
    #: An environment variable holding more keys, comma-separated (read when the
    #: configuration is loaded or reloaded).
    keys_env: str | None = None
    #: Accepted keys: each the key itself (16+ printable ASCII characters) or
    #: ``sha256:<hex>``, its SHA-256 digest.
    keys: Annotated[list[Key], Field(max_length=1000, validate_default=True)] = []
    #: Remove the header from the request sent upstream.
    strip: bool = True

    @field_validator("keys_env")
    @classmethod
    def _env_holds_keys(cls, name: str | None) -> str | None:
        if name is not None:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError("an environment variable name is letters, digits and _")
            _env_keys(name)
        return name

    @field_validator("keys")
    @classmethod
    def _some_key(cls, keys: list[str], info: ValidationInfo) -> list[str]:
        # keys_env is validated first; when it failed, that error is enough.
        if not keys and "keys_env" in info.data and info.data["keys_env"] is None:
            raise ValueError("list at least one key, or name an environment variable in keys_env")
        return keys

    def digests(self) -> tuple[bytes, ...]:
        """The digests of every accepted key (``keys_env`` read now)."""
        env = _env_keys(self.keys_env) if self.keys_env is not None else []
        return tuple(dict.fromkeys(digest_of(k) for k in [*self.keys, *env]))


class ApiKeyRequired(Unauthorized):
    """401 with a challenge naming the header to send (`Unauthorized` alone would send
    a Bearer challenge, which describes JWT, not this)."""

    def __init__(self, detail: str, *, header: str) -> None:
        super().__init__(detail)
        self.header = header

    def headers(self) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", f'ApiKey realm="kairos", header="{self.header}"')]


class ApiKey(Policy):
    """Refuses requests without a known key; optionally strips it before upstream."""

    __slots__ = ("_digests", "_drop", "header")

    def __init__(self, settings: ApiKeyConfig) -> None:
        self.header = settings.header
        self._digests = settings.digests()
        self._drop = settings.header.lower() if settings.strip else None

    def on_request(self, request: Request) -> None:
        values = request.headers.get_list(self.header)
        if not values:
            raise ApiKeyRequired(f"send an API key in the {self.header} header", header=self.header)
        if len(values) > 1:
            raise ApiKeyRequired(
                f"send one {self.header} header, not {len(values)}", header=self.header
            )
        presented = hashlib.sha256(values[0].encode()).digest()
        # Every digest is compared, so the time taken does not tell which key matched.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            raise ApiKeyRequired("the API key is not valid", header=self.header)

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> None:
        drop = self._drop
        if drop is not None:
            upstream.headers = [(k, v) for k, v in upstream.headers if k.lower() != drop]


plugin: Final = Plugin(
    name="api-key",
    config=ApiKeyConfig,
    policy=ApiKey,
    priority=1500,
    description="401 unless the request carries a configured API key in a header",
)
