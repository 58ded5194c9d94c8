"""Transports of `kat mcp`: stdio, and streamable HTTP on loopback or behind a bearer token."""

from __future__ import annotations

import json
import secrets
from typing import Any

import anyio

from kat.agent.frontends.mcp_server import McpSettings, build_server

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BearerAuth:
    """ASGI wrapper: every HTTP request needs `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), self.token):
                body = json.dumps({"error": "missing or wrong bearer token (Authorization: Bearer <token>)"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(settings: McpSettings, host: str = "127.0.0.1", token: str | None = None) -> Any:
    """The streamable-HTTP ASGI app at /mcp; refuses to serve beyond loopback without a token."""
    if host not in LOOPBACK and not token:
        raise ValueError(f"binding to {host} needs a bearer token (--token or KAT_MCP_TOKEN); loopback (127.0.0.1) needs none")
    app = build_server(settings).streamable_http_app(host=host)
    return BearerAuth(app, token) if token else app


def serve_stdio(settings: McpSettings) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(settings)

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(main)


def serve_http(settings: McpSettings, host: str, port: int, token: str | None) -> None:
    import uvicorn

    uvicorn.run(http_app(settings, host, token), host=host, port=port, log_level="warning")
