"""Providers as the gateway calls them: where, with which key, in which shape.

`Provider` is built once per snapshot from a `ProviderConfig` (the key is read then);
`Provider.call` gives the path, headers and body of one call for an endpoint and a
model, translated for Anthropic.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from kairos_core.ai import ProviderConfig

from ..upstream import Endpoint
from . import anthropic

__all__ = ["ENDPOINT_PATHS", "Provider"]

#: The gateway's endpoint names and the path each has at an OpenAI-compatible provider.
ENDPOINT_PATHS: Final = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
#: Client headers never passed on: the gateway sends its own credentials.
CREDENTIAL_HEADERS: Final = frozenset(
    {"authorization", "api-key", "x-api-key", "cookie", "proxy-authorization"}
)
_FORWARDED: Final = frozenset({"x-request-id", "traceparent", "tracestate", "user-agent"})


class Provider:
    __slots__ = ("_base", "_key_header", "_query", "config", "endpoint", "key", "name")

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        parts = urlsplit(config.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.endpoint = Endpoint(
            scheme=parts.scheme,
            host=host,
            port=port,
            tls_verify=config.tls_verify,
            tls_ca_file=config.tls_ca_file,
        )
        self._base = parts.path.rstrip("/")
        self._query = "?" + urlencode(config.query) if config.query else ""
        #: The API key (None: the provider needs none). Never logged or shown.
        self.key = config.api_key()
        self._key_header = config.key_header

    @property
    def kind(self) -> str:
        return self.config.kind

    def serves(self, endpoint: str) -> bool:
        return self.kind == "openai" or endpoint == "chat"

    def call(
        self,
        endpoint: str,
        body: dict[str, Any],
        model: str,
        client_headers: list[tuple[str, str]],
        default_max_tokens: int,
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """Target, headers (with ``Host``) and body of a call to ``model``."""
        if self.kind == "anthropic":
            path = "/messages"
            document = anthropic.to_messages(body, model, default_max_tokens)
        else:
            path = ENDPOINT_PATHS[endpoint]
            document = {**body, "model": model}
        data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        headers = [
            ("Host", self.endpoint.host_header),
            ("Content-Type", "application/json"),
            ("Accept", "text/event-stream" if body.get("stream") else "application/json"),
        ]
        headers += [(n, v) for n, v in client_headers if n.lower() in _FORWARDED]
        headers += list(self.config.headers.items())
        key = self.key
        if key is not None:
            if self._key_header == "authorization":
                headers.append(("Authorization", f"Bearer {key}"))
            else:
                headers.append((self._key_header, key))
        if self.kind == "anthropic":
            headers.append(("anthropic-version", self.config.anthropic_version))
        return self._base + path + self._query, headers, data

    def scrub(self, text: str) -> str:
        """``text`` without the key in it (a provider's error may quote it)."""
        key = self.key
        if key and len(key) >= 4 and key in text:
            text = text.replace(key, "[redacted]")
        return text
