"""The bundled ``ai`` plugin: an OpenAI-compatible endpoint in front of LLM providers
(see docs/ai-gateway.md and `policy`)."""

from .policy import AiPolicy, ai_policy, usage_report

__all__ = ["AiPolicy", "ai_policy", "usage_report"]
