"""An Analyzer backed by any LangChain chat model with tool calling (openai, llamacpp, tests)."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool

from kat import prompts
from kat.agent.backends.contract import AnalyzerContract
from kat.agent.diagnosis import Diagnosis
from kat.agent.graph import SUBMIT, AgentConfig, AnalyzerStep
from kat.agent.state import AgentState
from kat.tools.evidence import UNTRUSTED_CLOSE, UNTRUSTED_OPEN, neutralise

# Small models (8k context) cannot take full tool results (~1k tokens each, 20+ per diagnosis):
# with a budget set (the contract's tool_result_chars) the model sees each result compacted: id,
# tool, status, summary, and the payload cut to that many characters. A model fine-tuned on a short
# playbook is run with the prompt and tool list it was trained on (backends/contract.py).


def compact_tool_result(content: str, artifact: Any, payload_chars: int) -> str:
    """A tool result as a small model sees it: one header line, the summary, a clipped payload."""
    if not isinstance(artifact, dict) or "tool" not in artifact:
        return content if len(content) <= 4 * payload_chars + 200 else content[: 4 * payload_chars + 200] + " ..."
    lines = [f"TOOL RESULT {artifact.get('evidence_id') or '-'} {artifact['tool']} {artifact.get('status', '')}".rstrip()]
    for key in ("message", "summary"):
        if artifact.get(key):
            lines.append(f"{key}: {artifact[key]}")
    payload = json.dumps(artifact.get("data") or {}, default=str, sort_keys=True)
    if payload_chars > 0 and payload not in ("{}", "null"):
        if len(payload) > payload_chars:
            payload = payload[:payload_chars] + f" ... [{len(payload) - payload_chars} more characters]"
        lines += [UNTRUSTED_OPEN, neutralise(payload), UNTRUSTED_CLOSE]
    return "\n".join(lines)


def compact_messages(messages: list, payload_chars: int | None) -> list:
    """The conversation with every tool result compacted (a view: the graph state keeps the full text)."""
    if payload_chars is None:
        return list(messages)
    out = []
    for m in messages:
        if isinstance(m, ToolMessage):
            m = m.model_copy(update={"content": compact_tool_result(str(m.content), m.artifact, payload_chars)})
        out.append(m)
    return out


def bound_tools(tools: dict, names: tuple[str, ...]) -> dict:
    """The tools a contract names (all when it names none); an unknown name is an error."""
    wanted = [n for n in names if n != SUBMIT]
    if not wanted:
        return tools
    unknown = [n for n in wanted if n not in tools]
    if unknown:
        raise ValueError(f"analyzer tools (KAT_ANALYZER_TOOLS): unknown tool(s) {unknown}; tools: {sorted(tools)}")
    return {n: tools[n] for n in tools if n in wanted}


def submit_tool() -> StructuredTool:
    """The completion tool: its argument is the Diagnosis itself."""

    def _submit(**kwargs: Any) -> str:  # never executed: the graph's validator handles the call
        return "accepted"

    return StructuredTool.from_function(
        func=_submit,
        name=SUBMIT,
        args_schema=Diagnosis,
        description="Finish: submit the Diagnosis. Cite only evidence ids that tools returned (e.g. 'ev-3').",
    )


class BackendUnreachable(RuntimeError):
    """The Analyzer's server cannot be reached (or refuses us): an error, not a partial answer."""


def _fatal(exc: Exception, model: Any) -> BackendUnreachable | None:
    """A connection / authentication / unknown-model error, as one line naming the URL; else None."""
    try:
        import openai
    except ImportError:  # pragma: no cover - only the openai backend raises these
        return None
    url = str(getattr(model, "openai_api_base", None) or getattr(getattr(model, "client", None), "base_url", None) or "?")
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        reason, seen, e = str(exc), set(), exc.__cause__ or exc.__context__
        while e is not None and id(e) not in seen:  # the innermost error says why (refused, DNS, timeout)
            seen.add(id(e))
            if str(e).strip():
                reason = f"{type(e).__name__}: {str(e).strip()}"
            e = e.__cause__ or e.__context__
        return BackendUnreachable(f"cannot reach the Analyzer server at {url}: {reason}")
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)):
        return BackendUnreachable(f"the Analyzer server at {url} refused the request (HTTP {exc.status_code}): {str(exc)[:300]}")
    return None


class LLMAnalyzer:
    """System prompt + conversation -> chat model with the tools bound -> one AIMessage."""

    def __init__(
        self,
        model: Any,
        tools: dict,
        name: str = "llm",
        tool_result_chars: int | None = None,
        system_prompt: str | None = None,
        contract: AnalyzerContract | None = None,
    ):
        self.name = name
        self.model = model
        self.contract = contract or AnalyzerContract.from_settings()
        self.tool_result_chars = tool_result_chars if tool_result_chars is not None else self.contract.tool_result_chars
        self.system_prompt = system_prompt or self.contract.system_prompt
        prompts.load(self.system_prompt)  # fail early on a missing prompt file
        lc_tools = [t.as_langchain() for t in bound_tools(tools, self.contract.tools).values()] + [submit_tool()]
        try:
            self.bound = model.bind_tools(lc_tools)
        except NotImplementedError:  # a model without native tool calling still gets the messages
            self.bound = model

    def step(self, state: AgentState, config: AgentConfig) -> AnalyzerStep:
        history = compact_messages(state.get("messages") or [], self.tool_result_chars)
        msgs = [SystemMessage(content=prompts.load(self.system_prompt)), *history]
        try:
            out = self.bound.invoke(msgs)
        except Exception as exc:  # context overflow, unparseable reply: the graph decides; server down: an error
            fatal = _fatal(exc, self.model)
            if fatal is not None:
                raise fatal from exc
            return AnalyzerStep(message=AIMessage(content=f"(Analyzer model error: {type(exc).__name__}: {str(exc)[:300]})"))
        if not isinstance(out, AIMessage):
            out = AIMessage(content=str(getattr(out, "content", out)))
        return AnalyzerStep(message=out)
