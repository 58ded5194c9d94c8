"""Valid tool-call rate: how many of the tool calls an Analyzer attempted were well-formed.

Definition (per run; aggregated over runs as sum(valid) / sum(attempted)):

* Only the Analyzer's own replies count: every AIMessage of the diagnosis turn except the
  harness/graph's stand-ins (a "(Analyzer model error: ...)" message written when the server
  call failed, and the "Partial answer: ..." written by the finalize node).
* attempted = parsed calls (`tool_calls`) + calls the client could not parse
  (`invalid_tool_calls`: bad JSON arguments) + calls left as plain text (the server's tool
  parser did not recognise them): each `<tool_call>` block still in the content, or, when there
  is none, each JSON object naming a known tool (`"name": "metric_lookup"`) or each
  `known_tool(` in the content.
  Plus one failed attempt for each reply with no call at all (`no_call_replies`): every
  Analyzer reply must be a call, the diagnosis too (`submit_diagnosis`); the graph nudges a
  plain-text reply and gives up after `max_failures`. So a model that only writes prose has a
  rate of 0, not an undefined one.
* valid = parsed calls whose name is a tool the Analyzer was given (including
  `submit_diagnosis`) and whose arguments validate against that tool's pydantic args schema
  (the Diagnosis model for `submit_diagnosis`). Schema only: a submission that validates but
  cites unknown evidence ids is a valid call that the graph then rejects.
* rate = valid / attempted; None only when there was no reply at all.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

_SKIP_PREFIXES = ("(Analyzer model error", "Partial answer:")
_TAG = re.compile(r"<tool_call>")


class ToolCallStats(BaseModel):
    attempted: int = 0
    valid: int = 0
    parsed: int = Field(0, description="calls the client parsed (tool_calls)")
    unparsed: int = Field(0, description="invalid_tool_calls: the arguments were not valid JSON")
    in_text: int = Field(0, description="calls left in the reply text (server tool parser did not recognise them)")
    unknown_tool: int = 0
    bad_args: int = 0
    replies: int = Field(0, description="Analyzer replies counted")
    no_call_replies: int = Field(0, description="replies with no tool call attempt at all; each counts as one failed attempt")

    @property
    def rate(self) -> float | None:
        return round(self.valid / self.attempted, 4) if self.attempted else None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "\n".join(str(b.get("text", "")) if isinstance(b, dict) else str(b) for b in content)
    return str(content or "")


def text_calls(text: str, names: set[str]) -> int:
    """Tool-call attempts left in plain text (see the module docstring)."""
    n = len(_TAG.findall(text))
    if n:
        return n
    if not names:
        return 0
    alt = "|".join(re.escape(x) for x in sorted(names, key=len, reverse=True))
    n = len(re.findall(r'"name"\s*:\s*"(?:' + alt + r')"', text))
    if n:
        return n
    return len(re.findall(r"\b(?:" + alt + r")\s*\(", text))


def tool_call_stats(messages: list[Any], schemas: dict[str, Any]) -> ToolCallStats:
    """Count over the AIMessages in `messages`; `schemas` maps tool name -> pydantic model (or None)."""
    from langchain_core.messages import AIMessage

    from kat.agent.graph import SUBMIT

    if SUBMIT not in schemas:
        from kat.agent.diagnosis import Diagnosis

        schemas = {**schemas, SUBMIT: Diagnosis}
    names = set(schemas)
    st = ToolCallStats()
    for m in messages:
        if not isinstance(m, AIMessage):
            continue
        text = _text(m.content)
        if text.startswith(_SKIP_PREFIXES) and not m.tool_calls:
            continue
        st.replies += 1
        calls = list(m.tool_calls or [])
        bad = list(getattr(m, "invalid_tool_calls", None) or [])
        in_text = text_calls(text, names)
        st.parsed += len(calls)
        st.unparsed += len(bad)
        st.in_text += in_text
        st.attempted += len(calls) + len(bad) + in_text
        if not (calls or bad or in_text):
            st.no_call_replies += 1
            st.attempted += 1
        for c in calls:
            model = schemas.get(c.get("name"))
            if c.get("name") not in names:
                st.unknown_tool += 1
                continue
            try:
                if model is not None:
                    model.model_validate(c.get("args") or {})
            except ValidationError:
                st.bad_args += 1
                continue
            st.valid += 1
    return st
