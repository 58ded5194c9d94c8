"""`kat simulate`: write simulated incident bundles (one, or a whole suite)."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def simulate(
    out: Path | None = typer.Option(None, "--out", "-o", help="output directory (one bundle, or one sub-directory per suite case)"),
    scenario: str | None = typer.Option(None, "--scenario", "-s", help="fault category, 'none' or 'workload_shift'"),
    task: str | None = typer.Option(None, "--task", "-t", help="task configuration name (see --list-tasks)"),
    seed: int = typer.Option(0, "--seed", help="random seed; the same seed gives a byte-identical bundle"),
    severity: str | None = typer.Option(None, "--severity", help="mild | moderate | severe (default: drawn from the seed)"),
    size: str | None = typer.Option(
        None, "--size", help="tiny | small | medium | large (large: >= 10M events); default small, tiny with --world"
    ),
    suite: str | None = typer.Option(None, "--suite", help="generate a whole suite (demo, smoke, standard, detection)"),
    list_tasks: bool = typer.Option(False, "--list-tasks", help="list task configurations and exit"),
    json_out: bool = typer.Option(False, "--json", help="print the ground truth (or suite index) as JSON"),
    metrics_format: str = typer.Option("parquet", "--metrics-format", help="parquet | csv (RFC 3339 timestamps)"),
    workers: int | None = typer.Option(None, "--workers", help="processes writing traces (default: auto, >1 only for big runs)"),
    world: int | None = typer.Option(None, "--world", help="N ranks as N/8 TP-8 replicas, one host each, one faulty rank (no --task)"),
) -> None:
    """Generate simulated LMDI incidents with known root causes (traces, metrics, logs, ground truth)."""
    from kat.evals.simulate.tasks import load_tasks

    if list_tasks:
        for name, t in load_tasks().items():
            typer.echo(f"{name:45s} {t.description}")
        raise typer.Exit(0)
    if out is None:
        raise typer.BadParameter("--out DIR is required")
    if suite:
        from kat.evals.simulate.suites import SuiteCase, generate_suite

        t0 = time.perf_counter()

        def progress(c: SuiteCase) -> None:
            if not json_out:
                typer.echo(f"  {c.id:40s} {c.task:45s} {c.events:>10,d} events {c.seconds:6.2f}s")

        cases = generate_suite(suite, out, progress=progress)
        if json_out:
            typer.echo((out / "suite.json").read_text())
        else:
            typer.echo(f"suite {suite}: {len(cases)} incidents in {time.perf_counter() - t0:.1f}s -> {out}")
        return
    if world is not None:
        from kat.evals.cli.simulate_world import simulate_world

        simulate_world(
            scenario,
            world,
            seed,
            out,
            task=task,
            severity=severity,
            size=size or "tiny",
            workers=workers,
            metrics_format=metrics_format,
            json_out=json_out,
        )
        return
    if not scenario or not task:
        raise typer.BadParameter("give --scenario and --task (or --suite NAME, or --world N)")
    from kat.evals.simulate.generate import generate_incident

    t0 = time.perf_counter()
    try:
        gt = generate_incident(
            scenario, task, seed, out, severity=severity, size=size or "small", workers=workers, metrics_format=metrics_format
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    dt = time.perf_counter() - t0
    if json_out:
        typer.echo(gt.to_json().decode())
    else:
        ranks = ", ".join(map(str, gt.affected_ranks)) or "-"
        typer.echo(
            f"{gt.incident_id}: {gt.category} ({gt.component}) ranks [{ranks}] severity {gt.severity or '-'}; "
            f"{gt.events_total:,d} events in {dt:.2f}s ({gt.events_total / max(dt, 1e-9):,.0f} events/s) -> {out}"
        )


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
