"""`kat report PATH`: the incident report as one self-contained HTML file."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        path: Path = typer.Argument(..., help="incident bundle (or a directory of Kineto traces)"),
        out: Path = typer.Option(Path("report.html"), "-o", "--out", help="HTML file to write"),
        diagnosis: Path | None = typer.Option(None, "--diagnosis", help="a `kat diagnose --json` file (chain, evidence, metrics)"),
        detection: Path | None = typer.Option(None, "--detection", help="a `kat detect --json` file (skips re-running Outpost)"),
        png: Path | None = typer.Option(None, "--png", help="also write a PNG of the heatmap and timeline"),
    ) -> None:
        """Write the incident report page: heatmap, timeline, evidence metrics, causal chain, notes."""
        from rich.console import Console

        from kat.agent.report import build_report
        from kat.agent.report.verdict import ReportInputError, load_detection, load_diagnosis
        from kat.tools.telemetry import BundleError

        err = Console(stderr=True)
        t0 = time.perf_counter()
        try:
            d = load_diagnosis(diagnosis) if diagnosis else None
            det = load_detection(detection) if detection else None
            html, data = build_report(path, d, det)
        except (ReportInputError, BundleError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc
        try:
            out.write_text(html, encoding="utf-8")
            if png is not None:
                from kat.agent.report.png import snapshot_png

                png.write_bytes(snapshot_png(data))
        except OSError as exc:
            err.print(f"[bold red]error:[/] cannot write {exc.filename}: {exc.strerror}", highlight=False)
            raise typer.Exit(2) from exc
        err.print(f"wrote {out} ({len(html.encode()) / 1024:.0f} KiB) in {time.perf_counter() - t0:.2f} s", highlight=False)
