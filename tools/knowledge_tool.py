"""`knowledge_search`: the LMDI knowledge base (mechanisms, look-alikes, how to confirm, remediation)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from kat.tools.context import IncidentContext
from kat.tools.evidence import ToolResult, clip_text

NAME = "knowledge_search"
DESCRIPTION = (
    "Search KAT's knowledge base on distributed-inference faults: what a symptom means, how to tell "
    "look-alikes apart, how to confirm, how to fix. Optional filters: category (taxonomy value) and "
    "component. Hits carry 'kb:<doc>#<section>' ids."
)


class KnowledgeSearchArgs(BaseModel):
    query: str = Field(description="symptom-style question or keywords")
    k: int = Field(3, ge=1, le=8)
    category: str | None = None
    component: str | None = None


def run(ctx: IncidentContext, args: KnowledgeSearchArgs) -> ToolResult:
    q = args.model_dump(exclude_none=True)
    try:
        from kat.knowledge.api import default_kb

        res = default_kb().search(args.query, k=args.k, category=args.category, component=args.component, mode=ctx.kb_mode)
    except Exception as exc:  # the knowledge stack is optional: say so rather than fail the session
        return ToolResult(
            tool=NAME, status="error", query=q, range="knowledge base", message=f"knowledge search unavailable: {type(exc).__name__}: {exc}"
        )
    if res.status != "ok":
        return ToolResult(tool=NAME, status=res.status, query=q, range=f"knowledge base ({res.mode})", message=res.message)
    hits = [
        {"kb_id": h.evidence_id, "title": h.title, "section": h.section, "category": h.category, "text": clip_text(h.text, 700)}
        for h in res.hits
    ]
    summary = "; ".join(f"{h.title} / {h.section}" for h in res.hits[:3])
    return ToolResult(
        tool=NAME, status="ok", query=q, range=f"knowledge base ({res.mode})", summary=summary, data={"hits": hits}, message=res.message
    )
