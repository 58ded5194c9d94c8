"""Analyzer backends: `rules` (offline default), `openai` (any OpenAI-compatible server), `llamacpp` (optional)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kat.tools.context import IncidentContext

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from kat.agent.graph import Analyzer
    from kat.tools.registry import AgentTool

BACKENDS = ("rules", "openai", "llamacpp")


def make_analyzer(name: str, ctx: IncidentContext, tools: dict[str, AgentTool], **options: Any) -> Analyzer:
    """Build the named Analyzer for one incident; heavy imports happen only for the chosen one."""
    if name == "rules":
        from kat.agent.backends.rules import RulesAnalyzer

        return RulesAnalyzer(ctx)
    if name in ("openai", "llamacpp"):
        from kat.agent.backends.contract import AnalyzerContract
        from kat.agent.backends.llm import LLMAnalyzer

        contract = options.pop("contract", None) or AnalyzerContract.from_settings()
        make_chat_model: Callable[..., BaseChatModel]
        if name == "openai":
            from kat.agent.backends.openai_backend import make_chat_model as make_openai

            make_chat_model = make_openai
        else:
            from kat.agent.backends.llamacpp import make_chat_model as make_llamacpp

            make_chat_model = make_llamacpp
        model = make_chat_model(**{"max_tokens": contract.max_tokens, **options})
        return LLMAnalyzer(model, tools, name=name, tool_result_chars=options.get("tool_result_chars"), contract=contract)
    raise ValueError(f"unknown analyzer {name!r}; choose one of {', '.join(BACKENDS)}")
