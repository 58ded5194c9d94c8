"""The chromadb side: one persistent collection of chunk embeddings with filterable metadata.

Any chromadb failure surfaces as `StoreError`, so the caller can decide to rebuild.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kat.knowledge.chunking import CHUNK_SCHEMA, Chunk
from kat.knowledge.embeddings import MODEL_NAME, make_chroma_embedding_function

COLLECTION = "kat_kb"
# Part of the collection's identity: a different model or chunking means a full rebuild.
INDEX_SIGNATURE = f"{MODEL_NAME}|chunks-v{CHUNK_SCHEMA}"


class StoreError(RuntimeError):
    """The on-disk index cannot be opened or used (missing, corrupt, incompatible)."""


def chunk_metadata(c: Chunk) -> dict[str, Any]:
    # chromadb metadata values are scalars; list membership becomes one boolean key per value
    # so filters are plain equality tests (`{"cat__nvlink_degradation": True}`).
    meta: dict[str, Any] = {
        "doc_id": c.doc_id,
        "title": c.title,
        "section": c.section,
        "category": c.category,
        "components": ",".join(c.components),
        "related": ",".join(c.related),
        "hash": c.content_hash,
    }
    for cat in c.all_categories:
        meta[f"cat__{cat}"] = True
    for comp in c.components:
        meta[f"comp__{comp}"] = True
    return meta


def where_filter(category: str | None, component: str | None) -> dict[str, Any] | None:
    clauses = []
    if category:
        clauses.append({f"cat__{category}": True})
    if component:
        clauses.append({f"comp__{component}": True})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class ChromaStore:
    def __init__(self, index_dir: Path) -> None:
        self.path = Path(index_dir) / "chroma"
        self._client: Any = None
        self._col: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self, create: bool = True) -> None:
        try:
            import chromadb
            from chromadb.config import Settings

            if not create and not self.path.exists():
                raise StoreError(f"no index at {self.path}")
            self.path.mkdir(parents=True, exist_ok=True)
            self._client = chromadb.PersistentClient(path=str(self.path), settings=Settings(anonymized_telemetry=False, allow_reset=True))
            ef = make_chroma_embedding_function()
            if create:
                self._col = self._client.get_or_create_collection(
                    COLLECTION, embedding_function=ef, metadata={"hnsw:space": "cosine", "signature": INDEX_SIGNATURE}
                )
            else:
                self._col = self._client.get_collection(COLLECTION, embedding_function=ef)
            sig = (self._col.metadata or {}).get("signature")
            if sig != INDEX_SIGNATURE:
                raise StoreError(f"index was built with {sig!r}, need {INDEX_SIGNATURE!r}")
            self._col.count()  # touch the data so a corrupt file fails here, not mid-search
        except StoreError:
            self.close()
            raise
        except Exception as exc:  # chromadb raises many types (sqlite, rust bindings, value errors)
            self.close()
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._col = None
        self._client = None
        try:
            # chromadb caches one System per persist directory and hands it to every new client
            # for that path; after a wipe that cached System still points at the deleted files.
            # Drop only our path's entry (not stopping it: another KnowledgeBase on the same path
            # may still hold it; other paths are untouched).
            from chromadb.api.shared_system_client import SharedSystemClient

            for table in ("_identifier_to_system", "_identifier_to_refcount"):
                getattr(SharedSystemClient, table, {}).pop(str(self.path), None)
        except Exception:  # pragma: no cover - private layout may change between chromadb versions
            try:
                from chromadb.api.shared_system_client import SharedSystemClient

                SharedSystemClient.clear_system_cache()
            except Exception:
                pass

    def wipe(self) -> None:
        """Delete the index files (after closing), so the next open starts empty."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def is_open(self) -> bool:
        return self._col is not None

    # -- data --------------------------------------------------------------------------------
    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._col is None:
            raise StoreError("index is not open")
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise StoreError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    def hashes(self) -> dict[str, str]:
        """chunk id -> content hash of everything currently stored."""
        got = self._guard("reading the index", self._col.get, include=["metadatas"])
        return {i: (m or {}).get("hash", "") for i, m in zip(got["ids"], got["metadatas"])}

    def upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        if not chunks:
            return
        self._guard(
            "writing the index",
            self._col.upsert,
            ids=[c.chunk_id for c in chunks],
            embeddings=vectors,
            documents=[c.text for c in chunks],
            metadatas=[chunk_metadata(c) for c in chunks],
        )

    def delete(self, ids: list[str]) -> None:
        if ids:
            self._guard("deleting from the index", self._col.delete, ids=ids)

    def count(self) -> int:
        return int(self._guard("counting the index", self._col.count))

    def query(self, vector: list[float], n: int, where: dict[str, Any] | None) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity) for the n nearest chunks passing the filter."""
        n = max(1, min(n, self.count()))
        res = self._guard("querying the index", self._col.query, query_embeddings=[vector], n_results=n, where=where, include=["distances"])
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0])]
