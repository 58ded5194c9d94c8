"""`kat serve` (HTTP API) and `kat slack` (Slack bot): the long-running front ends."""

from __future__ import annotations

import logging
from pathlib import Path

import typer


def default_db() -> Path:
    from kat.knowledge.settings import settings

    return settings().state_db("frontends.sqlite")


def _root(incidents_root: Path) -> Path:
    if not incidents_root.is_dir():
        typer.echo(f"error: incidents root {incidents_root} is not a directory", err=True)
        raise typer.Exit(2)
    return incidents_root


def register(app: typer.Typer) -> None:
    """Front-end commands."""
    app.command("serve")(serve_cmd)
    app.command("slack")(slack_cmd)


def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="bind address (loopback by default)"),
    port: int = typer.Option(8080, "--port"),
    incidents_root: Path = typer.Option(Path("."), "--incidents-root", help="directory holding incident bundles"),
    db: Path | None = typer.Option(None, "--db", help="SQLite file for jobs and threads (default: cache dir)"),
    token: str | None = typer.Option(None, "--token", help="require 'Authorization: Bearer <token>' (default: $KAT_API_TOKEN)"),
    max_concurrent: int = typer.Option(2, "--max-concurrent", min=1, help="diagnoses running at once"),
    max_queue: int = typer.Option(100, "--max-queue", min=0, help="diagnoses waiting beyond that; more get 429"),
    time_budget: float = typer.Option(300.0, "--time-budget", help="seconds per diagnosis (a request may ask for less)"),
    max_steps: int = typer.Option(24, "--max-steps", help="Analyzer step budget"),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (analyzer openai)"),
    model: str | None = typer.Option(None, "--model", help="model name (openai) or GGUF path (llamacpp)"),
    prometheus: str | None = typer.Option(None, "--prometheus", help="metrics from this Prometheus (default KAT_PROMETHEUS_URL)"),
    alert_channel: str | None = typer.Option(
        None, "--alert-slack-channel", help="post alert investigations here (default KAT_ALERTMANAGER_SLACK_CHANNEL)"
    ),
    alert_capture_vllm: str | None = typer.Option(
        None, "--alert-capture-vllm", help="vLLM server to profile when no bundle matches an alert (needs --alert-capture-trace-dir)"
    ),
    alert_capture_trace_dir: Path | None = typer.Option(None, "--alert-capture-trace-dir", help="that server's VLLM_TORCH_PROFILER_DIR"),
) -> None:
    """HTTP API: start diagnoses, stream progress, ask follow-ups, take Alertmanager webhooks (OpenAPI docs at /docs)."""
    import uvicorn

    from kat.agent.frontends.alertmanager import AlertSettings
    from kat.agent.frontends.http_api import ServerSettings, create_app
    from kat.knowledge.settings import settings as kat_settings

    token = token or kat_settings().api_token
    prometheus = prometheus or kat_settings().prometheus_url
    opts = {k: v for k, v in (("base_url", base_url), ("model", model), ("prometheus", prometheus)) if v}
    alerts = AlertSettings.from_env(
        prometheus=prometheus,
        slack_channel=alert_channel,
        capture_vllm_url=alert_capture_vllm,
        capture_trace_dir=alert_capture_trace_dir,
    )
    settings = ServerSettings(
        incidents_root=_root(incidents_root),
        db=db or default_db(),
        token=token,
        max_concurrent=max_concurrent,
        max_queue=max_queue,
        time_budget_s=time_budget,
        max_steps=max_steps,
        backend_options=opts,
        alertmanager=alerts,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        typer.echo("warning: listening beyond loopback without --token", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def slack_cmd(
    socket: bool = typer.Option(False, "--socket", help="Socket Mode (needs SLACK_APP_TOKEN xapp-...); else HTTP Events API"),
    host: str = typer.Option("127.0.0.1", "--host", help="bind address for the HTTP Events API"),
    port: int = typer.Option(3000, "--port", help="port for the HTTP Events API (POST /slack/events)"),
    incidents_root: Path = typer.Option(Path("."), "--incidents-root", help="directory holding incident bundles"),
    db: Path | None = typer.Option(None, "--db", help="SQLite file for jobs, threads and seen events"),
    analyzer: str = typer.Option("rules", "--analyzer", help="rules | openai | llamacpp"),
    max_concurrent: int = typer.Option(2, "--max-concurrent", min=1),
    time_budget: float = typer.Option(300.0, "--time-budget"),
    base_url: str | None = typer.Option(None, "--base-url"),
    model: str | None = typer.Option(None, "--model"),
    prometheus: str | None = typer.Option(None, "--prometheus", help="metrics from this Prometheus (default KAT_PROMETHEUS_URL)"),
    public_base_url: str | None = typer.Option(
        None, "--public-base-url", help="where `kat serve` is reachable (default KAT_PUBLIC_BASE_URL): replies link to its report page"
    ),
) -> None:
    """Slack bot: @kat mentions, DMs and /kat. Tokens from SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN."""
    from kat.agent.frontends.slack_bot import BotSettings
    from kat.agent.frontends.slack_transport import run_http, run_socket_mode
    from kat.knowledge.settings import settings as kat_settings

    env = kat_settings()
    prometheus = prometheus or env.prometheus_url
    opts = {k: v for k, v in (("base_url", base_url), ("model", model), ("prometheus", prometheus)) if v}
    bot_token = env.slack_bot_token
    if not bot_token:
        typer.echo("error: set SLACK_BOT_TOKEN (xoxb-...)", err=True)
        raise typer.Exit(2)
    settings = BotSettings(
        incidents_root=_root(incidents_root),
        db=db or default_db(),
        analyzer=analyzer,
        max_concurrent=max_concurrent,
        time_budget_s=time_budget,
        backend_options=opts,
        bot_token=bot_token,
        signing_secret=env.slack_signing_secret,
        public_base_url=public_base_url or env.public_base_url or None,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if socket:
            app_token = env.slack_app_token
            if not app_token:
                typer.echo("error: Socket Mode needs SLACK_APP_TOKEN (xapp-..., scope connections:write)", err=True)
                raise typer.Exit(2)
            run_socket_mode(settings, app_token)
        else:
            if not settings.signing_secret:
                typer.echo("error: the HTTP Events API needs SLACK_SIGNING_SECRET", err=True)
                raise typer.Exit(2)
            run_http(settings, host, port)
    except ConnectionError as exc:  # Slack unreachable after the retries: one line, no traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from None
