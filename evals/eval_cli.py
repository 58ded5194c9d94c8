"""`kat eval SUITE`: scripted evaluation runs.

SUITE `detection` scores Outpost against generated ground truth; `kb` scores knowledge
retrieval; other suites (agent diagnoses) are run by the diagnosis harness once it exists.
"""
from __future__ import annotations

import sys
from pathlib import Path

import typer


def _print_detection(report, console) -> None:  # noqa: ANN001
    from rich.table import Table

    t = Table(title=f"Outpost detection — {len(report.cases)} cases, {report.events:,} events, {report.seconds:.1f} s")
    for col in ("category", "cases", "precision", "recall", "F1", "rank P", "rank R", "false alarms", "culprit top-1"):
        t.add_column(col, justify="right" if col != "category" else "left")

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = list(report.per_category.items()) + [("OVERALL", report.overall)]
    for name, s in rows:
        t.add_row(name, str(s.cases), fmt(s.precision), fmt(s.recall), fmt(s.f1), fmt(s.rank_precision),
                  fmt(s.rank_recall), fmt(s.false_alarm_rate), fmt(s.culprit_top1))
    console.print(t)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        suite: str = typer.Argument(..., help="detection | kb | a generated suite name | a directory of bundles"),
        cases: Path | None = typer.Option(None, "--cases", help="directory of generated bundles (default: generate SUITE into --out)"),
        out: Path = typer.Option(Path("reports"), "--out", help="where generated cases and reports go"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable report on stdout"),
    ) -> None:
        """Run a scripted evaluation and print its scores."""
        from rich.console import Console

        console = Console(stderr=json_out)
        if suite == "kb":
            from knowledge.cli import print_eval

            raise typer.Exit(print_eval(json_out=json_out))
        if suite == "detection" or (cases is None and Path(suite).is_dir()):
            from evals.detection import evaluate_detection

            root = cases or (Path(suite) if Path(suite).is_dir() else out / "cases" / suite)
            if not root.exists():
                from evals.simulate import generate_suite

                console.print(f"generating suite {suite!r} into {root} ...")
                generate_suite(suite, root)
            report = evaluate_detection(root, progress=lambda c: console.print(
                f"  {c.case}: {c.true_positive}/{c.reported} matching, found={c.expected_found}", highlight=False))
            if json_out:
                sys.stdout.write(report.model_dump_json(indent=2) + "\n")
            else:
                _print_detection(report, console)
            return
        console.print(f"[red]error:[/] suite {suite!r}: diagnosis evaluation is not available yet (try detection or kb)")
        raise typer.Exit(2)
