"""Core sub-commands: import / inspect traces, demo."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kat.tools.telemetry import BundleError, open_bundle

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error (no traceback) and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def bundle_summary(path: Path) -> dict:
    """Open a bundle and summarise what it holds (events per kind, steps, collectives)."""
    b = open_bundle(path)
    ranks = {}
    for r in b.ranks:
        df = b.events(r)
        steps = sorted(int(s) for s in df["step"].unique() if s >= 0)
        ranks[r] = {
            "file": b.traces[r].path.name,
            "events": len(df),
            "kinds": {str(k): int(v) for k, v in df["kind"].value_counts().items() if v},
            "steps": steps,
            "collectives": int((df["kind"] == "collective").sum()),
            "span_ms": round((int((df["ts_ns"] + df["dur_ns"]).max()) - int(df["ts_ns"].min())) / 1e6, 3) if len(df) else 0.0,
        }
    return {"id": b.manifest.id, "symptom": b.manifest.symptom, "ranks": ranks, "metrics": len(b.metrics), "logs": len(b.logs)}


def register(app: typer.Typer) -> None:
    from kat.knowledge.cli import register as register_kb
    from kat.tools.outpost.cli import register as register_detect

    register_detect(app)
    register_kb(app)
    from kat.agent.cli_agent import register as register_agent

    register_agent(app)
    from kat.agent.report.cli import register as register_report

    register_report(app)

    @app.command("import")
    def import_cmd(
        path: Path = typer.Argument(..., help="incident bundle, directory of Kineto traces, or one trace file"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
    ) -> None:
        """Import traces (cached as canonical Parquet) and summarise them."""
        try:
            summary = bundle_summary(path)
        except BundleError as exc:
            fail(str(exc))
        if json_out:
            import orjson

            sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
            return
        t = Table(title=f"{summary['id']}: {len(summary['ranks'])} rank(s)")
        for col in ("rank", "file", "events", "steps", "collectives", "span ms", "kinds"):
            t.add_column(col)
        for r, s in summary["ranks"].items():
            steps = s["steps"]
            step_txt = f"{steps[0]}..{steps[-1]} ({len(steps)})" if steps else "-"
            kinds = ", ".join(f"{k}={v}" for k, v in sorted(s["kinds"].items(), key=lambda kv: -kv[1]))
            t.add_row(str(r), s["file"], f"{s['events']:,}", step_txt, str(s["collectives"]), f"{s['span_ms']:.1f}", kinds)
        console.print(t)
        console.print(f"metrics rows: {summary['metrics']:,}   log lines: {summary['logs']:,}")

    @app.command("demo")
    def demo_cmd() -> None:
        """Run the main job on bundled data with the offline defaults."""
        from kat.agent.demo import run_demo

        raise typer.Exit(run_demo(console))
