"""Test doubles for the agent: a scripted chat model and a scripted OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


def tc(name: str, args: dict, i: int = 0) -> dict:
    return {"name": name, "args": args, "id": f"call_{name}_{i}", "type": "tool_call"}


def diagnosis_args(evidence: list[str], category: str = "gpu_thermal_throttling", ranks: list[int] | None = None) -> dict:
    return {
        "root_cause": {
            "category": category,
            "component": "gpu",
            "ranks": ranks if ranks is not None else [4],
            "hosts": ["gpu-node-00"],
            "summary": "GPU 4 runs hot and throttles.",
        },
        "causal_chain": [{"cause": "GPU 4 hot", "effect": "slow kernels; peers wait", "evidence": evidence}],
        "evidence": [{"id": e, "tool": "outpost_detect", "query": "{}", "summary": "x"} for e in evidence],
        "confidence": 0.7,
        "alternatives_ruled_out": [{"category": "gpu_power_or_clock_cap", "why": "power limit unchanged"}],
        "remediation": ["check cooling"],
    }


class ScriptedChatModel(BaseChatModel):
    """Replies from a script: each item an AIMessage, or a callable(messages) -> AIMessage."""

    script: list[Any] = Field(default_factory=list)
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    repeat_last: bool = False

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        i = len(self.seen) - 1
        if i >= len(self.script):
            if not self.repeat_last:
                raise RuntimeError("script exhausted")
            i = len(self.script) - 1
        item = self.script[i]
        msg = item(messages) if callable(item) else item
        if isinstance(msg, AIMessage) and msg.tool_calls:
            # Fresh ids per reply: a repeated scripted call must not reuse a tool_call id.
            msg = AIMessage(
                content=msg.content,
                tool_calls=[{**c, "id": f"{c['id']}_{len(self.seen)}"} for c in msg.tool_calls],
                invalid_tool_calls=msg.invalid_tool_calls,
            )
        return ChatResult(generations=[ChatGeneration(message=msg)])


class ScriptedOpenAIServer:
    """A real HTTP server speaking /v1/chat/completions with scripted replies (tool calls or text)."""

    def __init__(self, replies: list[Callable[[dict], dict] | dict]):
        self.replies = replies
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                outer.requests.append(body)
                i = min(len(outer.requests) - 1, len(outer.replies) - 1)
                r = outer.replies[i]
                message = r(body) if callable(r) else r
                payload = {
                    "id": f"chatcmpl-{len(outer.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "m"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *a: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def openai_tool_call(name: str, args: dict | str, i: int) -> dict:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
        ],
    }
