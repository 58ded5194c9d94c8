"""The `openai` backend: any OpenAI-compatible chat endpoint (vLLM in production) via langchain-openai."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kat.knowledge.settings import settings

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI


def make_chat_model(
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    **_: Any,
) -> ChatOpenAI:
    """ChatOpenAI against `base_url` (default: KAT_OPENAI_BASE_URL / OPENAI_BASE_URL, else a local vLLM)."""
    from langchain_openai import ChatOpenAI

    env = settings()
    return ChatOpenAI(
        base_url=base_url or env.openai_base_url,
        model=model or env.openai_model,
        api_key=api_key or env.openai_api_key,  # vLLM accepts any key unless --api-key is set
        temperature=temperature,
        max_tokens=max_tokens,  # the contract's reply cap (None: the server's)
        timeout=timeout,
        max_retries=1,
    )
