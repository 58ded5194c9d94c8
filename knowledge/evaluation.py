"""Retrieval quality on the question set: recall@3 and MRR for lexical, dense and hybrid.

Each question lists the documents that answer it. A question counts as recalled@k when at least
one of them is among the first k *distinct documents* returned; MRR uses the rank of the first
answering document. `strict_recall_at_k` is the fraction of all listed documents found in the
first k (stricter, reported for information).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from kat.knowledge.kb import KnowledgeBase
from kat.knowledge.models import SearchMode

QUESTIONS_PATH = Path(__file__).parent / "eval_questions.jsonl"
ALL_MODES: tuple[SearchMode, ...] = ("lexical", "dense", "hybrid")


class Question(BaseModel):
    id: str
    query: str
    doc_ids: list[str]


class Miss(BaseModel):
    id: str
    query: str
    expected: list[str]
    got: list[str]


class ModeScore(BaseModel):
    mode: str
    recall_at_k: float
    mrr: float
    strict_recall_at_k: float
    median_ms: float
    misses: list[Miss] = Field(default_factory=list)


class EvalReport(BaseModel):
    questions: int
    k: int
    documents: int
    scores: list[ModeScore]

    def score(self, mode: str) -> ModeScore:
        return next(s for s in self.scores if s.mode == mode)


def load_questions(path: Path | None = None) -> list[Question]:
    lines = Path(path or QUESTIONS_PATH).read_text(encoding="utf-8").splitlines()
    return [Question.model_validate(json.loads(ln)) for ln in lines if ln.strip()]


def ranked_docs(kb: KnowledgeBase, query: str, mode: SearchMode, depth: int = 10) -> list[str]:
    """Distinct document ids in the order their first chunk appears."""
    res = kb.search(query, k=depth, mode=mode)
    return list(dict.fromkeys(h.doc_id for h in res.hits))


def evaluate(
    modes: Sequence[SearchMode] = ALL_MODES, kb: KnowledgeBase | None = None, k: int = 3, questions: Sequence[Question] | None = None
) -> EvalReport:
    """Score each retrieval mode on the question set (builds the index first if needed)."""
    kb = kb or KnowledgeBase()
    qs = list(questions) if questions is not None else load_questions()
    if any(m != "lexical" for m in modes):
        kb.build()
    scores: list[ModeScore] = []
    for mode in modes:
        hit = rr = strict = 0.0
        misses: list[Miss] = []
        times: list[float] = []
        for q in qs:
            t0 = time.perf_counter()
            docs = ranked_docs(kb, q.query, mode)
            times.append((time.perf_counter() - t0) * 1000)
            wanted = set(q.doc_ids)
            first = next((r for r, d in enumerate(docs, 1) if d in wanted), None)
            if first is not None:
                rr += 1.0 / first
            if first is not None and first <= k:
                hit += 1
            else:
                misses.append(Miss(id=q.id, query=q.query, expected=q.doc_ids, got=docs[:k]))
            strict += len(wanted & set(docs[:k])) / len(wanted)
        n = max(len(qs), 1)
        times.sort()
        scores.append(
            ModeScore(
                mode=mode,
                recall_at_k=round(hit / n, 4),
                mrr=round(rr / n, 4),
                strict_recall_at_k=round(strict / n, 4),
                median_ms=round(times[len(times) // 2], 2) if times else 0.0,
                misses=misses,
            )
        )
    return EvalReport(questions=len(qs), k=k, documents=len(kb.documents()), scores=scores)
