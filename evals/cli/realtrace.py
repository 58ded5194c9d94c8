"""`kat realtrace`: genuine torch.profiler traces of a 4-rank gloo TP decode run, with a fault."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kat.evals.realtrace.models import FaultKind


def _parse_steps(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError as exc:
        raise typer.BadParameter(f"expected A:B (half-open step range), got {text!r}") from exc
    return a, b


def register(app: typer.Typer) -> None:
    @app.command("realtrace")
    def realtrace_cmd(
        out: Path = typer.Option(..., "--out", help="bundle directory to write (a suite writes one per case inside)"),
        fault: FaultKind = typer.Option(FaultKind.NONE, "--fault", help="fault to inject"),
        rank: int = typer.Option(2, "--rank", help="rank the fault hits"),
        steps: str = typer.Option("8:14", "--steps", help="profiler steps A:B (half-open, like a Python slice)"),
        world: int = typer.Option(4, "--world", help="number of rank processes"),
        seed: int = typer.Option(0, "--seed"),
        num_steps: int = typer.Option(20, "--num-steps", help="profiled steps (ProfilerStep#1..#N)"),
        severity: float = typer.Option(None, "--severity", help="fault strength (default per fault; see ground_truth.json)"),
        suite: str = typer.Option(None, "--suite", help="generate a named suite instead: tiny, small, standard"),
        json_out: bool = typer.Option(False, "--json", help="print the case summary as JSON"),
    ) -> None:
        """Run a real multi-process torch.distributed (gloo, CPU) decode workload under torch.profiler and
        write an incident bundle: traces/rank-<r>.json.gz, incident.json, ground_truth.json."""
        from pydantic import ValidationError

        from kat.evals.realtrace.case import generate_case
        from kat.evals.realtrace.launcher import RealTraceError
        from kat.evals.realtrace.models import RealTraceConfig
        from kat.evals.realtrace.suite import generate_suite

        try:
            if suite:
                results = generate_suite(suite, out, seed=seed, world=world)
            else:
                cfg = RealTraceConfig(
                    fault=fault, rank=rank, steps=_parse_steps(steps), world=world, seed=seed, num_steps=num_steps, severity=severity
                )
                results = [generate_case(cfg, out)]
        except (ValidationError, ValueError, RealTraceError) as exc:
            msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(2) from None
        if json_out:
            import orjson

            rows = [
                {
                    "id": r.case_id,
                    "out": str(r.out),
                    "seconds": r.seconds,
                    "trace_bytes": r.trace_bytes,
                    "events": r.trace_events,
                    "fault": r.fault.value,
                    "ranks": r.ground_truth.affected_ranks,
                    "signature_ok": r.signature_ok,
                }
                for r in results
            ]
            sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
            return
        for r in results:
            gt = r.ground_truth
            span = gt.affected_steps[:1] + gt.affected_steps[-1:]
            typer.echo(
                f"{r.case_id}: {r.fault.value} ({gt.category}/{gt.component}) ranks={gt.affected_ranks} steps={span} "
                f"{r.seconds:.1f}s {r.trace_bytes / 1e6:.2f} MB {sum(r.trace_events.values())} events -> {r.out}"
            )
            if r.signature is not None:
                mark = "ok" if r.signature_ok else "WARNING: not as injected"
                typer.echo(f"  signature {mark}: {r.signature.detail}")
