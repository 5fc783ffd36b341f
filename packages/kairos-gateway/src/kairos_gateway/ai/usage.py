"""What the ``ai`` plugin counts: requests, errors, fallbacks, tokens, cost, latency and
time to first token, per route, consumer, provider and model.

`AiUsage` is one per gateway (kept across snapshots). It answers ``GET /api/ai/usage``
(totals and per-minute series for the last hour) and exports ``kairos_ai_*`` families
to Prometheus through `AiCollector`. Consumers are bounded: past ``max_consumers``
distinct ones, new consumers are counted as ``"other"`` (label cardinality stays
bounded whatever clients send).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..metrics import Histogram

__all__ = ["AiCollector", "AiUsage", "Series"]

#: (route, consumer, provider, model)
Key = tuple[str, str, str, str]
_MINUTES: Final = 60
OTHER: Final = "other"


class Series:
    """Counters of one key."""

    __slots__ = (
        "completion_tokens",
        "cost",
        "errors",
        "estimated_completion",
        "estimated_prompt",
        "fallbacks",
        "latency",
        "prompt_tokens",
        "requests",
        "ttft",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.fallbacks = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.estimated_prompt = 0
        self.estimated_completion = 0
        self.cost = 0.0
        self.latency = Histogram()
        self.ttft = Histogram()


class _Minute:
    __slots__ = ("by_consumer", "by_model", "errors", "fallbacks", "minute")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.by_model: dict[str, int] = {}
        self.by_consumer: dict[str, int] = {}
        self.errors = 0
        self.fallbacks = 0


class AiUsage:
    def __init__(self, *, max_consumers: int = 1000, clock: Any = time.time) -> None:
        self.series: dict[Key, Series] = {}
        self._consumers: set[str] = set()
        self._max_consumers = max_consumers
        self._minutes: deque[_Minute] = deque(maxlen=_MINUTES)
        self._clock = clock

    def consumer(self, name: str) -> str:
        """``name``, or ``"other"`` once too many distinct consumers were seen."""
        if name in self._consumers:
            return name
        if len(self._consumers) >= self._max_consumers:
            return OTHER
        self._consumers.add(name)
        return name

    def of(self, route: str, consumer: str, provider: str, model: str) -> Series:
        key = (route, consumer, provider, model)
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = Series()
        return found

    def _minute(self) -> _Minute:
        minute = int(self._clock() // 60)
        minutes = self._minutes
        if not minutes or minutes[-1].minute != minute:
            minutes.append(_Minute(minute))
        return minutes[-1]

    def tokens(
        self,
        series: Series,
        model: str,
        consumer: str,
        prompt: int,
        completion: int,
        *,
        estimated: bool,
        cost: float,
    ) -> None:
        series.prompt_tokens += prompt
        series.completion_tokens += completion
        if estimated:
            series.estimated_prompt += prompt
            series.estimated_completion += completion
        series.cost += cost
        minute = self._minute()
        total = prompt + completion
        minute.by_model[model] = minute.by_model.get(model, 0) + total
        minute.by_consumer[consumer] = minute.by_consumer.get(consumer, 0) + total

    def error(self, series: Series) -> None:
        series.errors += 1
        self._minute().errors += 1

    def fallback(self, series: Series) -> None:
        series.fallbacks += 1
        self._minute().fallbacks += 1

    def report(self) -> dict[str, Any]:
        """The ``GET /api/ai/usage`` document."""
        rows = [
            {
                "route": route,
                "consumer": consumer,
                "provider": provider,
                "model": model,
                "requests": s.requests,
                "errors": s.errors,
                "fallbacks": s.fallbacks,
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "estimated_tokens": s.estimated_prompt + s.estimated_completion,
                "cost": round(s.cost, 6),
            }
            for (route, consumer, provider, model), s in sorted(self.series.items())
        ]
        minutes = [
            {
                "minute": m.minute * 60,
                "tokens_by_model": dict(m.by_model),
                "tokens_by_consumer": dict(m.by_consumer),
                "errors": m.errors,
                "fallbacks": m.fallbacks,
            }
            for m in self._minutes
        ]
        return {"usage": rows, "minutes": minutes}


_COUNTERS: Final = (
    ("requests", "requests", "Calls to providers, by the target that answered (or last failed)"),
    ("errors", "errors", "Calls that ended in an error"),
    ("fallbacks", "fallbacks", "Times a call moved on to the next target"),
    ("cost", "cost", "Cost of the tokens used, in the configured unit"),
)
_LABELS: Final = ["route", "consumer", "provider", "model"]


class AiCollector(Collector):
    def __init__(self, usage: AiUsage) -> None:
        self.usage = usage

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        series = self.usage.series
        if not series:
            return
        for attr, name, doc in _COUNTERS:
            family = CounterMetricFamily(f"kairos_ai_{name}", doc, labels=_LABELS)
            for key, s in series.items():
                family.add_metric(list(key), float(getattr(s, attr)))
            yield family
        tokens = CounterMetricFamily(
            "kairos_ai_tokens",
            "Tokens used (estimated: counted by the gateway because the provider reported none)",
            labels=[*_LABELS, "direction", "estimated"],
        )
        for key, s in series.items():
            for direction, total, guessed in (
                ("prompt", s.prompt_tokens, s.estimated_prompt),
                ("completion", s.completion_tokens, s.estimated_completion),
            ):
                tokens.add_metric([*key, direction, "false"], float(total - guessed))
                if guessed:
                    tokens.add_metric([*key, direction, "true"], float(guessed))
        yield tokens
        for attr, name, doc in (
            ("latency", "request_duration_seconds", "Time from the call to its last byte"),
            (
                "ttft",
                "time_to_first_token_seconds",
                "Time from the call to the first streamed chunk",
            ),
        ):
            histograms = HistogramMetricFamily(f"kairos_ai_{name}", doc, labels=_LABELS)
            for key, s in series.items():
                histogram: Histogram = getattr(s, attr)
                histograms.add_metric(
                    list(key), [(le, float(n)) for le, n in histogram.buckets()], histogram.sum
                )
            yield histograms
