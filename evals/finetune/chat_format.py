"""The Analyzer's chat + tool-call format: ChatML with Hermes-style tools (prompts/analyzer_chat_template.jinja).

One place turns an agent conversation (LangChain messages) into OpenAI-style message dicts, renders
it with the template, finds the assistant spans a model is trained on, and parses tool calls out
of assistant text the way vLLM's `hermes` tool-call parser does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kat.agent.backends.contract import DEFAULT, SMALL

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO / "prompts" / DEFAULT.chat_template
# The short playbook's template (evals/finetune/short_playbook.py): same format, shorter tool list.
SMALL_TEMPLATE_PATH = REPO / "prompts" / SMALL.chat_template
# vLLM's hermes parser: a closed block, or an unclosed one running to the end of the text.
_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)


@lru_cache(maxsize=4)
def load_template(path: Path | str | None = None) -> str:
    """Text of a chat template (default prompts/analyzer_chat_template.jinja; relative paths from the repo)."""
    p = Path(path) if path else TEMPLATE_PATH
    return (p if p.is_absolute() else REPO / p).read_text(encoding="utf-8")


def template_of(data_dir: Path | str | None) -> str:
    """The chat template a `kat finetune data` directory was rendered with (the default if unknown)."""
    import json

    m = Path(data_dir) / "manifest.json" if data_dir else None
    if m is not None and m.exists():
        rel = json.loads(m.read_text()).get("chat_template")
        if rel:
            return load_template(rel)
    return load_template()


def openai_tools(lc_tools: Sequence[Any]) -> list[dict]:
    """LangChain tools -> the OpenAI `tools` list that langchain-openai sends (and vLLM renders)."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    return [convert_to_openai_tool(t) for t in lc_tools]


def analyzer_tools(tools: dict) -> list[dict]:
    """Exactly what LLMAnalyzer binds: every investigation tool, then `submit_diagnosis`."""
    from kat.agent.backends.llm import submit_tool

    return openai_tools([t.as_langchain() for t in tools.values()] + [submit_tool()])


def to_openai_messages(messages: Sequence[Any], system: str | None = None) -> list[dict]:
    """LangChain messages -> OpenAI chat dicts (tool-call arguments kept as objects)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    out: list[dict] = [{"role": "system", "content": system}] if system is not None else []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": str(m.content)})
        elif isinstance(m, HumanMessage):
            out.append({"role": "user", "content": str(m.content)})
        elif isinstance(m, AIMessage):
            d: dict = {"role": "assistant", "content": str(m.content or "")}
            if m.tool_calls:
                d["tool_calls"] = [
                    {
                        "id": c.get("id") or f"call_{i}",
                        "type": "function",
                        "function": {"name": c["name"], "arguments": dict(c.get("args") or {})},
                    }
                    for i, c in enumerate(m.tool_calls)
                ]
            out.append(d)
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "name": m.name, "content": str(m.content)})
        else:
            raise TypeError(f"unsupported message type {type(m).__name__}")
    return out


def render(
    tokenizer: Any,
    messages: list[dict],
    tools: list[dict] | None = None,
    *,
    add_generation_prompt: bool = False,
    template: str | None = None,
) -> str:
    """The prompt text, rendered by transformers with our template (as vLLM does)."""
    return tokenizer.apply_chat_template(
        messages,
        tools=tools or None,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        chat_template=template or load_template(),
    )


def assistant_spans(
    tokenizer: Any, messages: list[dict], tools: list[dict] | None = None, template: str | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """(full text, [(start, end) character spans of every assistant reply, incl. its end token]).

    Each span is what the model must generate after the generation prompt: the difference between
    the conversation rendered up to that reply and the prompt before it.
    """
    full = render(tokenizer, messages, tools, template=template)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], tools, add_generation_prompt=True, template=template)
        upto = render(tokenizer, messages[: i + 1], tools, template=template)
        if not full.startswith(upto) or not upto.startswith(prompt):
            raise ValueError("chat template is not prefix-stable; assistant spans cannot be located")
        end = len(upto.rstrip("\n"))  # the newline after <|im_end|> belongs to the next turn
        spans.append((len(prompt), end))
    return full, spans


class ParsedCall(BaseModel):
    name: str
    arguments: dict[str, Any]


def parse_tool_calls(text: str) -> tuple[str | None, list[ParsedCall]]:
    """(content, calls) from assistant text, mirroring vLLM's hermes parser (non-streaming).

    Raises ValueError where vLLM would fall back to plain text (a block that is not JSON with
    `name` and `arguments`).
    """
    if "<tool_call>" not in text:
        return text, []
    calls = []
    for closed, open_ in _TOOL_CALL_RE.findall(text):
        try:
            obj = json.loads(closed or open_)
            calls.append(ParsedCall(name=obj["name"], arguments=obj["arguments"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unparseable tool call block: {(closed or open_)[:200]!r}: {exc}") from exc
    content = text[: text.find("<tool_call>")]
    return (content or None), calls
