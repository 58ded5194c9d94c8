"""Run every (variant, case, repeat): resumable (one JSON per finished run), optionally in parallel."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from kat.evals.harness.answers import load_answer
from kat.evals.harness.models import CaseRun, Trajectory
from kat.evals.harness.variants import Variant


def result_path(out: Path, variant: str, case_id: str, repeat: int) -> Path:
    return out / "runs" / variant / case_id.replace("/", "__") / f"r{repeat}.json"


def run_unit(case_dir: str, case_id: str, variant: dict, repeat: int) -> dict:
    """One run, scored. Top-level so a spawned worker can pickle it; returns a CaseRun dict."""
    from kat.evals.harness.agent_run import run_agent
    from kat.evals.harness.scoring import score
    from kat.evals.simulate.ground_truth import load_ground_truth

    v = Variant.model_validate(variant)
    gt = load_ground_truth(Path(case_dir))
    run = CaseRun(
        case=case_id, variant=v.name, variant_key=v.key(), repeat=repeat, category=gt.category, severity=gt.severity, task=gt.task
    )
    try:
        diag, traj = run_agent(Path(case_dir), v)
        run.diagnosis, run.trajectory = diag, traj
        run.scores = score(diag, gt, load_answer(Path(case_dir)))
    except Exception as exc:  # one broken case must not end the evaluation; it is reported as an error
        run.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
        run.trajectory = Trajectory(status="error")
    return run.model_dump(mode="json")


def run_all(
    out: Path,
    cases: list[tuple[str, Path]],
    variants: list[Variant],
    repeats: int = 1,
    jobs: int = 1,
    fresh: bool = False,
    progress: Callable[[CaseRun, int, int, bool], None] | None = None,
) -> list[CaseRun]:
    """Every run's result, reading finished ones from disk unless `fresh`. progress(run, done, total, cached)."""
    units = [(v, cid, cdir, r) for v in variants for cid, cdir in cases for r in range(repeats)]
    total, done = len(units), 0
    results: list[CaseRun] = []
    todo = []
    for v, cid, cdir, r in units:
        p = result_path(out, v.name, cid, r)
        if p.exists() and not fresh:
            try:
                run = CaseRun.model_validate_json(p.read_bytes())
            except ValueError:  # a truncated file from a killed run: run it again
                todo.append((v, cid, cdir, r))
                continue
            if run.variant_key and run.variant_key != v.key():  # same name, other settings (budget, model)
                todo.append((v, cid, cdir, r))
                continue
            results.append(run)
            done += 1
            if progress:
                progress(run, done, total, True)
        else:
            todo.append((v, cid, cdir, r))

    def finish(d: dict) -> None:
        nonlocal done
        run = CaseRun.model_validate(d)
        p = result_path(out, run.variant, run.case, run.repeat)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(run.model_dump_json(indent=1))
        tmp.replace(p)  # atomic: a killed run never leaves a half-written result behind
        results.append(run)
        done += 1
        if progress:
            progress(run, done, total, False)

    if jobs <= 1 or len(todo) <= 1:
        for v, cid, cdir, r in todo:
            finish(run_unit(str(cdir), cid, v.model_dump(), r))
    else:
        # spawn, not fork: the agent stack holds threads and Outpost forks its own import pool.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futs = [pool.submit(run_unit, str(cdir), cid, v.model_dump(), r) for v, cid, cdir, r in todo]
            for f in as_completed(futs):
                finish(f.result())
    order = {(v.name, cid, r): i for i, (v, cid, _, r) in enumerate(units)}
    return sorted(results, key=lambda x: order.get((x.variant, x.case, x.repeat), 0))
