"""`kat detect PATH`: Outpost from the command line (no LLM stack needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape


def _ms(ns: float) -> str:
    return f"{ns / 1e6:,.2f}"


# Printed on stderr under --cluster (make bench reads it: the serial share of a cluster run).
SERIAL_CPU_LINE = "cluster: the detect task's own CPU (bundle, plan, scheduling, merge; serial) {:.2f} s"

# Shared by every command that can run on Dask (detect, import, eval detection).
CLUSTER_OPTION = typer.Option(
    None,
    "--cluster",
    help="run import and per-group tests on Dask: 'dask' starts a local cluster, tcp://HOST:PORT uses a running "
    "scheduler (traces and the trace cache on a filesystem every worker sees)",
)
CLUSTER_WORKERS_OPTION = typer.Option(
    None, "--cluster-workers", min=1, help="worker processes of the local cluster (--cluster dask); default: one per CPU"
)


def register(app: typer.Typer) -> None:
    from kat.tools.outpost.models import DetectorConfig

    defaults = DetectorConfig()

    @app.command("detect")
    def detect_cmd(
        path: Path = typer.Argument(..., help="incident bundle or directory of Kineto traces"),
        json_out: bool = typer.Option(False, "--json", help="the JSON contract on stdout"),
        min_effect: float = typer.Option(defaults.min_effect, help="inter-worker minimum relative excess"),
        z: float = typer.Option(defaults.z, help="robust z-score threshold"),
        intra_effect: float = typer.Option(defaults.intra_effect, help="intra-worker minimum relative excess"),
        arrival_share: float = typer.Option(defaults.arrival_share, help="share of collectives a late rank reaches last"),
        fdr: float = typer.Option(defaults.fdr, help="false discovery rate over all rank-level tests (Benjamini-Hochberg)"),
        min_effect_ms: float = typer.Option(defaults.min_effect_ms, help="minimum material effect, ms over the episode"),
        min_device_effect_ms: float = typer.Option(
            defaults.min_device_effect_ms, help="minimum material effect of device-timed work (kernels, copies), ms"
        ),
        min_effect_share: float = typer.Option(defaults.min_effect_share, help="minimum material effect, share of step time"),
        annotate: Path | None = typer.Option(
            None, "--annotate", help="also write OUT.json[.gz]: all ranks in one Chrome trace + a KAT findings track"
        ),
        cluster: str | None = CLUSTER_OPTION,
        cluster_workers: int | None = CLUSTER_WORKERS_OPTION,
    ) -> None:
        """Find anomalous kernels/ops, pinned to a worker, a window and a component."""
        from rich.console import Console
        from rich.table import Table

        from kat.tools.telemetry import BundleError

        err = Console(stderr=True, soft_wrap=True)
        try:
            cfg = DetectorConfig(
                min_effect=min_effect,
                z=z,
                intra_effect=intra_effect,
                arrival_share=arrival_share,
                fdr=fdr,
                min_effect_ms=min_effect_ms,
                min_device_effect_ms=min_device_effect_ms,
                min_effect_share=min_effect_share,
            )
        except ValueError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from exc
        try:
            if cluster is None:
                from kat.tools.outpost import detect  # pandas: not on a --cluster driver

                res = detect(path, cfg)
            else:
                from kat.tools.outpost.cluster import ClusterError, cluster_client, detect_on_cluster

                try:
                    with cluster_client(cluster, cluster_workers) as client:
                        res = detect_on_cluster(client, path, cfg, on_serial_cpu=lambda s: err.print(SERIAL_CPU_LINE.format(s)))
                except ClusterError as exc:
                    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
                    raise typer.Exit(2) from exc
        except BundleError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from exc
        if annotate is not None:
            from kat.tools.outpost.annotate import annotate_path

            try:
                note = annotate_path(path, res, annotate)
            except (BundleError, OSError) as exc:
                err.print(f"[bold red]error:[/] {exc}", highlight=False)
                raise typer.Exit(2) from exc
            err.print(note, highlight=False)
        if json_out:
            sys.stdout.write(res.model_dump_json(indent=2) + "\n")
            return
        con = Console()
        s = res.stats
        con.print(f"{s.events:,} events, {s.ranks} ranks, {s.seconds:.2f} s; groups {s.groups}")
        floor = res.noise_floor.summary if res.noise_floor and res.noise_floor.summary else ""
        if not res.anomalies:
            con.print(floor or "no significant anomaly", style="green", highlight=False, markup=False)
        else:
            if res.suspects:
                con.print("suspects (most likely culprit first):")
                for x in res.suspects:
                    con.print(f"  rank {x.rank} confidence {x.confidence:.2f}: {x.why}", highlight=False, markup=False)
            if floor:
                con.print(floor, highlight=False, markup=False)
            t = Table()
            # observed/baseline are totals over the merged occurrences, not per call; names fold, never cut
            for col in ("rank", "component", "method", "name", "steps", "obs ms (sum)", "base ms (sum)", "ratio", "effect ms", "p"):
                t.add_column(col, overflow="fold", no_wrap=not col.startswith("name"))
            for a in res.anomalies:
                steps = f"{a.steps[0]}..{a.steps[-1]}" if a.steps else "-"
                t.add_row(
                    str(a.rank),
                    a.component,
                    a.method,
                    f"{a.kind}: {a.name}",
                    steps,
                    _ms(a.observed),
                    _ms(a.baseline),
                    f"{a.ratio:.2f}",
                    "-" if a.effect_ms is None else f"{a.effect_ms:.2f}",
                    "-" if a.p_value is None else f"{a.p_value:.1e}",
                )
            con.print(t)
        for note in res.notes:
            con.print(f"note: {note}", highlight=False, markup=False)
