"""Knowledge corpus, chunking, BM25 and query cleaning: pure Python, no model, no index."""

from __future__ import annotations

import json
import sys

import pytest

from kat.knowledge.chunking import CORPUS_DIR, CorpusError, chunk_document, load_chunks, load_corpus, parse_front_matter
from kat.knowledge.evaluation import load_questions
from kat.knowledge.lexical import BM25, tokenize
from kat.knowledge.query import MAX_QUERY_CHARS, clean_query
from kat.knowledge.taxonomy import COMPONENTS, TAXONOMY

SYSTEM_DOCS = {
    "gpu-clocks-power-thermal",
    "nvlink-nvswitch",
    "pcie-links",
    "ib-roce-nccl-transports",
    "nccl-collectives-errors",
    "xid-codes",
    "numa-cpu-affinity",
    "vllm-scheduler-kv-cache",
    "cuda-graphs-launch-overhead",
    "parallelism-communication",
    "troubleshooting-playbook",
}


def test_import_is_light():
    # `import knowledge` must not pull torch/chromadb in (the agent imports it at start-up).
    code = "import sys, knowledge; print(any(m in sys.modules for m in ('torch', 'chromadb', 'sentence_transformers')))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_taxonomy_category_has_a_document():
    docs = load_corpus()
    cats = {d.category for d in docs}
    assert set(TAXONOMY) <= cats
    assert SYSTEM_DOCS <= {d.doc_id for d in docs}


def test_front_matter_is_complete_and_valid():
    for d in load_corpus():
        assert d.title and d.symptoms, d.doc_id
        assert set(d.components) <= set(COMPONENTS)
        assert d.doc_id == d.path.rsplit("/", 1)[-1][:-3]


def test_fault_documents_cover_the_required_aspects():
    for d in load_corpus():
        if d.category not in TAXONOMY or d.category in ("none", "workload_shift"):
            continue
        body = d.body.lower()
        for heading in (
            "## mechanism",
            "## how it shows in traces",
            "## how it shows in metrics",
            "## how it shows in logs",
            "## telling it apart",
            "## how to confirm",
            "## remediation",
        ):
            assert heading in body, (d.doc_id, heading)


def test_chunks_have_unique_stable_ids_and_bounded_size():
    chunks = load_chunks()
    ids = [c.chunk_id for c in chunks]
    assert len(ids) == len(set(ids))
    assert all(c.evidence_id.startswith(f"kb:{c.doc_id}#") for c in chunks)
    assert all(len(c.text) <= 1500 for c in chunks)
    assert load_chunks()[0].content_hash == chunks[0].content_hash  # deterministic


def test_code_fences_are_not_split_or_taken_for_headings(tmp_path):
    p = tmp_path / "d.md"
    p.write_text(
        "---\nid: d\ntitle: D\ncategory: reference\ncomponents: [gpu]\n---\n# D\n\n## A\n\n```\n## not a heading\n\nstill code\n```\n",
        encoding="utf-8",
    )
    from kat.knowledge.chunking import load_document

    chunks = chunk_document(load_document(p))
    assert [c.section for c in chunks] == ["A"]
    assert "## not a heading" in chunks[0].text and "still code" in chunks[0].text


@pytest.mark.parametrize("text", ["no front matter", "---\ncategory: x\n", "---\nbadline\n---\nbody"])
def test_bad_front_matter_is_rejected(text):
    with pytest.raises(CorpusError):
        parse_front_matter(text)


def test_unknown_category_is_rejected(tmp_path):
    (tmp_path / "x.md").write_text("---\ncategory: bogus\n---\n# X\n", encoding="utf-8")
    with pytest.raises(CorpusError):
        load_corpus(tmp_path)


def test_question_set_is_large_enough_and_points_at_real_documents():
    qs = load_questions()
    ids = {d.doc_id for d in load_corpus()}
    assert len(qs) >= 60
    assert len({q.id for q in qs}) == len(qs)
    for q in qs:
        assert q.doc_ids and set(q.doc_ids) <= ids, q.id
    # Questions are not copied headings.
    headings = {c.section.lower() for c in load_chunks()} | {d.title.lower() for d in load_corpus()}
    assert not [q.query for q in qs if q.query.lower() in headings]


def test_tokenizer_keeps_identifiers_and_their_parts():
    toks = tokenize("DCGM_FI_DEV_SM_CLOCK and vllm:gpu_cache_usage_perc, Xid 79")
    assert "dcgm_fi_dev_sm_clock" in toks and "clock" in toks and "sm" in toks
    assert "vllm:gpu_cache_usage_perc" in toks and "79" in toks
    assert "and" not in toks
    assert tokenize("throttled") == tokenize("throttling") == tokenize("throttle")


def test_bm25_ranks_the_matching_document_first():
    bm = BM25(["gpu temperature high thermal", "nccl all-reduce timeout", "kv cache preemption"])
    s = bm.scores("NCCL timeout")
    assert s.index(max(s)) == 1
    assert bm.scores("") == [0.0, 0.0, 0.0]
    assert bm.scores("((((.*+?[") == [0.0, 0.0, 0.0]


def test_clean_query_handles_hostile_input():
    assert clean_query("") == ("", False)
    assert clean_query(None) == ("", False)
    assert clean_query("  \x00\x1b[31m nvlink\u202e\u200b errors\t\n") == ("[31m nvlink errors", False)
    huge, truncated = clean_query("xid " * 100_000)
    assert truncated and len(huge) <= MAX_QUERY_CHARS
    assert clean_query(12345) == ("12345", False)


def test_question_file_is_valid_jsonl():
    for line in (CORPUS_DIR.parent / "eval_questions.jsonl").read_text().splitlines():
        assert set(json.loads(line)) == {"id", "query", "doc_ids"}
