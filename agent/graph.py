"""The LangGraph StateGraph: Analyzer -> tools -> Analyzer ... -> validator -> answer.

Nodes: `analyzer` (any backend), `tools` (runs investigation tools, records evidence), `validate`
(checks a submitted Diagnosis against the evidence ledger), `nudge` (an Analyzer that answered
without finishing), `finalize` (honest partial answer when a budget or the retry limit is hit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field, ValidationError

from kat import prompts
from kat.agent.diagnosis import COMPONENT_OF, Diagnosis, with_data_quality
from kat.agent.partial import partial_diagnosis
from kat.agent.state import AgentState, LedgerEntry, ledger_entries
from kat.tools.registry import AgentTool
from kat.tools.telemetry.quality import DataQuality

QualityFn = Callable[[], DataQuality]

SUBMIT = "submit_diagnosis"


class AgentConfig(BaseModel):
    """Budgets and limits of one turn."""

    max_steps: int = Field(24, ge=1, description="Analyzer calls per turn")
    time_budget_s: float = Field(300.0, gt=0, description="wall-clock seconds per turn")
    max_failures: int = Field(3, ge=1, description="consecutive invalid tool calls / rejected answers before giving up")


class AnalyzerStep(BaseModel):
    """What an Analyzer returns: the message (text and/or tool calls) and optionally new hypotheses."""

    model_config = {"arbitrary_types_allowed": True}
    message: AIMessage
    hypotheses: list[dict] | None = None


class Analyzer(Protocol):
    name: str

    def step(self, state: AgentState, config: AgentConfig) -> AnalyzerStep: ...


def _calls(msg: Any) -> list[dict]:
    return list(getattr(msg, "tool_calls", None) or [])


def _invalid(msg: Any) -> list[dict]:
    return list(getattr(msg, "invalid_tool_calls", None) or [])


def _last_ai(state: AgentState) -> AIMessage | None:
    for m in reversed(state.get("messages") or []):
        if isinstance(m, AIMessage):
            return m
    return None


def _ruled_out_backed(d: Diagnosis, known: dict[str, LedgerEntry]) -> tuple[list[dict], list[str]]:
    """Ruled-out entries backed by at least one successful lookup; the rest become notes.

    A lookup that found no data (or failed) rules nothing out, whatever its text says.
    """
    kept, notes = [], []
    for r in d.alternatives_ruled_out:
        ids = [i for i in r.cited() if i in known]
        ok = [i for i in ids if known[i].status == "ok"]
        if ok:
            kept.append({"category": r.category, "why": r.why, "evidence": ok})
        else:
            what = f"its lookups ({', '.join(ids)}) returned no data or failed" if ids else "no evidence was cited for it"
            notes.append(f"{r.category} is not ruled out: {what}")
    return kept, notes


INT64 = 2**63


def _out_of_range(value: Any, path: str = "") -> str | None:
    """The first argument that cannot be stored (an int beyond 64 bits, nesting too deep), or None."""
    stack = [(value, path, 0)]
    while stack:
        v, where, depth = stack.pop()
        if depth > 32:
            return f"{where or 'arguments'} nests too deeply"
        if isinstance(v, int) and not isinstance(v, bool) and not -INT64 <= v < INT64:
            return f"{where or 'argument'}={str(v)[:40]} is out of range"
        if isinstance(v, dict):
            stack += [(x, f"{where}.{k}" if where else str(k), depth + 1) for k, x in v.items()]
        elif isinstance(v, (list, tuple)):
            stack += [(x, f"{where}[{i}]", depth + 1) for i, x in enumerate(v)]
    return None


def bounded_calls(msg: AIMessage) -> AIMessage:
    """Tool calls whose arguments cannot be recorded become invalid calls (the checkpointer would
    fail on them and end the turn in a crash); the Analyzer is told which value was at fault."""
    bad, good = [], []
    for c in msg.tool_calls or []:
        why = _out_of_range(c.get("args") or {})
        if why:
            bad.append(
                {
                    "name": c["name"],
                    "args": json.dumps(c.get("args"), default=str)[:200],
                    "id": c.get("id"),
                    "error": why,
                    "type": "invalid_tool_call",
                }
            )
        else:
            good.append(c)
    if not bad:
        return msg
    return msg.model_copy(update={"tool_calls": good, "invalid_tool_calls": [*(msg.invalid_tool_calls or []), *bad]})


def validate_diagnosis(args: dict, ledger: list[LedgerEntry], quality: DataQuality | None = None) -> tuple[Diagnosis | None, str]:
    """Parse a submitted Diagnosis and check every cited id against the ledger; (diagnosis, reason).

    With `quality`, the accepted Diagnosis carries it (status, confidence and claims adjusted).
    """
    try:
        d = Diagnosis.model_validate(args, context={"draft": True})
    except ValidationError as exc:
        return None, f"the Diagnosis does not match the schema: {exc}"
    known = {e.id: e for e in ledger}
    kb_ids = {k for e in ledger for k in e.kb_ids}
    ruled_out, notes = _ruled_out_backed(d, known)
    cited_chain = {i for link in d.causal_chain for i in link.evidence} | {e.id for e in d.evidence}
    bad = sorted(i for i in cited_chain if i not in known and i not in kb_ids)
    if bad:
        return None, (f"evidence id(s) {bad} were not returned by any tool; cite only ids from tool results (known: {sorted(known)[:40]})")
    if d.root_cause.category not in ("none", "workload_shift", "undetermined"):
        if not d.causal_chain:
            return None, "a fault diagnosis needs a causal chain from the root cause to the symptom"
        empty = [i for i, link in enumerate(d.causal_chain) if not link.evidence]
        if empty:
            return None, f"causal link(s) {empty} cite no evidence; every link must cite evidence ids"
    # The evidence list names the exact tool call behind each id (from the ledger, not the model's memory).
    items, seen = [], set()
    cited = (
        [i for link in d.causal_chain for i in link.evidence] + [e.id for e in d.evidence] + [i for r in ruled_out for i in r["evidence"]]
    )
    given = {e.id: e for e in d.evidence}
    for i in cited:
        if i in seen or i not in known:
            continue
        seen.add(i)
        e = known[i]
        items.append(
            {"id": i, "tool": e.tool, "query": e.query, "summary": given[i].summary if i in given and given[i].summary else e.summary}
        )
    data = d.model_dump()
    data["evidence"] = items
    data["alternatives_ruled_out"] = ruled_out
    data["data_quality"] = None
    if data["status"] == "degraded":
        data["status"] = "complete"  # set from the data quality below, never by the Analyzer
    if not data["root_cause"]["component"] or data["root_cause"]["component"] == "":
        data["root_cause"]["component"] = COMPONENT_OF.get(d.root_cause.category, "-")
    try:
        out = Diagnosis.model_validate(data)
    except ValidationError as exc:
        return None, f"the Diagnosis is not consistent: {exc.errors()[0]['msg']}"
    if quality is not None:
        q = quality.model_copy(deep=True)
        q.notes += notes
        out = with_data_quality(out, q)
    return out, ""


def data_quality(quality: QualityFn | None) -> DataQuality | None:
    """The bundle's data quality, or a note saying why it could not be assessed (never an exception)."""
    if quality is None:
        return None
    try:
        return quality()
    except Exception as exc:  # reporting quality must never end the graph in a crash
        q = DataQuality()
        q.notes.append(f"data quality could not be assessed: {type(exc).__name__}: {str(exc)[:200]}")
        return q


