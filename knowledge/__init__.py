"""LMDI knowledge base: a markdown corpus, a chromadb index, and hybrid retrieval.

Import stays light: chromadb and sentence-transformers load only when a search or build runs.

    from kat.knowledge import search
    result = search("one GPU hot and slow, peers waiting in all-reduce", k=5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["search", "get", "KnowledgeBase", "KnowledgeSearchResult", "KnowledgeHit", "BuildReport"]

if TYPE_CHECKING:  # pragma: no cover
    from kat.knowledge.api import get, search
    from kat.knowledge.kb import KnowledgeBase
    from kat.knowledge.models import BuildReport, KnowledgeHit, KnowledgeSearchResult

_LAZY = {
    "search": "kat.knowledge.api",
    "get": "kat.knowledge.api",
    "KnowledgeBase": "kat.knowledge.kb",
    "KnowledgeSearchResult": "kat.knowledge.models",
    "KnowledgeHit": "kat.knowledge.models",
    "BuildReport": "kat.knowledge.models",
}


def __getattr__(name: str) -> Any:
    # Lazy re-exports: `import knowledge` must not pull in torch or chromadb.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'knowledge' has no attribute {name!r}")
