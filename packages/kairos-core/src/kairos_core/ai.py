"""Settings of the bundled ``ai`` plugin: a route that is an OpenAI-compatible endpoint
in front of LLM providers.

Enabled like any plugin, on the route that serves ``/v1/...``::

    {"external_path": "/v1/{*rest}", "internal_path": "/v1/{*rest}", "methods": ["GET", "POST"],
     "plugins": [{"name": "ai", "config": {
        "providers": {"openai": {"kind": "openai", "url": "https://api.openai.com/v1",
                                 "api_key_env": "OPENAI_API_KEY"}},
        "models": {"fast": {"targets": [{"provider": "openai", "model": "gpt-4o-mini"}]}}}}]}

A route with the plugin needs no ``backends``: the providers are its upstreams. See
docs/ai-gateway.md. Everything here is pure; the gateway builds the policy once per
snapshot (`kairos_gateway.ai`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from ._model import KairosModel
from .cache import MemoryStore, RedisStore
from .ratelimit import client_key
from .resilience import CircuitBreakerConfig

__all__ = [
    "AI_PLUGIN",
    "AiConfig",
    "AiLimits",
    "AiTargetStatus",
    "AiUsageMinute",
    "AiUsageReport",
    "AiUsageRow",
    "ModelAlias",
    "ModelCost",
    "PromptGuard",
    "PromptRule",
    "ProviderConfig",
    "ResponseCacheConfig",
    "Target",
    "TokenLimits",
    "TokenStoreMemory",
    "TokenStoreRedis",
    "ai_entry",
]

#: The plugin's name in ``plugins[].name``.
AI_PLUGIN: Final = "ai"

_NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$")]
_HEADER = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", max_length=128)]
_ENV = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
_DEFAULT_FALLBACK = (429, 500, 502, 503, 504)


class ProviderConfig(KairosModel):
    """One provider: where it is, how it speaks, and the key the gateway sends it.

    ``kind`` ``openai`` covers every OpenAI-compatible server (OpenAI, vLLM, Ollama's
    ``/v1``, LM Studio, Azure OpenAI with ``auth_header: "api-key"`` and
    ``query: {"api-version": ...}``); ``anthropic`` speaks the Messages API, translated
    from and to the OpenAI chat shape.
    """

    kind: Literal["openai", "anthropic"]
    #: Base URL the API paths are appended to, e.g. ``https://api.openai.com/v1``.
    url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=2048)]
    #: The API key, from an environment variable or a file (read when the config is
    #: loaded; never written back, logged or returned by the API). Neither: no key.
    api_key_env: _ENV | None = None
    api_key_file: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    #: Header the key goes in: ``authorization`` (``Bearer <key>``, OpenAI's),
    #: ``api-key`` (Azure's) or ``x-api-key`` (Anthropic's). Default by ``kind``.
    auth_header: Literal["authorization", "api-key", "x-api-key"] | None = None
    #: Query parameters added to every call (Azure's ``api-version``).
    query: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=512)]] = (
        Field(default_factory=dict, max_length=16)
    )
    #: Extra request headers (not secrets: they are shown by the API).
    headers: dict[_HEADER, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=32
    )
    #: Sent as ``anthropic-version`` (kind ``anthropic``).
    anthropic_version: Annotated[str, Field(max_length=64)] = "2023-06-01"
    tls_verify: bool = True
    tls_ca_file: str | None = None
    connect_timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 5_000
    #: Longest silence of the provider: before the response head, then between chunks.
    read_timeout_ms: Annotated[int, Field(ge=1, le=3_600_000)] = 120_000

    @model_validator(mode="after")
    def _one_key_source(self) -> ProviderConfig:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("give api_key_env or api_key_file, not both")
        return self

    @property
    def key_header(self) -> str:
        if self.auth_header is not None:
            return self.auth_header
        return "x-api-key" if self.kind == "anthropic" else "authorization"

    def api_key(self) -> str | None:
        """The key, read now (raises `ValueError` saying where it was looked for)."""
        if self.api_key_env is not None:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ValueError(f"environment variable {self.api_key_env} is not set")
            return value.strip()
        if self.api_key_file is not None:
            try:
                value = Path(self.api_key_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read {self.api_key_file}: {exc.strerror}") from None
            if not value:
                raise ValueError(f"{self.api_key_file} is empty")
            return value
        return None


class Target(KairosModel):
    """A provider and the model name it knows."""

    provider: _NAME
    model: Annotated[str, Field(min_length=1, max_length=256)]
    #: Share of the traffic with ``strategy: "weighted"``.
    weight: Annotated[int, Field(ge=1, le=1000)] = 1


class ModelAlias(KairosModel):
    """What a client's ``"model": "<alias>"`` means: targets tried in turn."""

    targets: Annotated[list[Target], Field(min_length=1, max_length=16)]
    #: Which target goes first: ``in_order`` (the list's order), ``weighted`` (by
    #: weight, at random), ``latency`` (lowest observed latency). The others follow as
    #: fallbacks, in the list's order.
    strategy: Literal["in_order", "weighted", "latency"] = "in_order"


