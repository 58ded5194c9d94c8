"""Graph state: messages, the evidence ledger, open hypotheses, budgets and the answer."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from pydantic import BaseModel, Field


class LedgerEntry(BaseModel):
    """One recorded tool result: what may be cited as evidence."""

    id: str
    tool: str
    query: str = Field(description="the exact arguments as JSON")
    status: Literal["ok", "no_data", "error"]
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)
    kb_ids: list[str] = Field(default_factory=list, description="knowledge ids seen in this result")


class Hypothesis(BaseModel):
    category: str
    status: Literal["open", "supported", "ruled_out"] = "open"
    note: str = ""


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    ledger: Annotated[list[dict], operator.add]  # LedgerEntry dicts, append-only
    hypotheses: list[dict]  # Hypothesis dicts, replaced by the Analyzer
    diagnosis: dict | None  # accepted Diagnosis (model_dump)
    bundle: str
    mode: Literal["diagnose", "chat"]
    turn_steps: int  # Analyzer calls in the current turn
    failures: int  # consecutive invalid tool calls / rejected answers
    turn_started: float  # time.time() when the current turn began
    stop_reason: str


def ledger_entries(state: Mapping[str, Any]) -> list[LedgerEntry]:
    """The ledger of a graph state (an AgentState, or the plain dict a checkpoint snapshot gives)."""
    return [LedgerEntry.model_validate(e) for e in state.get("ledger") or []]
