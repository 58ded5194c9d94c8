"""Index life cycle on a small copy of the corpus: build, no-op rebuild, incremental update,
deleted documents, corrupt and missing index. Each test gets its own corpus and index dirs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

pytest.importorskip("chromadb")
pytest.importorskip("sentence_transformers")

from kat.knowledge.chunking import CORPUS_DIR, load_chunks  # noqa: E402
from kat.knowledge.kb import KnowledgeBase  # noqa: E402

SMALL = ("xid-codes.md", "runtime-stall.md", "pcie-links.md")


@pytest.fixture(scope="module")
def built_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small corpus + built index per module; tests copy it instead of re-embedding."""
    root = tmp_path_factory.mktemp("kb-small")
    (root / "corpus").mkdir()
    for name in SMALL:
        shutil.copy(CORPUS_DIR / name, root / "corpus" / name)
    report = KnowledgeBase(root / "index", corpus_dir=root / "corpus").build()
    assert report.embedded == report.chunks == len(load_chunks(root / "corpus"))
    assert report.rebuilt_from_scratch
    return root


@pytest.fixture
def kb_dirs(built_template: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(built_template, tmp_path / "kb")
    return tmp_path / "kb" / "corpus", tmp_path / "kb" / "index"


def test_second_build_is_a_no_op(kb_dirs):
    corpus, index = kb_dirs
    report = KnowledgeBase(index, corpus_dir=corpus).build()
    assert report.embedded == 0 and report.deleted == 0
    assert report.unchanged == report.chunks and not report.rebuilt_from_scratch
    assert report.documents == len(SMALL)


def test_changing_one_document_re_embeds_only_its_changed_chunks(kb_dirs):
    corpus, index = kb_dirs
    doc = corpus / "runtime-stall.md"
    text = doc.read_text(encoding="utf-8")
    section = "## How to confirm\n"
    assert section in text
    doc.write_text(text.replace(section, section + "\nAlso check the allocator: cudaMalloc retries.\n"), encoding="utf-8")
    kb = KnowledgeBase(index, corpus_dir=corpus)
    report = kb.build()
    assert report.embedded == 1 and report.deleted == 0
    assert report.unchanged == report.chunks - 1
    hit = kb.search("cudaMalloc retries allocator", k=1).hits[0]
    assert hit.evidence_id == "kb:runtime-stall#how-to-confirm"
    assert "cudaMalloc retries" in hit.text


def test_adding_and_removing_documents(kb_dirs):
    corpus, index = kb_dirs
    (corpus / "pcie-links.md").unlink()
    shutil.copy(CORPUS_DIR / "workload-shift.md", corpus / "workload-shift.md")
    kb = KnowledgeBase(index, corpus_dir=corpus)
    report = kb.build()
    removed = len([c for c in load_chunks(CORPUS_DIR) if c.doc_id == "pcie-links"])
    added = len([c for c in load_chunks(CORPUS_DIR) if c.doc_id == "workload-shift"])
    assert report.deleted == removed and report.embedded == added
    res = kb.search("PCIe AER corrected errors LnkSta downgraded", k=10)
    assert "pcie-links" not in {h.doc_id for h in res.hits}


def test_corrupt_sqlite_is_rebuilt_with_a_clear_message(kb_dirs, caplog):
    corpus, index = kb_dirs
    with open(index / "chroma" / "chroma.sqlite3", "r+b") as f:
        f.write(b"this is not a database" * 500)
    kb = KnowledgeBase(index, corpus_dir=corpus)
    with caplog.at_level("WARNING", logger="knowledge"):
        res = kb.search("GPU has fallen off the bus")
    assert res.status == "ok" and res.hits
    assert "rebuilt" in res.message and "unusable" in res.message
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert KnowledgeBase(index, corpus_dir=corpus).build().embedded == 0  # healthy again


def test_corruption_while_open_is_recovered(kb_dirs):
    corpus, index = kb_dirs
    kb = KnowledgeBase(index, corpus_dir=corpus)
    assert kb.search("xid 79").status == "ok"
    with open(index / "chroma" / "chroma.sqlite3", "r+b") as f:
        f.write(b"\x00garbage" * 2000)
    res = kb.search("garbage collection pause in python")
    assert res.status == "ok" and res.hits[0].doc_id == "runtime-stall"
    assert "rebuilt" in res.message


def test_explicit_build_on_corrupt_index_rebuilds(kb_dirs):
    corpus, index = kb_dirs
    (index / "chroma" / "chroma.sqlite3").write_bytes(os.urandom(4096))
    report = KnowledgeBase(index, corpus_dir=corpus).build()
    assert report.rebuilt_from_scratch and report.embedded == report.chunks
    assert "unusable" in report.message


def test_missing_index_builds_on_first_search(kb_dirs):
    corpus, index = kb_dirs
    shutil.rmtree(index)
    kb = KnowledgeBase(index, corpus_dir=corpus)
    res = kb.search("PCIe link trained down to x8")
    assert res.status == "ok" and res.hits[0].doc_id == "pcie-links"
    assert (index / "chroma").is_dir()


def test_index_deleted_under_an_open_instance(kb_dirs):
    corpus, index = kb_dirs
    kb = KnowledgeBase(index, corpus_dir=corpus)
    assert kb.search("xid 94 contained ECC").status == "ok"
    shutil.rmtree(index)
    res = kb.search("xid 94 contained ECC")
    assert res.status == "ok" and res.hits[0].doc_id == "xid-codes"


def test_force_build_re_embeds_everything(kb_dirs):
    corpus, index = kb_dirs
    report = KnowledgeBase(index, corpus_dir=corpus).build(force=True)
    assert report.rebuilt_from_scratch and report.embedded == report.chunks


def test_unusable_dense_side_degrades_to_lexical(kb_dirs, monkeypatch):
    # e.g. chromadb broken or the index dir unwritable: the agent still gets an answer.
    from kat.knowledge.store import ChromaStore, StoreError

    def broken_open(self, create=True):
        raise StoreError("simulated: cannot open the store")

    monkeypatch.setattr(ChromaStore, "open", broken_open)
    corpus, index = kb_dirs
    res = KnowledgeBase(index, corpus_dir=corpus).search("Xid 95 uncontained ECC error")
    assert res.status == "ok" and res.hits[0].doc_id == "xid-codes"
    assert "lexical only" in res.message and "simulated" in res.message


def test_invalid_corpus_is_reported_not_raised(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bad.md").write_text("no front matter here\n", encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "idx", corpus_dir=tmp_path / "c")
    for mode in ("lexical", "hybrid"):
        res = kb.search("anything", mode=mode)
        assert res.status == "error" and "corpus is invalid" in res.message


def test_recovering_one_index_leaves_another_alone(built_template, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(built_template, tmp_path / name)
    kb_a = KnowledgeBase(tmp_path / "a" / "index", corpus_dir=tmp_path / "a" / "corpus")
    kb_b = KnowledgeBase(tmp_path / "b" / "index", corpus_dir=tmp_path / "b" / "corpus")
    assert kb_a.search("xid 79").status == kb_b.search("xid 79").status == "ok"
    with open(tmp_path / "a" / "index" / "chroma" / "chroma.sqlite3", "r+b") as f:
        f.write(b"\xde\xad" * 4096)
    assert "rebuilt" in kb_a.search("python gc pause").message
    res_b = kb_b.search("python gc pause")
    assert res_b.status == "ok" and res_b.message == ""
    assert kb_b.build().embedded == 0