class PromptRule(KairosModel):
    name: _NAME
    pattern: Annotated[str, Field(min_length=1, max_length=1024)]

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class PromptGuard(KairosModel):
    """Regular expressions over the prompt's text (every message but the assistant's).

    A ``deny`` rule that matches refuses the request (400, naming the rule). With
    ``allow`` rules, a prompt must match at least one.
    """

    deny: list[PromptRule] = Field(default_factory=list, max_length=256)
    allow: list[PromptRule] = Field(default_factory=list, max_length=256)
    #: Case-insensitive matching.
    ignore_case: bool = True


class AiLimits(KairosModel):
    #: Largest prompt, in (estimated) tokens.
    max_prompt_tokens: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    #: Largest ``max_tokens`` a request may ask for; also the default sent to
    #: providers that require one (Anthropic) when the request has none.
    max_tokens: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    #: Largest request body, in bytes (413 beyond).
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 4 * 1024 * 1024
    #: Largest non-streamed provider response read, in bytes (502 beyond).
    max_response_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = 16 * 1024 * 1024


class TokenStoreMemory(KairosModel):
    type: Literal["memory"] = "memory"
    #: Consumers tracked at most (the least recently seen are forgotten first).
    max_keys: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000


class TokenStoreRedis(KairosModel):
    """Shared by every gateway and worker naming the same Redis."""

    type: Literal["redis"]
    url: Annotated[str, Field(pattern=r"^rediss?://", max_length=2048)]
    prefix: Annotated[str, Field(max_length=128)] = "kairos:ai:"
    #: A Redis call slower than this counts as Redis being down.
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.25
    #: Redis down: let requests through (true) or refuse them with 503 (false).
    fail_open: bool = True


class TokenLimits(KairosModel):
    """Tokens (prompt + completion) a consumer may use, per minute and per day.

    Checked before the call with the prompt's estimate (plus the ``max_tokens`` asked
    for, when given), settled with the real usage after.
    """

    #: Who a consumer is, as a rate limit's ``key``: ``user`` (the JWT subject), ``ip``,
    #: ``header:<name>`` (an API key's or a tenant's header), ``route``, ...
    key: str = "user"
    tokens_per_minute: Annotated[int, Field(ge=1, le=10**12)] | None = None
    tokens_per_day: Annotated[int, Field(ge=1, le=10**13)] | None = None
    store: Annotated[TokenStoreMemory | TokenStoreRedis, Field(discriminator="type")] = Field(
        default_factory=TokenStoreMemory
    )

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: object) -> str:
        return client_key(value)

    @model_validator(mode="after")
    def _some_limit(self) -> TokenLimits:
        if self.tokens_per_minute is None and self.tokens_per_day is None:
            raise ValueError("give tokens_per_minute, tokens_per_day or both")
        return self


class ModelCost(KairosModel):
    """Price of 1,000 tokens, in any currency unit (reported as ``cost``)."""

    prompt_per_1k: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    completion_per_1k: Annotated[float, Field(ge=0, le=1e6)] = 0.0


class ResponseCacheConfig(KairosModel):
    """Exact-match cache of non-streamed chat, completion and embedding answers, in one
    of the ``cache`` plugin's stores (memory, bounded by bytes; or Redis, shared)."""

    ttl_s: Annotated[int, Field(ge=1, le=30 * 86400)] = 300
    #: The consumer is part of the key: one consumer never gets another's answer.
    per_consumer: bool = True
    store: Annotated[MemoryStore | RedisStore, Field(discriminator="type")] = Field(
        default_factory=MemoryStore
    )


