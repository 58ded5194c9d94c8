"""The `rules` Analyzer: emits the playbook's tool calls and answers, as AIMessages, through the graph."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from kat.agent.graph import SUBMIT, AgentConfig, AnalyzerStep
from kat.agent.rules import followup, playbook
from kat.agent.rules.topology import Topo
from kat.agent.state import AgentState, LedgerEntry, ledger_entries
from kat.tools.context import IncidentContext


class RulesAnalyzer:
    """Deterministic expert playbook; reads tool results from the evidence ledger, never log text as orders."""

    name = "rules"

    def __init__(self, ctx: IncidentContext):
        self.ctx = ctx
        self._topo: Topo | None = None

    @property
    def topo(self) -> Topo:
        if self._topo is None:
            b = self.ctx.bundle
            self._topo = Topo.from_manifest(b.manifest, b.ranks)
        return self._topo

    def step(self, state: AgentState, config: AgentConfig) -> AnalyzerStep:
        ledger = ledger_entries(state)
        diagnosis = state.get("diagnosis")
        if state.get("mode") == "chat" and diagnosis:
            return self._follow_up(state, diagnosis, ledger)
        calls = playbook.plan_next(ledger, self.topo)
        hyps = playbook.hypotheses(ledger, self.topo)
        if calls:
            names = sorted({c["name"] for c in calls})
            return AnalyzerStep(message=AIMessage(content=f"Gathering evidence: {', '.join(names)}.", tool_calls=calls), hypotheses=hyps)
        args = playbook.compose(ledger, self.topo)
        return AnalyzerStep(
            message=AIMessage(content="Submitting the diagnosis.", tool_calls=[playbook.call(SUBMIT, args)]), hypotheses=hyps
        )

    def _follow_up(self, state: AgentState, diagnosis: dict, ledger: list[LedgerEntry]) -> AnalyzerStep:
        msgs = state.get("messages") or []
        question, answered = "", None
        # The question is the last human message; a tool result after it answers our own call.
        for m in reversed(msgs):
            if isinstance(m, HumanMessage):
                question = str(m.content)
                break
        if msgs and isinstance(msgs[-1], ToolMessage):
            ids = {e.id for e in ledger}
            art = getattr(msgs[-1], "artifact", None) or {}
            ev = art.get("evidence_id") if isinstance(art, dict) else None
            answered = next((e for e in ledger if e.id == ev), None) if ev in ids else None
            if answered is None:
                return AnalyzerStep(message=AIMessage(content=f"That lookup failed: {str(msgs[-1].content)[:300]}"))
        text, calls = followup.respond(question, diagnosis, ledger, self.topo, answered)
        if calls:
            return AnalyzerStep(message=AIMessage(content="Looking that up.", tool_calls=calls))
        return AnalyzerStep(message=AIMessage(content=text or ""))