def over_budget(state: AgentState, cfg: AgentConfig) -> str:
    """Why this turn must stop (step or time budget), or "" while it may go on."""
    if state.get("turn_steps", 0) >= cfg.max_steps:
        return f"step budget exhausted ({cfg.max_steps} Analyzer steps)"
    started = state.get("turn_started") or time.time()
    if time.time() - started > cfg.time_budget_s:
        return f"time budget exhausted ({cfg.time_budget_s:.0f} s)"
    return ""


# -- nodes -------------------------------------------------------------------------------------
def analyzer_node(state: AgentState, analyzer: Analyzer, cfg: AgentConfig) -> dict:
    """One Analyzer step (text and/or tool calls), unless a budget is spent."""
    reason = over_budget(state, cfg)
    if reason:
        return {"stop_reason": reason}
    out = analyzer.step(state, cfg)
    update: dict = {"messages": [bounded_calls(out.message)], "turn_steps": state.get("turn_steps", 0) + 1}
    if out.hypotheses is not None:
        update["hypotheses"] = out.hypotheses
    return update


def _error_reply(content: str, call_id: str, name: str) -> ToolMessage:
    return ToolMessage(content=content, tool_call_id=call_id, name=name, status="error")


def _unparsed_replies(msg: AIMessage | None, what: str) -> list[ToolMessage]:
    """An error reply for each call the model's output could not be parsed into."""
    return [
        _error_reply(
            f"{what}: {call.get('error') or 'malformed arguments'}", call.get("id") or "invalid", str(call.get("name") or "unknown")
        )
        for call in _invalid(msg)
    ]


