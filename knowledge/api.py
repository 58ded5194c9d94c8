"""The function the agent calls: `knowledge.search(...)` on the default index."""

from __future__ import annotations

import threading

from kat.knowledge.kb import KnowledgeBase
from kat.knowledge.models import KnowledgeHit, KnowledgeSearchResult
from kat.knowledge.paths import default_index_dir

_lock = threading.Lock()
_default: KnowledgeBase | None = None


def default_kb() -> KnowledgeBase:
    """One KnowledgeBase per process for the default index dir (re-made if the env points elsewhere)."""
    global _default
    with _lock:
        if _default is None or _default.index_dir != default_index_dir():
            _default = KnowledgeBase(default_index_dir())
        return _default


def get(evidence_id: str) -> KnowledgeHit | None:
    """The knowledge chunk behind an evidence id such as 'kb:xid-codes#what-to-do', or None."""
    return default_kb().get(evidence_id)


def search(query: str, k: int = 5, category: str | None = None, component: str | None = None) -> KnowledgeSearchResult:
    """Search the LMDI knowledge base (hybrid dense + BM25). Never raises for bad input:
    problems come back as status "error" (bad input) or "no_data" (nothing relevant)."""
    try:
        return default_kb().search(query, k=k, category=category, component=component)
    except Exception as exc:  # last line of defence: the agent gets a result, not a traceback
        from kat.knowledge.query import clean_query

        return KnowledgeSearchResult(
            query=clean_query(query)[0],
            k=5,
            category=category,
            component=component,
            status="error",
            message=f"knowledge search failed: {type(exc).__name__}: {exc}",
        )
