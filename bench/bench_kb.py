"""Knowledge-base speed: cold corpus build time and query latency (median, p95).

python -m bench.bench_kb          # standalone
from bench.bench_kb import run    # from the bench runner; returns a dict
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def run() -> dict:
    """Build the corpus into a fresh temp index, then time every eval question (hybrid)."""
    from kat.knowledge.embeddings import embed
    from kat.knowledge.evaluation import load_questions
    from kat.knowledge.kb import KnowledgeBase

    t0 = time.perf_counter()
    embed(["warm-up"])  # model load is a one-off per process; report it apart from the build
    model_load_s = time.perf_counter() - t0
    questions = load_questions()
    with tempfile.TemporaryDirectory(prefix="kat-kb-bench-") as tmp:
        kb = KnowledgeBase(tmp)
        report = kb.build()
        t1 = time.perf_counter()
        kb.build()
        noop_s = time.perf_counter() - t1
        kb.search(questions[0].query)  # first query pays lazy setup; excluded from latency
        lat: dict[str, list[float]] = {"hybrid": [], "lexical": []}
        for mode in lat:
            for q in questions:
                t = time.perf_counter()
                kb.search(q.query, k=5, mode=mode)  # type: ignore[arg-type]
                lat[mode].append((time.perf_counter() - t) * 1000)
    result = {
        "documents": report.documents,
        "chunks": report.chunks,
        "model_load_s": round(model_load_s, 3),
        "build_cold_s": report.seconds,
        "build_noop_s": round(noop_s, 3),
        "queries": len(questions),
        "query_ms_median": round(statistics.median(lat["hybrid"]), 2),
        "query_ms_p95": round(_pct(lat["hybrid"], 0.95), 2),
        "lexical_query_ms_median": round(statistics.median(lat["lexical"]), 2),
        "lexical_query_ms_p95": round(_pct(lat["lexical"], 0.95), 2),
    }
    print("kb bench: " + json.dumps(result))
    return result


if __name__ == "__main__":
    run()
