"""`kat mcp`: KAT's tools and diagnoses for any MCP client (stdio or streamable HTTP)."""

from __future__ import annotations

from pathlib import Path

import typer

from kat.agent.cli.common import fail


def register(app: typer.Typer) -> None:
    @app.command("mcp")
    def mcp_cmd(
        transport: str = typer.Option("stdio", "--transport", help="stdio (a client launches kat) | http (streamable HTTP at /mcp)"),
        host: str = typer.Option("127.0.0.1", "--host", help="HTTP bind address (loopback by default; elsewhere needs --token)"),
        port: int = typer.Option(8765, "--port", help="HTTP port"),
        incidents_root: Path = typer.Option(Path("."), "--incidents-root", help="directory holding incident bundles"),
        prometheus: str | None = typer.Option(
            None,
            "--prometheus",
            help="read metrics from this Prometheus (base URL) instead of the bundles' files; auth from KAT_PROMETHEUS_*",
        ),
        token: str | None = typer.Option(None, "--token", help="HTTP: require 'Authorization: Bearer <token>' (default: $KAT_MCP_TOKEN)"),
        analyzer: str = typer.Option("rules", "--analyzer", help="Analyzer for the diagnose tool: rules | openai | llamacpp"),
        base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (analyzer openai)"),
        model: str | None = typer.Option(None, "--model", help="model name (openai) or GGUF path (llamacpp)"),
        db: Path | None = typer.Option(None, "--db", help="SQLite file recording diagnoses (default: the front ends' cache file)"),
        max_steps: int = typer.Option(24, "--max-steps", help="Analyzer step budget"),
        time_budget: float = typer.Option(300.0, "--time-budget", help="seconds per diagnosis (a call may ask for less)"),
        max_concurrent: int = typer.Option(2, "--max-concurrent", min=1, help="diagnoses running at once"),
    ) -> None:
        """MCP server: list_incidents, open_incident, metric_catalog, outpost_detect, trace_slice, metric_lookup,
        log_search, knowledge_search and diagnose, plus incident manifests and diagnoses as resources."""
        from kat.agent.cli.serve import default_db
        from kat.agent.frontends.mcp_server import McpSettings
        from kat.agent.frontends.mcp_transport import LOOPBACK, serve_http, serve_stdio
        from kat.knowledge.settings import settings as kat_settings

        token = token or kat_settings().mcp_token
        if transport not in ("stdio", "http"):
            fail(f"--transport {transport!r}: use stdio or http")
        if not incidents_root.is_dir():
            fail(f"incidents root {incidents_root} is not a directory")
        if transport == "http" and host not in LOOPBACK and not token:
            fail(f"--host {host} is beyond loopback: set --token (or KAT_MCP_TOKEN) so clients must authenticate")
        opts = {k: v for k, v in (("base_url", base_url), ("model", model)) if v}
        settings = McpSettings(
            incidents_root=incidents_root.resolve(),
            db=db or default_db(),
            analyzer=analyzer,
            backend_options=opts,
            max_steps=max_steps,
            time_budget_s=time_budget,
            max_concurrent=max_concurrent,
            prometheus=prometheus,
        )
        if transport == "stdio":
            serve_stdio(settings)
        else:
            typer.echo(f"KAT MCP server: http://{host}:{port}/mcp (incidents root {settings.incidents_root})", err=True)
            serve_http(settings, host, port, token)
