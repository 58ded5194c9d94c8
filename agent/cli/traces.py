"""`kat import`: import traces (cached as canonical Parquet) and summarise them."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kat.tools.outpost.cli import CLUSTER_OPTION, CLUSTER_WORKERS_OPTION


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_cmd(
        path: Path = typer.Argument(..., help="incident bundle, directory of Kineto traces, or one trace file"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
        cluster: str | None = CLUSTER_OPTION,
        cluster_workers: int | None = CLUSTER_WORKERS_OPTION,
    ) -> None:
        """Import traces (cached as canonical Parquet) and summarise them."""
        from rich.table import Table

        from kat.agent.cli.common import console, fail
        from kat.tools.telemetry import BundleError
        from kat.tools.telemetry.summary import bundle_summary

        try:
            if cluster is None:
                summary = bundle_summary(path)
            else:
                from kat.tools.outpost.cluster import ClusterError, summary_on_cluster

                try:
                    summary = summary_on_cluster(path, cluster, cluster_workers)
                except ClusterError as exc:
                    fail(str(exc))
        except BundleError as exc:
            fail(str(exc))
        if json_out:
            import orjson

            sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
            return
        t = Table(title=f"{summary['id']}: {len(summary['ranks'])} rank(s)")
        for col in ("rank", "file", "events", "steps", "collectives", "span ms", "kinds"):
            t.add_column(col, overflow="fold")  # wrap long names, never cut them
        for r, s in summary["ranks"].items():
            steps = s["steps"]
            step_txt = f"{steps[0]}..{steps[-1]} ({len(steps)})" if steps else "-"
            kinds = ", ".join(f"{k}={v}" for k, v in sorted(s["kinds"].items(), key=lambda kv: -kv[1]))
            t.add_row(str(r), s["file"], f"{s['events']:,}", step_txt, str(s["collectives"]), f"{s['span_ms']:.1f}", kinds)
        console.print(t)
        console.print(f"metrics rows: {summary['metrics']:,}   log lines: {summary['logs']:,}")
        from kat.tools.telemetry.quality import DataQuality

        q = DataQuality.model_validate(summary["data_quality"])
        for line in q.lines():
            console.print(f"data: {line}", style="yellow" if q.degraded else None, highlight=False, markup=False)
