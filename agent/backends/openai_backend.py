"""The `openai` backend: any OpenAI-compatible chat endpoint (vLLM in production) via langchain-openai."""

from __future__ import annotations

import os
from typing import Any

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def make_chat_model(
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
    temperature: float = 0.0,
    **_: Any,
):  # type: ignore[no-untyped-def]
    """ChatOpenAI against `base_url` (env KAT_OPENAI_BASE_URL / OPENAI_BASE_URL, default local vLLM)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url or os.environ.get("KAT_OPENAI_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        model=model or os.environ.get("KAT_OPENAI_MODEL") or "kat-analyzer",
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",  # vLLM accepts any key unless --api-key is set
        temperature=temperature,
        timeout=timeout,
        max_retries=1,
    )