def run_tool_call(call: dict, tools: dict[str, AgentTool], evidence_id: str) -> tuple[ToolMessage, LedgerEntry | None]:
    """One tool call: the reply, and the ledger entry when the tool ran (arguments are validated here, once)."""
    name, args = call["name"], call.get("args") or {}
    tool = tools.get(name)
    if tool is None:
        return _error_reply(f"error: unknown tool {name!r}; tools: {sorted(tools) + [SUBMIT]}", call["id"], name), None
    try:
        parsed = tool.validate(args)
    except ValidationError as exc:
        return _error_reply(f"error: invalid arguments for {name}: {exc}. Correct them and call again.", call["id"], name), None
    res = tool.call(parsed)
    res.evidence_id = evidence_id
    kb = [h.get("kb_id") for h in res.data.get("hits", []) if isinstance(h, dict) and h.get("kb_id")]
    entry = LedgerEntry(
        id=evidence_id,
        tool=name,
        query=json.dumps(res.query, sort_keys=True, default=str),
        status=res.status,
        summary=res.summary or res.message,
        data=res.data,
        kb_ids=kb,
    )
    reply = ToolMessage(
        content=res.render(),
        tool_call_id=call["id"],
        name=name,
        artifact=res.model_dump(),
        status="error" if res.status == "error" else "success",
    )
    return reply, entry


def tools_node(state: AgentState, tools: dict[str, AgentTool]) -> dict:
    """Run the last Analyzer message's tool calls; each executed call gets the next evidence id."""
    msg = _last_ai(state)
    n = len(state.get("ledger") or [])
    replies: list[ToolMessage] = [
        _error_reply(
            f"error: the call to {call.get('name')!r} could not be parsed: {call.get('error') or 'malformed arguments'}. "
            f"Send the arguments as a JSON object matching the tool's schema.",
            call.get("id") or "invalid",
            str(call.get("name") or "unknown"),
        )
        for call in _invalid(msg)
    ]
    new_entries: list[dict] = []
    for call in _calls(msg):
        reply, entry = run_tool_call(call, tools, f"ev-{n + 1}")
        replies.append(reply)
        if entry is not None:
            n += 1
            new_entries.append(entry.model_dump())
    failures = 0 if new_entries else state.get("failures", 0) + 1
    return {"messages": replies, "ledger": new_entries, "failures": failures}


def validate_node(state: AgentState, quality: QualityFn | None = None) -> dict:
    """Check a submitted Diagnosis against the ledger: accepted, or rejected with the reason."""
    msg = _last_ai(state)
    replies = _unparsed_replies(msg, "error: unparseable tool call")
    accepted = None
    for call in _calls(msg):
        if call["name"] != SUBMIT:
            why = f"not run: {call['name']} was sent together with submit_diagnosis; submit_diagnosis must be the only call"
            replies.append(_error_reply(why, call["id"], call["name"]))
            continue
        if accepted is not None:
            replies.append(_error_reply("ignored: a diagnosis was already accepted", call["id"], SUBMIT))
            continue
        d, reason = validate_diagnosis(call.get("args") or {}, ledger_entries(state), data_quality(quality))
        if d is None:
            replies.append(_error_reply(f"rejected: {reason}", call["id"], SUBMIT))
        else:
            accepted = d
            replies.append(ToolMessage(content="accepted", tool_call_id=call["id"], name=SUBMIT))
    if accepted is not None:
        return {"messages": replies, "diagnosis": accepted.model_dump(), "failures": 0, "stop_reason": ""}
    return {"messages": replies, "failures": state.get("failures", 0) + 1}


