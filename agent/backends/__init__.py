"""Analyzer backends: `rules` (offline default), `openai` (any OpenAI-compatible server), `llamacpp` (optional)."""

from __future__ import annotations

from typing import Any

from kat.tools.context import IncidentContext

BACKENDS = ("rules", "openai", "llamacpp")


def make_analyzer(name: str, ctx: IncidentContext, tools: dict, **options: Any):  # type: ignore[no-untyped-def]
    """Build the named Analyzer for one incident; heavy imports happen only for the chosen one."""
    if name == "rules":
        from kat.agent.backends.rules import RulesAnalyzer

        return RulesAnalyzer(ctx)
    if name == "openai":
        from kat.agent.backends.llm import LLMAnalyzer
        from kat.agent.backends.openai_backend import make_chat_model

        return LLMAnalyzer(make_chat_model(**options), tools, name="openai", tool_result_chars=options.get("tool_result_chars"))
    if name == "llamacpp":
        from kat.agent.backends.llamacpp import make_chat_model as make_llama
        from kat.agent.backends.llm import LLMAnalyzer

        return LLMAnalyzer(make_llama(**options), tools, name="llamacpp", tool_result_chars=options.get("tool_result_chars"))
    raise ValueError(f"unknown analyzer {name!r}; choose one of {', '.join(BACKENDS)}")
