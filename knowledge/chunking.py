"""Read the markdown corpus: front matter, documents, and section chunks with content hashes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pydantic import BaseModel, Field

from kat.knowledge.taxonomy import CATEGORIES, COMPONENTS, TAXONOMY

CORPUS_DIR = Path(__file__).parent / "corpus"
# all-MiniLM-L6-v2 reads at most 256 word pieces (~1000-1200 characters of this prose), so
# longer sections are split or the embedding would ignore their tail.
MAX_CHUNK_CHARS = 1100
# Bump when chunking or embedded text changes, so every chunk is re-embedded once.
CHUNK_SCHEMA = "2"


class CorpusError(ValueError):
    """A corpus file is malformed (bad front matter, unknown category or component)."""


class Document(BaseModel):
    doc_id: str
    title: str
    category: str
    components: list[str] = Field(default_factory=list)
    related: list[str] = Field(default_factory=list)
    symptoms: list[str] = Field(default_factory=list)
    path: str
    body: str


class Chunk(BaseModel):
    chunk_id: str  # "<doc_id>#<section-slug>", unique in the corpus; also the evidence id suffix
    doc_id: str
    title: str
    section: str
    category: str
    related: list[str]
    components: list[str]
    text: str
    content_hash: str

    @property
    def evidence_id(self) -> str:
        return f"kb:{self.chunk_id}"

    @property
    def indexed_text(self) -> str:
        """What the embedder and BM25 see: the chunk plus its document and section names."""
        return f"{self.title} - {self.section}\n{self.text}"

    @property
    def all_categories(self) -> list[str]:
        return [self.category, *[c for c in self.related if c != self.category]]


def _parse_list(raw: str) -> list[str]:
    raw = raw.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    return [x.strip().strip("'\"") for x in raw.split(",") if x.strip()]


def parse_front_matter(text: str) -> tuple[dict[str, str | list[str]], str]:
    """Split '---' delimited `key: value` / `key: [a, b]` front matter from the body.

    A deliberately small subset of YAML: the corpus only needs scalars and flat lists, and a
    hand parser avoids depending on PyYAML's full (and surprising) type coercion.
    """
    if not text.startswith("---"):
        raise CorpusError("missing front matter (file must start with '---')")
    end = text.find("\n---", 3)
    if end < 0:
        raise CorpusError("front matter is not closed with '---'")
    meta: dict[str, str | list[str]] = {}
    for line in text[3:end].strip().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise CorpusError(f"front matter line without ':': {line!r}")
        value = value.strip()
        meta[key.strip()] = _parse_list(value) if value.startswith("[") else value.strip("'\"")
    body = text[end + 4 :].lstrip("\n")
    return meta, body


def load_document(path: Path) -> Document:
    meta, body = parse_front_matter(path.read_text(encoding="utf-8"))

    def as_list(key: str) -> list[str]:
        v = meta.get(key, [])
        return v if isinstance(v, list) else _parse_list(v)

    doc = Document(
        doc_id=str(meta.get("id") or path.stem),
        title=str(meta.get("title") or path.stem),
        category=str(meta.get("category", "")),
        components=as_list("components"),
        related=as_list("related"),
        symptoms=as_list("symptoms"),
        path=str(path),
        body=body,
    )
    if doc.category not in CATEGORIES:
        raise CorpusError(f"{path.name}: unknown category {doc.category!r}")
    bad = [c for c in doc.components if c not in COMPONENTS] + [c for c in doc.related if c not in TAXONOMY]
    if bad:
        raise CorpusError(f"{path.name}: unknown component/related value(s) {bad}")
    return doc


def load_corpus(corpus_dir: Path | None = None) -> list[Document]:
    """All documents, sorted by id; duplicate ids are an error (they would collide in the index)."""
    corpus_dir = Path(corpus_dir or CORPUS_DIR)
    docs = [load_document(p) for p in sorted(corpus_dir.glob("*.md"))]
    seen: set[str] = set()
    for d in docs:
        if d.doc_id in seen:
            raise CorpusError(f"duplicate document id {d.doc_id!r}")
        seen.add(d.doc_id)
    return docs


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "section"


def _sections(body: str) -> list[tuple[str, str]]:
    """(heading, text) per '## ' section; text before the first one becomes 'Overview'.

    H1 is the document title (already known); H3 and deeper stay inside their H2 section.
    Headings inside code fences are not headings.
    """
    sections: list[tuple[str, list[str]]] = [("Overview", [])]
    in_fence = False
    for line in body.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("# "):
            continue
        if not in_fence and line.startswith("## "):
            sections.append((line[3:].strip(), []))
            continue
        sections[-1][1].append(line)
    return [(h, "\n".join(lines).strip()) for h, lines in sections if "\n".join(lines).strip()]


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, never splitting a fenced code block."""
    blocks: list[str] = []
    cur: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if cur:
                blocks.append("\n".join(cur))
                cur = []
            continue
        cur.append(line)
    if cur:
        blocks.append("\n".join(cur))
    return blocks


def _split(text: str, limit: int) -> list[str]:
    """Pack paragraphs into pieces of at most ~limit characters (a long paragraph stays whole)."""
    pieces: list[str] = []
    cur = ""
    for para in _paragraphs(text):
        if cur and len(cur) + len(para) + 2 > limit:
            pieces.append(cur)
            cur = para
        else:
            cur = f"{cur}\n\n{para}" if cur else para
    if cur:
        pieces.append(cur)
    return pieces


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def chunk_document(doc: Document, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """One chunk per section (long sections split), plus a 'Symptoms' chunk from the front matter.

    The symptoms chunk gives retrieval a compact target phrased the way people report problems.
    """
    raw: list[tuple[str, str]] = []
    if doc.symptoms:
        raw.append(("Symptoms", f"Typical symptoms: {'; '.join(doc.symptoms)}."))
    for heading, text in _sections(doc.body):
        pieces = _split(text, max_chars)
        for i, piece in enumerate(pieces):
            raw.append((heading if len(pieces) == 1 else f"{heading} ({i + 1}/{len(pieces)})", piece))
    chunks: list[Chunk] = []
    used: set[str] = set()
    for section, text in raw:
        slug = base = slugify(section)
        n = 2
        while slug in used:
            slug, n = f"{base}-{n}", n + 1
        used.add(slug)
        meta = (doc.title, section, doc.category, doc.related, doc.components)
        chunks.append(
            Chunk(
                chunk_id=f"{doc.doc_id}#{slug}",
                doc_id=doc.doc_id,
                title=doc.title,
                section=section,
                category=doc.category,
                related=doc.related,
                components=doc.components,
                text=text,
                content_hash=_hash(CHUNK_SCHEMA, meta, text),
            )
        )
    return chunks


def load_chunks(corpus_dir: Path | None = None) -> list[Chunk]:
    return [c for d in load_corpus(corpus_dir) for c in chunk_document(d)]
