"""The ``ai`` plugin: a route that is an OpenAI-compatible endpoint in front of providers.

Phases:

- ``on_headers``: the body limit (``limits.max_body_bytes``).
- ``before_upstream``: the whole call. The request is read (JSON), its model resolved
  to targets, guarded (allowed models, ``max_tokens``, prompt size, prompt rules),
  its consumer's token budget reserved; a cached answer is served; else the targets are
  tried in turn, moving on after a connect error, a timeout or a ``fallback_on``
  status (a 429's ``Retry-After`` puts the target aside), each target behind its own
  circuit breaker. The answer is returned whole (usage read, translated back from
  Anthropic, cached) or, for ``stream: true``, as a `StreamedResponse` relayed event by
  event. Nothing falls back once the first byte has gone to the client.

The route's backends are never called: every request is answered here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Mapping
from time import perf_counter
from typing import Any, Final

from kairos_core import (
    BadRequest,
    CircuitOpen,
    Forbidden,
    KairosError,
    MethodNotAllowed,
    RouteNotFound,
    TooManyRequests,
    UpstreamError,
    UpstreamTimeout,
)
from kairos_core.ai import AiConfig, ModelAlias, PromptGuard, Target

from ..cache import Entry, SharedCache
from ..chain import Policy, Request, UpstreamRequest
from ..headers import header_value
from ..messages import Response, StreamedResponse
from ..ratelimit import limit_key
from ..retry import parse_retry_after
from ..services import PluginServices
from ..upstream import UpstreamError as UpstreamFailure
from ..upstream import UpstreamResponse
from ..upstream import UpstreamTimeout as UpstreamTimedOut
from . import anthropic
from .calls import Call, Choice, completion_texts, read_all, shown_consumer
from .limits import Refusal, TokenBudget
from .providers import Provider
from .relay import Relayed, StreamRelay
from .state import AiState, TargetState
from .tokens import estimate_text, prompt_texts, prompt_tokens, usage_of
from .usage import AiCollector

__all__ = ["AiPolicy", "ai_policy"]

log = logging.getLogger("kairos.gateway")

_ENDPOINTS: Final = (
    ("/chat/completions", "chat"),
    ("/completions", "completions"),
    ("/embeddings", "embeddings"),
    ("/models", "models"),
)
_JSON: Final = [("Content-Type", "application/json")]
_SSE: Final = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
#: Largest provider error body read before it is passed on.
_ERROR_BODY_MAX: Final = 64 * 1024
#: Default ``max_tokens`` for providers that require one, without ``limits.max_tokens``.
_DEFAULT_MAX_TOKENS: Final = 4096


class ModelNotFound(BadRequest):
    type = "model_not_found"
    title = "Model not found"


class PromptRefused(BadRequest):
    type = "prompt_refused"
    title = "Prompt refused"


class TokenLimitExceeded(TooManyRequests):
    type = "token_limit_exceeded"
    title = "Token limit exceeded"


class AiPolicy(Policy):
    needs_body = True

    def __init__(self, config: AiConfig, services: PluginServices) -> None:
        self.config = config
        self.pool = services.pool
        self.state = state = services.keep("ai", lambda: _new_state(services))
        self.providers = {name: Provider(name, p) for name, p in config.providers.items()}
        self.aliases: dict[str, ModelAlias] = dict(config.models)
        self.allowed = None if config.allowed_models is None else frozenset(config.allowed_models)
        self.fallback_on = frozenset(config.fallback_on)
        guard = config.guard or PromptGuard()
        flags = re.IGNORECASE if guard.ignore_case else 0
        self.deny = [(r.name, re.compile(r.pattern, flags)) for r in guard.deny]
        self.allow = [(r.name, re.compile(r.pattern, flags)) for r in guard.allow]
        self.budget: TokenBudget | None = (
            None if config.token_limits is None else state.budget(config.token_limits)
        )
        self.cache: SharedCache | None = None if config.cache is None else state.cache(config.cache)
        self.rng = random.Random()
        limits = config.limits
        self.default_max_tokens = limits.max_tokens or _DEFAULT_MAX_TOKENS
        # Targets' states exist from the start (breakers visible, kept on reload).
        for alias in self.aliases.values():
            for target in alias.targets:
                self._state_of(self.providers[target.provider], target.model)

    def _state_of(self, provider: Provider, model: str) -> TargetState:
        label = f"{provider.config.url}#{model}"
        return self.state.target(label, self.config.circuit_breaker)

    # -- phases ----------------------------------------------------------------------

    def on_headers(self, request: Request) -> None:
        request.limit_body(self.config.limits.max_body_bytes)

    async def before_upstream(
        self, request: Request, upstream: UpstreamRequest
    ) -> Response | StreamedResponse | None:
        endpoint = self._endpoint(request)
        if endpoint == "models":
            return self._models()
        body = upstream.body
        if not isinstance(body, bytes):  # needs_body: always bytes here
            raise BadRequest("the request body did not arrive whole")
        call = self._prepare(request, endpoint, body)
        if self.budget is not None:
            await self._reserve(request, call)
        try:
            if self.cache is not None and not call.stream:
                cached = await self._cached(call)
                if cached is not None:
                    await self._settle(call, 0)
                    return cached
            return await self._try_targets(request, upstream, call)
        except BaseException:
            if call.reservation is not None:
                await self._settle(call, 0)
            raise

    # -- the request -------------------------------------------------------------------

    def _endpoint(self, request: Request) -> str:
        path = request.path.rstrip("/")
        for suffix, name in _ENDPOINTS:
            if path.endswith(suffix):
                wanted = "GET" if name == "models" else "POST"
                if request.method != wanted:
                    raise MethodNotAllowed(
                        f"{request.method} is not allowed on {suffix}", allow=(wanted,)
                    )
                return name
        raise RouteNotFound(
            "this AI route serves /chat/completions, /completions, /embeddings and /models"
        )

    def _models(self) -> Response:
        names = sorted(self.aliases)
        if self.allowed is not None:
            names = [n for n in names if n in self.allowed] + sorted(
                n for n in self.allowed if n not in self.aliases
            )
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "kairos"} for n in names]
        return Response.json(200, {"object": "list", "data": data})

    def _prepare(self, request: Request, endpoint: str, raw: bytes) -> Call:
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadRequest("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: give the model to use")
        if self.allowed is not None and model not in self.allowed:
            raise Forbidden(f"model {model!r} is not allowed on this route")
        choices = self._choices(model, endpoint)
        stream = body.get("stream") is True
        if stream and endpoint == "embeddings":
            raise BadRequest("stream: embeddings are not streamed")
        limits = self.config.limits
        asked = body.get("max_completion_tokens", body.get("max_tokens"))
        if asked is not None and (
            not isinstance(asked, int) or isinstance(asked, bool) or asked < 1
        ):
            raise BadRequest(f"max_tokens must be a positive integer (got {asked!r})")
        if limits.max_tokens is not None and asked is not None and asked > limits.max_tokens:
            raise BadRequest(
                f"max_tokens must be <= {limits.max_tokens} on this route (got {asked})"
            )
        estimate = prompt_tokens(endpoint, body)
        if limits.max_prompt_tokens is not None and estimate > limits.max_prompt_tokens:
            raise BadRequest(
                f"the prompt is about {estimate} tokens; this route takes at most "
                f"{limits.max_prompt_tokens}"
            )
        if self.deny or self.allow:
            self._guard(endpoint, body)
        added_usage = False
        if stream and endpoint != "embeddings":
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                body["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
                added_usage = True
        consumer = self.state.usage.consumer(
            shown_consumer(self._consumer(request, self.config.consumer), self.config.consumer)
        )
        return Call(
            endpoint=endpoint,
            body=body,
            model=model,
            choices=choices,
            consumer=consumer,
            prompt_estimate=estimate,
            stream=stream,
            added_usage=added_usage,
            started=perf_counter(),
        )

    def _choices(self, model: str, endpoint: str) -> list[Choice]:
        alias = self.aliases.get(model)
        if alias is not None:
            targets = self._ordered(alias)
        elif self.config.direct_models and "/" in model:
            provider, _, name = model.partition("/")
            if provider not in self.providers or not name:
                raise ModelNotFound(f"no provider named {provider!r} for model {model!r}")
            targets = [Target(provider=provider, model=name)]
        else:
            known = ", ".join(sorted(self.aliases)) or "none"
            raise ModelNotFound(f"no model {model!r} on this route (models: {known})")
        choices = [
            Choice(p, t, self._state_of(p, t.model))
            for t in targets
            if (p := self.providers[t.provider]).serves(endpoint)
        ]
        if not choices:
            raise BadRequest(f"model {model!r} has no provider that serves {endpoint}")
        return choices

    def _ordered(self, alias: ModelAlias) -> list[Target]:
        targets = list(alias.targets)
        if len(targets) < 2 or alias.strategy == "in_order":
            return targets
        if alias.strategy == "weighted":
            first = self.rng.choices(targets, weights=[t.weight for t in targets])[0]
        else:  # latency: the lowest observed; never measured ones first (to learn them)

            def latency(t: Target) -> float:
                state = self._state_of(self.providers[t.provider], t.model)
                return -1.0 if state.latency_s is None else state.latency_s

            first = min(targets, key=latency)
        targets.remove(first)
        return [first, *targets]

    def _guard(self, endpoint: str, body: dict[str, Any]) -> None:
        text = "\n".join(prompt_texts(endpoint, body, roles=True))
        for name, pattern in self.deny:
            if pattern.search(text):
                raise PromptRefused(f"the prompt matches the deny rule {name!r}")
        if self.allow and not any(pattern.search(text) for _, pattern in self.allow):
            rules = ", ".join(repr(name) for name, _ in self.allow)
            raise PromptRefused(f"the prompt matches none of the allow rules ({rules})")

    @staticmethod
    def _consumer(request: Request, key: str) -> str:
        claims = request.claims
        user = claims.get("sub") if claims else None
        route = request.route
        return limit_key(
            key,
            client_ip=request.client_ip,
            user=str(user) if user is not None else None,
            route_template=route.template if route is not None else "",
            headers=request.headers,
        )

    # -- token limits ------------------------------------------------------------------

    async def _reserve(self, request: Request, call: Call) -> None:
        assert self.budget is not None
        asked = call.body.get("max_completion_tokens", call.body.get("max_tokens"))
        tokens = call.prompt_estimate + (asked if isinstance(asked, int) else 0)
        key = self._consumer(request, self.budget.limits.key)
        result = await self.budget.reserve(key, tokens)
        if isinstance(result, Refusal):
            if result.window == "store":
                raise KairosError("the token-limit store is unavailable")
            reset = max(1, int(result.retry_after_s + 0.999))
            raise TokenLimitExceeded(
                f"this consumer's tokens per {result.window} are used up ({result.used} of "
                f"{result.limit}; this call needs about {tokens})",
                retry_after_s=result.retry_after_s,
                extra_headers=[
                    (
                        "RateLimit-Policy",
                        f'"tokens";q={result.limit};w={60 if result.window == "minute" else 86400}',
                    ),
                    ("RateLimit", f'"tokens";r={max(0, result.limit - result.used)};t={reset}'),
                ],
            )
        call.reservation = result

    async def _settle(self, call: Call, used: int) -> None:
        reservation, call.reservation = call.reservation, None
        if reservation is not None:
            await reservation.settle(used)

    # -- the response cache ------------------------------------------------------------

    def _cache_key(self, call: Call) -> str:
        document = json.dumps(call.body, sort_keys=True, separators=(",", ":"))
        consumer = call.consumer if self.config.cache and self.config.cache.per_consumer else ""
        digest = hashlib.sha256(f"{call.endpoint}\n{consumer}\n{document}".encode()).hexdigest()
        return f"ai:{digest}"

    async def _cached(self, call: Call) -> Response | None:
        assert self.cache is not None
        try:
            entry = await self.cache.store.get(self._cache_key(call), {})
        except Exception:
            return None
        if entry is None or not entry.fresh(time.time()):
            return None
        return Response(entry.status, entry.body, [*entry.headers, ("X-Cache", "HIT")])

    def _store(self, call: Call, body: bytes) -> None:
        cache, config = self.cache, self.config.cache
        if cache is None or config is None:
            return
        entry = Entry(
            status=200,
            headers=list(_JSON),
            body=body,
            stored_at=time.time(),
            initial_age=0.0,
            ttl=float(config.ttl_s),
        )

        async def put() -> None:
            try:
                await cache.store.put(self._cache_key(call), {}, entry)
            except Exception:
                log.warning("ai response cache write failed", exc_info=True)

        cache.background(put())

    # -- calling the targets -----------------------------------------------------------

    async def _try_targets(
        self, request: Request, upstream: UpstreamRequest, call: Call
    ) -> Response | StreamedResponse:
        usage = self.state.usage
        last_error: KairosError | None = None
        last_answer: Response | None = None
        skipped_open: list[float] = []
        route = request.route
        template = route.template if route is not None else ""
        for n, choice in enumerate(call.choices):
            series = usage.of(template, call.consumer, choice.provider.name, choice.target.model)
            if n > 0 and (last_error is not None or last_answer is not None):
                usage.fallback(call.series or series)
            call.series = series
            permit = choice.state.breaker.acquire()
            if permit is None:
                skipped_open.append(choice.state.breaker.retry_after_s())
                continue
            series.requests += 1
            target, headers, data = choice.provider.call(
                call.endpoint,
                call.body,
                choice.target.model,
                upstream.headers,
                self.default_max_tokens,
            )
            config = choice.provider.config
            sent = perf_counter()
            choice.state.inflight += 1
            try:
                response = await self.pool.request(
                    choice.provider.endpoint,
                    "POST",
                    target,
                    headers,
                    data,
                    connect_timeout=config.connect_timeout_ms / 1000,
                    read_timeout=config.read_timeout_ms / 1000,
                )
            except UpstreamFailure as exc:
                choice.state.inflight -= 1
                permit.failure()
                usage.error(series)
                log.warning(
                    "ai provider call failed",
                    extra={
                        "fields": {
                            "request_id": request.request_id,
                            "target": choice.label,
                            "kind": exc.kind,
                        }
                    },
                )
                last_answer = None
                last_error = (
                    UpstreamTimeout(f"{choice.label} did not answer in time")
                    if isinstance(exc, UpstreamTimedOut)
                    else UpstreamError(f"{choice.label} could not be reached")
                )
                continue
            except BaseException:
                choice.state.inflight -= 1
                permit.release()
                raise
            choice.state.observe(perf_counter() - sent)
            status = response.status
            if status in self.fallback_on or status >= 500:
                choice.state.inflight -= 1
                answer = await self._provider_error(choice, response)
                if status == 429:
                    permit.success()  # throttled, not broken: set aside for Retry-After
                    wait = parse_retry_after(
                        header_value(response.headers, "retry-after"), time.time
                    )
                    choice.state.breaker.force_open(min(wait or 1.0, self.config.max_cooldown_s))
                elif status >= 500:
                    permit.failure()
                else:
                    permit.success()
                usage.error(series)
                last_error, last_answer = None, answer
                if status not in self.fallback_on:
                    await self._settle(call, 0)
                    return answer
                continue
            permit.response(status)
            if status in (401, 403):
                choice.state.inflight -= 1
                response.abort()
                usage.error(series)
                log.error(
                    "ai provider refused the gateway's credentials",
                    extra={"fields": {"target": choice.label, "status": status}},
                )
                raise UpstreamError(f"{choice.label} refused the gateway's credentials")
            if status >= 400:
                choice.state.inflight -= 1
                usage.error(series)
                answer = await self._provider_error(choice, response)
                await self._settle(call, 0)
                return answer
            if call.stream:
                relay = StreamRelay(
                    response,
                    translate=choice.target.model if choice.provider.kind == "anthropic" else None,
                    added_usage=call.added_usage,
                    prompt_estimate=call.prompt_estimate,
                    done=functools.partial(self._relayed, call, choice),
                )
                return StreamedResponse(200, list(_SSE), relay)
            try:
                return await self._whole(call, choice, response)
            finally:
                choice.state.inflight -= 1
        await self._settle(call, 0)
        if last_answer is not None:
            return last_answer
        if last_error is not None:
            raise last_error
        raise CircuitOpen(
            f"every target of model {call.model!r} is set aside (failing or throttled)",
            retry_after_s=min(skipped_open) if skipped_open else 1.0,
        )

    async def _provider_error(self, choice: Choice, response: UpstreamResponse) -> Response:
        """A provider's error answer as the client gets it: OpenAI's error shape, the
        key scrubbed, ``Retry-After`` kept."""
        try:
            raw = await read_all(response, _ERROR_BODY_MAX, choice.label)
        except KairosError:
            raw = b""
        text = choice.provider.scrub(raw.decode("utf-8", "replace"))
        try:
            document: Any = json.loads(text)
        except ValueError:
            document = None
        if choice.provider.kind == "anthropic" or not (
            isinstance(document, dict) and isinstance(document.get("error"), dict)
        ):
            document = anthropic.error_body(document, response.status)
        retry_after = header_value(response.headers, "retry-after")
        extra = [] if retry_after is None else [("Retry-After", retry_after)]
        return Response.json(response.status, document, extra)

    async def _whole(self, call: Call, choice: Choice, response: UpstreamResponse) -> Response:
        raw = await read_all(response, self.config.limits.max_response_bytes, choice.label)
        try:
            document = json.loads(raw)
        except ValueError:
            raise UpstreamError(f"{choice.label} answered with invalid JSON") from None
        if choice.provider.kind == "anthropic":
            document = anthropic.from_message(document, choice.target.model)
        counted = usage_of(document)
        if counted is None:
            completion = sum(estimate_text(t) for t in completion_texts(document))
            prompt, estimated = call.prompt_estimate, True
        else:
            (prompt, completion), estimated = counted, False
        self._account(call, choice, prompt, completion, estimated=estimated, first_byte=None)
        await self._settle(call, prompt + completion)
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        if self.cache is not None:
            self._store(call, body)
        return Response(200, body, list(_JSON))

    async def _relayed(self, call: Call, choice: Choice, relayed: Relayed) -> None:
        """A streamed answer ended: release and account the call."""
        choice.state.inflight -= 1
        self._account(
            call,
            choice,
            relayed.prompt,
            relayed.completion,
            estimated=relayed.estimated,
            first_byte=relayed.first_byte,
        )
        if not relayed.whole and call.series is not None:
            self.state.usage.error(call.series)
        await self._settle(call, relayed.prompt + relayed.completion)

    def _account(
        self,
        call: Call,
        choice: Choice,
        prompt: int,
        completion: int,
        *,
        estimated: bool,
        first_byte: float | None,
    ) -> None:
        series = call.series
        if series is None:
            return
        now = perf_counter()
        series.latency.observe(now - call.started)
        if first_byte is not None:
            series.ttft.observe(first_byte - call.started)
        cost = self.config.costs.get(choice.label) or self.config.costs.get(choice.target.model)
        price = 0.0
        if cost is not None:
            price = (prompt * cost.prompt_per_1k + completion * cost.completion_per_1k) / 1000
        self.state.usage.tokens(
            series, call.model, call.consumer, prompt, completion, estimated=estimated, cost=price
        )


def _new_state(services: PluginServices) -> AiState:
    state = AiState(services.clock)
    if services.metrics is not None:
        services.metrics.register(AiCollector(state.usage))
    services.closers.append(state.aclose)
    return state


def ai_policy(config: AiConfig, services: PluginServices) -> AiPolicy:
    return AiPolicy(config, services)


def usage_report(services: PluginServices) -> Mapping[str, Any] | None:
    """``GET /api/ai/usage``'s document, None when no route uses the plugin."""
    state = services.kept.get("ai")
    if not isinstance(state, AiState):
        return None
    report = state.usage.report()
    report["targets"] = [
        {
            "target": label,
            "breaker": t.breaker.state,
            "inflight": t.inflight,
            "latency_ms": None if t.latency_s is None else round(t.latency_s * 1000, 1),
        }
        for label, t in sorted(state.targets().items())
    ]
    return report