class AiConfig(KairosModel):
    """The ``ai`` plugin's settings (see the module docstring)."""

    providers: Annotated[dict[_NAME, ProviderConfig], Field(min_length=1, max_length=64)]
    #: Model aliases: ``"model": "fast"`` in a request -> these targets.
    models: dict[_NAME, ModelAlias] = Field(default_factory=dict, max_length=1024)
    #: Let a request name ``"<provider>/<model>"`` directly (no alias needed).
    direct_models: bool = False
    #: When set, only these model names (aliases or ``provider/model``) are served.
    allowed_models: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = None
    #: Provider statuses that move on to the next target (before any byte reached the
    #: client). Connect errors and timeouts always do.
    fallback_on: list[Annotated[int, Field(ge=400, le=599)]] = Field(
        default_factory=lambda: list(_DEFAULT_FALLBACK), max_length=64
    )
    #: Longest ``Retry-After`` of a 429 that puts a target aside (seconds); a provider
    #: asking for longer is put aside this long.
    max_cooldown_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    limits: AiLimits = Field(default_factory=AiLimits)
    guard: PromptGuard | None = None
    token_limits: TokenLimits | None = None
    #: Who a consumer is for metrics and usage (as ``token_limits.key``).
    consumer: str = "user"
    #: Cost per model (the provider's model name, or ``provider/model``).
    costs: dict[Annotated[str, Field(max_length=256)], ModelCost] = Field(
        default_factory=dict, max_length=1024
    )
    cache: ResponseCacheConfig | None = None
    #: Breaker of each target (consecutive failures, then a pause).
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)

    @field_validator("consumer", mode="before")
    @classmethod
    def _consumer(cls, value: object) -> str:
        return client_key(value)

    @model_validator(mode="after")
    def _targets_known(self) -> AiConfig:
        for alias, entry in self.models.items():
            for i, target in enumerate(entry.targets):
                if target.provider not in self.providers:
                    known = ", ".join(sorted(self.providers))
                    raise ValueError(
                        f"models.{alias}.targets[{i}].provider: no provider named "
                        f"{target.provider!r} (providers: {known})"
                    )
        if not self.models and not self.direct_models:
            raise ValueError(
                "give models (aliases) or direct_models: true, else no model is served"
            )
        return self

    @model_validator(mode="after")
    def _keys_readable(self) -> AiConfig:
        for name, provider in self.providers.items():
            try:
                provider.api_key()
            except ValueError as exc:
                raise ValueError(f"providers.{name}: {exc}") from None
        return self


def ai_entry(plugins: list[Any] | None) -> bool:
    """Does this ``plugins`` list (raw or parsed) enable the ``ai`` plugin?"""
    for entry in plugins or ():
        name = entry.get("name") if isinstance(entry, dict) else getattr(entry, "name", None)
        enabled = (
            entry.get("enabled", True)
            if isinstance(entry, dict)
            else getattr(entry, "enabled", True)
        )
        if name == AI_PLUGIN and enabled:
            return True
    return False


# -- GET /api/ai/usage ---------------------------------------------------------------


class AiUsageRow(KairosModel):
    """Totals of one route, consumer, provider and model since the gateway started."""

    route: str
    consumer: str
    provider: str
    model: str
    requests: int
    errors: int
    fallbacks: int
    prompt_tokens: int
    completion_tokens: int
    #: Part of the tokens the gateway estimated (the provider reported no usage).
    estimated_tokens: int
    cost: float


class AiUsageMinute(KairosModel):
    """Tokens used in one minute (``minute``: its start, POSIX seconds)."""

    minute: int
    tokens_by_model: dict[str, int]
    tokens_by_consumer: dict[str, int]
    errors: int
    fallbacks: int


class AiTargetStatus(KairosModel):
    """One provider URL and model: its breaker and latency to the response head."""

    target: str
    breaker: Literal["closed", "open", "half_open"]
    inflight: int
    latency_ms: float | None


class AiUsageReport(KairosModel):
    """``GET /api/ai/usage``: totals, the last hour by minute, and the targets."""

    usage: list[AiUsageRow]
    minutes: list[AiUsageMinute]
    targets: list[AiTargetStatus]