def nudge_node(state: AgentState) -> dict:
    """Remind an Analyzer that answered in text during a diagnosis to submit one."""
    return {"messages": [HumanMessage(content=prompts.load("nudge"))], "failures": state.get("failures", 0) + 1}


def finalize_node(state: AgentState, cfg: AgentConfig, quality: QualityFn | None = None) -> dict:
    """The honest partial answer (or, in a chat turn, why no answer came)."""
    reason = state.get("stop_reason") or f"{cfg.max_failures} consecutive invalid tool calls or rejected answers"
    if state.get("mode") == "chat" and state.get("diagnosis"):
        return {"messages": [AIMessage(content=f"I stopped before answering: {reason}.")], "stop_reason": reason}
    d = partial_diagnosis(ledger_entries(state), reason)
    q = data_quality(quality)
    if q is not None:
        d = with_data_quality(d, q)
    return {"diagnosis": d.model_dump(), "stop_reason": reason, "messages": [AIMessage(content=f"Partial answer: {reason}.")]}


# -- routes ------------------------------------------------------------------------------------
def after_analyzer(state: AgentState, cfg: AgentConfig) -> str:
    if state.get("stop_reason"):
        return "finalize"
    msg = _last_ai(state)
    calls = _calls(msg)
    if any(c["name"] == SUBMIT for c in calls):
        return "validate"
    if calls or _invalid(msg):
        return "tools"
    if state.get("mode") == "chat" and state.get("diagnosis"):
        return END  # a plain-text answer to a follow-up question
    return "finalize" if state.get("failures", 0) + 1 >= cfg.max_failures else "nudge"


def after_tools(state: AgentState, cfg: AgentConfig) -> str:
    return "finalize" if state.get("failures", 0) >= cfg.max_failures else "analyzer"


def after_validate(state: AgentState, cfg: AgentConfig) -> str:
    msg = state["messages"][-1]
    if isinstance(msg, ToolMessage) and state.get("diagnosis") and state.get("failures", 0) == 0:
        return END
    return "finalize" if state.get("failures", 0) >= cfg.max_failures else "analyzer"


def build_graph(
    analyzer: Analyzer,
    tools: dict[str, AgentTool],
    config: AgentConfig | None = None,
    checkpointer: BaseCheckpointSaver | None = None,
    quality: QualityFn | None = None,
) -> CompiledStateGraph:
    """Compile the agent graph for one incident's tools: the nodes above, bound to this Analyzer and
    budget; `quality` gives the bundle's data quality."""
    cfg = config or AgentConfig()
    g = StateGraph(AgentState)
    g.add_node("analyzer", partial(analyzer_node, analyzer=analyzer, cfg=cfg))
    g.add_node("tools", partial(tools_node, tools=tools))
    g.add_node("validate", partial(validate_node, quality=quality))
    g.add_node("nudge", nudge_node)
    g.add_node("finalize", partial(finalize_node, cfg=cfg, quality=quality))
    g.add_edge(START, "analyzer")
    g.add_conditional_edges("analyzer", partial(after_analyzer, cfg=cfg), ["tools", "validate", "nudge", "finalize", END])
    g.add_conditional_edges("tools", partial(after_tools, cfg=cfg), ["analyzer", "finalize"])
    g.add_conditional_edges("validate", partial(after_validate, cfg=cfg), ["analyzer", "finalize", END])
    g.add_edge("nudge", "analyzer")
    g.add_edge("finalize", END)
    return g.compile(checkpointer=checkpointer)
