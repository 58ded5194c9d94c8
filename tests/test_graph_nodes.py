"""The graph's nodes and routes one at a time, as plain functions (no compiled graph, no bundle)."""

from __future__ import annotations

import time
from typing import Any, cast

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import END
from pydantic import BaseModel, Field, field_validator

from kat.agent import graph as g
from kat.agent.demo import DEMO_INCIDENT
from kat.agent.graph import AgentConfig, AnalyzerStep
from kat.agent.state import AgentState, LedgerEntry
from kat.tools.context import IncidentContext
from kat.tools.evidence import ToolResult
from kat.tools.registry import AgentTool
from tests.agent_fakes import diagnosis_args, tc

CFG = AgentConfig(max_steps=3, time_budget_s=60, max_failures=2)
VALIDATIONS: list[int] = []


class EchoArgs(BaseModel):
    n: int = Field(1, ge=1)

    @field_validator("n")
    @classmethod
    def _count(cls, v: int) -> int:
        VALIDATIONS.append(v)
        return v


def _echo(ctx: Any, args: EchoArgs) -> ToolResult:
    return ToolResult(tool="echo", status="ok", query=args.model_dump(), summary=f"echo {args.n}", data={"n": args.n})


# The context opens its bundle lazily; the echo runner never reads it.
TOOLS = {"echo": AgentTool("echo", "echo n", EchoArgs, _echo, IncidentContext(DEMO_INCIDENT))}


def _state(*messages: Any, **kw: Any) -> AgentState:
    base: dict = {"messages": list(messages), "turn_steps": 0, "failures": 0, "turn_started": time.time(), "mode": "diagnose"}
    return cast(AgentState, base | kw)  # any subset of the state's keys, as the graph's nodes see it


class _Scripted:
    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0

    def step(self, state: AgentState, config: AgentConfig) -> AnalyzerStep:
        self.calls += 1
        return AnalyzerStep(message=AIMessage(content="thinking"), hypotheses=[{"category": "none"}])


def test_over_budget_names_the_budget() -> None:
    assert g.over_budget(_state(), CFG) == ""
    assert "step budget" in g.over_budget(_state(turn_steps=3), CFG)
    assert "time budget" in g.over_budget(_state(turn_started=time.time() - 61), CFG)


def test_analyzer_node_steps_or_stops_without_calling_the_model() -> None:
    a = _Scripted()
    out = g.analyzer_node(_state(turn_steps=1), a, CFG)
    assert out["turn_steps"] == 2 and out["hypotheses"] == [{"category": "none"}] and a.calls == 1
    out = g.analyzer_node(_state(turn_steps=3), a, CFG)
    assert out == {"stop_reason": "step budget exhausted (3 Analyzer steps)"} and a.calls == 1


def test_run_tool_call_validates_once_and_records_evidence() -> None:
    VALIDATIONS.clear()
    reply, entry = g.run_tool_call(tc("echo", {"n": 4}), TOOLS, "ev-7")
    assert VALIDATIONS == [4], "arguments must be validated exactly once"
    assert entry is not None and (entry.id, entry.tool, entry.summary, entry.data) == ("ev-7", "echo", "echo 4", {"n": 4})
    assert reply.status == "success" and reply.artifact["evidence_id"] == "ev-7"


def test_run_tool_call_errors_reach_the_model_without_evidence() -> None:
    reply, entry = g.run_tool_call(tc("nope", {}), TOOLS, "ev-1")
    assert entry is None and reply.status == "error" and "unknown tool 'nope'" in str(reply.content)
    reply, entry = g.run_tool_call(tc("echo", {"n": 0}), TOOLS, "ev-1")
    assert entry is None and "invalid arguments for echo" in str(reply.content) and "greater than or equal to 1" in str(reply.content)


def test_tools_node_numbers_evidence_after_the_ledger_and_counts_failures() -> None:
    ledger = [LedgerEntry(id="ev-1", tool="echo", query="{}", status="ok", summary="").model_dump()]
    msg = AIMessage(content="", tool_calls=[tc("echo", {"n": 2}, 0), tc("nope", {}, 1), tc("echo", {"n": 3}, 2)])
    out = g.tools_node(_state(msg, ledger=ledger, failures=1), TOOLS)
    assert [e["id"] for e in out["ledger"]] == ["ev-2", "ev-3"] and out["failures"] == 0
    assert [m.status for m in out["messages"]] == ["success", "error", "success"]
    bad = AIMessage(
        content="", invalid_tool_calls=[{"name": "echo", "args": "{n:", "id": "x", "error": "bad json", "type": "invalid_tool_call"}]
    )
    out = g.tools_node(_state(bad, failures=1), TOOLS)
    assert out["ledger"] == [] and out["failures"] == 2 and "could not be parsed: bad json" in str(out["messages"][0].content)


def test_validate_node_accepts_rejects_and_refuses_mixed_calls() -> None:
    ledger = [LedgerEntry(id="ev-1", tool="outpost_detect", query='{"max_anomalies": 12}', status="ok", summary="s").model_dump()]
    ok = AIMessage(content="", tool_calls=[tc("submit_diagnosis", diagnosis_args(["ev-1"])), tc("echo", {}, 1)])
    out = g.validate_node(_state(ok, ledger=ledger, failures=1))
    assert out["failures"] == 0 and out["diagnosis"]["evidence"][0]["query"] == '{"max_anomalies": 12}'
    assert [str(m.content)[:7] for m in out["messages"]] == ["accepte", "not run"]
    bad = AIMessage(content="", tool_calls=[tc("submit_diagnosis", diagnosis_args(["ev-9"]))])
    out = g.validate_node(_state(bad, ledger=ledger))
    assert "diagnosis" not in out and out["failures"] == 1 and "ev-9" in str(out["messages"][0].content)


def test_nudge_and_finalize() -> None:
    out = g.nudge_node(_state(failures=0))
    assert isinstance(out["messages"][0], HumanMessage) and out["failures"] == 1
    out = g.finalize_node(_state(stop_reason="time budget exhausted (60 s)"), CFG)
    assert out["diagnosis"]["status"] == "partial" and out["stop_reason"].startswith("time budget")
    out = g.finalize_node(_state(mode="chat", diagnosis={"x": 1}), CFG)
    assert "diagnosis" not in out and "2 consecutive" in str(out["messages"][0].content)


def test_routes() -> None:
    submit = AIMessage(content="", tool_calls=[tc("submit_diagnosis", {})])
    call = AIMessage(content="", tool_calls=[tc("echo", {})])
    text = AIMessage(content="I think it is the GPU.")
    assert g.after_analyzer(_state(submit, stop_reason="x"), CFG) == "finalize"
    assert g.after_analyzer(_state(submit), CFG) == "validate"
    assert g.after_analyzer(_state(call), CFG) == "tools"
    assert g.after_analyzer(_state(text), CFG) == "nudge"
    assert g.after_analyzer(_state(text, failures=1), CFG) == "finalize"
    assert g.after_analyzer(_state(text, mode="chat", diagnosis={"x": 1}), CFG) == END
    assert g.after_tools(_state(failures=1), CFG) == "analyzer" and g.after_tools(_state(failures=2), CFG) == "finalize"
    accepted = ToolMessage(content="accepted", tool_call_id="c", name="submit_diagnosis")
    assert g.after_validate(_state(accepted, diagnosis={"x": 1}), CFG) == END
    assert g.after_validate(_state(accepted, failures=1), CFG) == "analyzer"
    assert g.after_validate(_state(accepted, failures=2), CFG) == "finalize"
