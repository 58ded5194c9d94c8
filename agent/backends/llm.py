"""An Analyzer backed by any LangChain chat model with tool calling (openai, llamacpp, tests)."""
from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, SystemMessage
from langchain_core.tools import StructuredTool

import prompts
from agent.diagnosis import Diagnosis
from agent.graph import SUBMIT, AgentConfig, AnalyzerStep
from agent.state import AgentState


def submit_tool() -> StructuredTool:
    """The completion tool: its argument is the Diagnosis itself."""

    def _submit(**kwargs: Any) -> str:  # never executed: the graph's validator handles the call
        return "accepted"

    return StructuredTool.from_function(
        func=_submit, name=SUBMIT, args_schema=Diagnosis,
        description="Finish: submit the Diagnosis. Cite only evidence ids that tools returned (e.g. 'ev-3').")


class LLMAnalyzer:
    """System prompt + conversation -> chat model with the tools bound -> one AIMessage."""

    def __init__(self, model: Any, tools: dict, name: str = "llm"):
        self.name = name
        self.model = model
        lc_tools = [t.as_langchain() for t in tools.values()] + [submit_tool()]
        try:
            self.bound = model.bind_tools(lc_tools)
        except NotImplementedError:  # a model without native tool calling still gets the messages
            self.bound = model

    def step(self, state: AgentState, config: AgentConfig) -> AnalyzerStep:
        msgs = [SystemMessage(content=prompts.load("system")), *(state.get("messages") or [])]
        try:
            out = self.bound.invoke(msgs)
        except Exception as exc:  # server down, context overflow, unparseable reply: the graph decides
            return AnalyzerStep(message=AIMessage(content=f"(Analyzer model error: {type(exc).__name__}: {str(exc)[:300]})"))
        if not isinstance(out, AIMessage):
            out = AIMessage(content=str(getattr(out, "content", out)))
        return AnalyzerStep(message=out)
