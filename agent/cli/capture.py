"""`kat capture`: a standard incident bundle from a running system (tools/telemetry/capture.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from kat.agent.cli.common import fail


def register(app: typer.Typer) -> None:
    @app.command("capture")
    def capture_cmd(
        out: Path = typer.Argument(..., help="new bundle directory to write"),
        symptom: str = typer.Option(..., "--symptom", help="what the on-call engineer sees, e.g. 'p50 TPOT doubled'"),
        trace_dir: Path | None = typer.Option(None, "--trace-dir", help="profiler output directory (VLLM_TORCH_PROFILER_DIR)"),
        vllm: str | None = typer.Option(None, "--vllm", help="vLLM server URL: call /start_profile, wait --duration, /stop_profile"),
        duration: float = typer.Option(10.0, "--duration", help="seconds to profile"),
        prometheus: str | None = typer.Option(None, "--prometheus", help="metrics for the window from here (default KAT_PROMETHEUS_URL)"),
        metric: list[str] = typer.Option([], "--metric", help="metric name or regex (repeatable; default: DCGM, vLLM, node families)"),
        log: list[Path] = typer.Option([], "--log", help="log file (JSON lines or text with ISO timestamps; repeatable)"),
        journal: bool = typer.Option(False, "--journal", help="logs of the window from journalctl --output=json"),
        unit: list[str] = typer.Option([], "--unit", help="journald unit to read (repeatable; default all)"),
        start: datetime | None = typer.Option(None, "--start", help="window start (default: the profiled span)"),
        end: datetime | None = typer.Option(None, "--end", help="window end"),
        incident_id: str | None = typer.Option(None, "--id", help="incident id"),
        title: str | None = typer.Option(None, "--title"),
        model: str | None = typer.Option(None, "--model", help="served model name"),
        framework: str | None = typer.Option(None, "--framework", help="vllm | sglang | ..."),
        host: str | None = typer.Option(None, "--host", help="host name of the traced workers (default: this machine)"),
    ) -> None:
        """Capture traces (+ Prometheus metrics, logs) into a bundle; nothing is left behind on failure."""
        from pydantic import ValidationError
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from kat.knowledge.settings import settings
        from kat.tools.telemetry.capture import DEFAULT_METRICS, CaptureError, CaptureSpec, capture
        from kat.tools.telemetry.prometheus import PrometheusSettings

        if (start is None) != (end is None):
            fail("give both --start and --end, or neither")
        try:
            spec = CaptureSpec(
                out=out,
                symptom=symptom,
                incident_id=incident_id,
                title=title,
                model=model,
                framework=framework,
                trace_dir=trace_dir,
                vllm_url=vllm,
                duration_s=duration,
                start=start.astimezone() if start else None,
                end=end.astimezone() if end else None,
                host=host,
                prometheus=PrometheusSettings.from_env(prometheus) if prometheus or settings().prometheus_url else None,
                metrics=metric or list(DEFAULT_METRICS),
                log_files=log,
                journal=journal,
                journal_units=unit,
            )
        except (ValidationError, ValueError) as exc:
            fail(str(exc).splitlines()[0] if not isinstance(exc, ValidationError) else "; ".join(e["msg"] for e in exc.errors()))
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("capturing", total=1.0)
            try:
                path = capture(spec, lambda what, frac: bar.update(task, description=what, completed=frac))
            except CaptureError as exc:
                fail(f"capture failed, nothing written: {exc}")
        typer.echo(f"wrote {path}")
