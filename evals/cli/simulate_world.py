"""`kat simulate --world N`: one large-world incident bundle (TP-8 replicas, one faulty rank)."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def simulate_world(
    scenario: str | None,
    world: int,
    seed: int,
    out: Path,
    *,
    task: str | None,
    severity: str | None,
    size: str,
    workers: int | None,
    metrics_format: str,
    json_out: bool,
) -> None:
    """Generate the bundle, or exit 2 with a one-line error naming the bad option."""
    from kat.evals.simulate.world import generate_world

    def fail(msg: str) -> None:
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(2)

    from kat.evals.simulate.categories import SEVERITIES
    from kat.evals.simulate.world import world_task

    try:
        world_task(world)
    except ValueError as exc:
        fail(str(exc))
    if task:
        fail("--world builds its own layout (TP-8 replicas); drop --task")
    if severity is not None and severity not in {s.value for s in SEVERITIES}:
        fail(f"--severity {severity!r}: valid: {', '.join(s.value for s in SEVERITIES)}")
    if not scenario:
        fail("--world needs --scenario CATEGORY")
    if workers is not None and workers < 1:
        fail(f"--workers {workers}: must be at least 1")
    t0 = time.perf_counter()
    try:
        gt = generate_world(scenario or "", world, seed, out, size=size, severity=severity, workers=workers, metrics_format=metrics_format)
    except ValueError as exc:
        fail(str(exc).splitlines()[0])
        return
    dt = time.perf_counter() - t0
    if json_out:
        typer.echo(gt.to_json().decode())
        return
    ranks = ", ".join(map(str, gt.affected_ranks)) or "-"
    typer.echo(
        f"{gt.incident_id}: {world} ranks ({world // 8} TP-8 groups), {gt.category} ({gt.component}) ranks [{ranks}] "
        f"severity {gt.severity or '-'}; {gt.events_total:,d} events in {dt:.1f}s -> {out}"
    )
