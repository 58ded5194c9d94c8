"""Pydantic models at the knowledge base's boundary (what the agent and the CLI see)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SearchMode = Literal["hybrid", "dense", "lexical"]


class KnowledgeHit(BaseModel):
    doc_id: str
    title: str
    section: str
    category: str = Field(description="the document's own category (taxonomy value, 'reference' or 'playbook')")
    components: list[str]
    score: float = Field(description="ranking score; higher is better; comparable within one result only")
    text: str = Field(description="the matching chunk, trimmed")
    evidence_id: str = Field(description="stable id 'kb:<doc_id>#<section-slug>' to cite as evidence")
    related_categories: list[str] = Field(default_factory=list, description="other taxonomy categories the document covers")


class KnowledgeSearchResult(BaseModel):
    query: str = Field(description="the query as searched (cleaned and truncated)")
    k: int
    category: str | None = None
    component: str | None = None
    mode: SearchMode = "hybrid"
    status: Literal["ok", "no_data", "error"]
    message: str = ""
    hits: list[KnowledgeHit] = Field(default_factory=list)


class BuildReport(BaseModel):
    index_dir: str
    documents: int
    chunks: int
    embedded: int = Field(description="chunks (re-)embedded in this build")
    unchanged: int
    deleted: int
    rebuilt_from_scratch: bool = False
    seconds: float
    message: str = ""
