"""`kat eval SUITE`: scripted evaluation runs.

SUITE `detection` scores Outpost against generated ground truth and `kb` scores knowledge
retrieval (unchanged); every other suite name (smoke, standard, demo, real, ...) or a directory
of bundles with ground_truth.json runs the agent on each case and scores its Diagnosis
(evals/harness). Use `--cases DIR --detector` to score Outpost on a directory instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kat.tools.outpost.cli import CLUSTER_OPTION, CLUSTER_WORKERS_OPTION

if TYPE_CHECKING:  # imported lazily at run time: `kat --help` stays fast
    from collections.abc import Callable

    from rich.console import Console

    from kat.evals.detection import DetectionReport
    from kat.evals.harness.models import CaseRun
    from kat.tools.outpost.models import DetectionResult, DetectorConfig


def _print_detection(report: DetectionReport, console: Console) -> None:
    from rich.table import Table

    t = Table(title=f"Outpost detection — {len(report.cases)} cases, {report.events:,} events, {report.seconds:.1f} s")
    for col in ("category", "cases", "precision", "recall", "F1", "rank P", "rank R", "false alarms", "culprit top-1"):
        t.add_column(col, justify="right" if col != "category" else "left")

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = list(report.per_category.items()) + [("OVERALL", report.overall)]
    for name, s in rows:
        t.add_row(
            name,
            str(s.cases),
            fmt(s.precision),
            fmt(s.recall),
            fmt(s.f1),
            fmt(s.rank_precision),
            fmt(s.rank_recall),
            fmt(s.false_alarm_rate),
            fmt(s.culprit_top1),
        )
    console.print(t)


def _run_detection(
    suite: str,
    cases: Path | None,
    out: Path,
    json_out: bool,
    console: Console,
    cluster: str | None = None,
    cluster_workers: int | None = None,
) -> None:
    """Score Outpost on SUITE, in this process or (`cluster`) with its work on Dask."""
    if cluster is not None:
        from kat.tools.outpost.cluster import ClusterError, cluster_client, detect_on_cluster

        try:
            with cluster_client(cluster, cluster_workers) as client:
                _score_detection(suite, cases, out, json_out, console, lambda p, cfg: detect_on_cluster(client, p, cfg))
        except ClusterError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from exc
        return
    _score_detection(suite, cases, out, json_out, console)


def _score_detection(
    suite: str,
    cases: Path | None,
    out: Path,
    json_out: bool,
    console: Console,
    detector: Callable[[Path, DetectorConfig | None], DetectionResult] | None = None,
) -> None:
    from kat.evals.detection import CaseScore, evaluate_detection

    root = cases or (Path(suite) if Path(suite).is_dir() else out / "cases" / suite)
    if not root.exists():
        from kat.evals.simulate import generate_suite

        console.print(f"generating suite {suite!r} into {root} ...")
        generate_suite(suite, root)

    def progress(c: CaseScore) -> None:
        console.print(f"  {c.case}: {c.true_positive}/{c.reported} matching, found={c.expected_found}", highlight=False)

    if detector is not None:
        report = evaluate_detection(root, progress=progress, detector=detector)
    else:
        report = evaluate_detection(root, progress=progress)
    if json_out:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        _print_detection(report, console)


def _llm_reachable(base_url: str | None) -> str | None:
    """None when an OpenAI-compatible server answers /models, else why not (a quick probe, 3 s)."""
    import urllib.error
    import urllib.request

    from kat.knowledge.settings import settings

    url = (base_url or settings().openai_base_url).rstrip("/") + "/models"
    try:
        urllib.request.urlopen(url, timeout=3).read(64)  # noqa: S310 - a user-given local endpoint
        return None
    except urllib.error.HTTPError:  # it answered, if not on /models: the server is up
        return None
    except Exception as exc:  # any failure means: skip that variant, say why
        return f"{url}: {type(exc).__name__}: {exc}"


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        suite: str = typer.Argument(..., help="detection | kb | smoke | standard | demo | real | a directory of bundles"),
        cases: Path | None = typer.Option(None, "--cases", help="bundles to use (default: generate SUITE into OUT/cases/SUITE once)"),
        out: Path = typer.Option(Path("reports"), "--out", help="where generated cases, per-run results and the report go"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable report on stdout (progress goes to stderr)"),
        analyzer: str = typer.Option("rules", "--analyzer", help="rules | openai | llamacpp"),
        base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (openai analyzer / llm ablation)"),
        model: str | None = typer.Option(None, "--model", help="model name (openai) or GGUF path (llamacpp)"),
        repeats: int = typer.Option(1, "--repeats", min=1, help="runs per case; >1 classifies stable/flaky pass/fail"),
        jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="cases run in parallel (processes)"),
        ablation: str | None = typer.Option(None, "--ablation", help="comma list: no-outpost, no-knowledge, llm, analyzer=NAME"),
        ablations: bool = typer.Option(False, "--ablations", help="baseline + every ablation (llm only if reachable)"),
        llm_analyzer: str = typer.Option("openai", "--llm-analyzer", help="backend of the 'llm' ablation"),
        max_steps: int = typer.Option(24, "--max-steps", help="Analyzer step budget per case"),
        time_budget: float = typer.Option(300.0, "--time-budget", help="seconds per case"),
        fresh: bool = typer.Option(False, "--fresh", help="ignore finished per-case results and run everything again"),
        detector: bool = typer.Option(False, "--detector", help="score Outpost detection instead of the agent"),
        with_detection: bool = typer.Option(False, "--with-detection", help="also score Outpost alone on the same cases"),
        cluster: str | None = CLUSTER_OPTION,
        cluster_workers: int | None = CLUSTER_WORKERS_OPTION,
    ) -> None:
        """Run a scripted evaluation: score diagnoses (or detection / knowledge retrieval) and write a report."""
        from rich.console import Console

        console = Console(stderr=json_out)
        if suite == "kb":
            from kat.agent.cli.kb import print_eval

            raise typer.Exit(print_eval(json_out=json_out))
        if suite == "detection" or detector:
            _run_detection(suite, cases, out, json_out, console, cluster, cluster_workers)
            return

        from kat.evals.harness import cases as case_src
        from kat.evals.harness import report as rep_mod
        from kat.evals.harness.runner import run_all
        from kat.evals.harness.variants import ABLATIONS, LLM_ABLATION, Variant, ablation_variants, base_variant

        say = lambda s: console.print(s, highlight=False, soft_wrap=True)  # noqa: E731
        try:
            label, root = case_src.resolve(suite, out, cases, say)
        except ValueError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from None
        found = case_src.list_cases(root)
        if not found:
            console.print(f"[red]error:[/] no bundle with ground_truth.json under {root}")
            raise typer.Exit(2)

        notes: list[str] = []
        base = base_variant(analyzer, base_url, model).model_copy(update={"max_steps": max_steps, "time_budget_s": time_budget})
        llm = None
        if analyzer == "rules":
            llm = base_variant(llm_analyzer, base_url, model).model_copy(update={"max_steps": max_steps, "time_budget_s": time_budget})
        names = [n for n in (ablation or "").split(",") if n.strip()]
        if ablations:
            names = list(ABLATIONS) + ([LLM_ABLATION] if llm else [])
        if LLM_ABLATION in names and llm is not None and llm.analyzer == "openai":
            why = _llm_reachable(base_url)
            if why:  # an unreachable server would fail every case: skip the variant and say so
                names.remove(LLM_ABLATION)
                notes.append(f"llm ablation skipped: no OpenAI-compatible server ({why})")
                say(f"[yellow]note:[/] {notes[-1]}")
        try:
            variants: list[Variant] = ablation_variants(base, names, llm)
        except ValueError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from None

        total = len(found) * len(variants) * repeats
        say(
            f"{label}: {len(found)} cases x {len(variants)} variant(s) x {repeats} repeat(s) = {total} runs, "
            f"{jobs} job(s); results in {out / 'runs'}"
        )

        def progress(run: CaseRun, done: int, total: int, cached: bool) -> None:
            sc = run.scores
            mark = "[green]pass[/]" if sc and sc.passed else "[red]FAIL[/]"
            what = (
                f"error: {(run.error or '').splitlines()[0][:80]}"
                if run.error
                else f"{run.category} -> {sc.predicted} ranks {sc.ranks_predicted}"
                if sc
                else f"{run.category}: not scored"
            )
            say(
                f"[{done}/{total}] {mark} {run.variant} {run.case} r{run.repeat}: {what} "
                f"({'cached' if cached else f'{run.trajectory.wall_s:.1f} s'})"
            )

        runs = run_all(out, found, variants, repeats=repeats, jobs=jobs, fresh=fresh, progress=progress)
        det = None
        if with_detection:
            from kat.evals.detection import evaluate_detection

            say("scoring Outpost detection on the same cases ...")
            det = evaluate_detection(
                root, progress=lambda c: say(f"  detection {c.case}: {c.true_positive}/{c.reported} matching ({c.seconds:.1f} s)")
            ).model_dump(mode="json", exclude={"cases"})
        report = rep_mod.build(label, root, len(found), repeats, variants, runs, notes, det)
        md, js = rep_mod.write(report, out)
        if json_out:
            sys.stdout.write(report.model_dump_json(indent=1, exclude={"runs"}) + "\n")
        else:
            for line in rep_mod.headline(report):  # the Markdown table itself: wide, so never wrapped
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            say(f"report: {md}  (json: {js}, plots: {out / 'plots'})")
