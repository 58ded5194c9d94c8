"""Generate one real-trace incident bundle: run the ranks, then write incident.json and truth."""
from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from evals.realtrace.launcher import launch
from evals.realtrace.models import FaultKind, GroundTruth, RealTraceConfig, RunReport
from evals.realtrace.trace_steps import step_spans
from evals.realtrace.truth import build_ground_truth, iso, step_ms


class CaseResult(BaseModel):
    """Where a generated case went and what it cost."""

    out: Path
    case_id: str
    seconds: float
    trace_bytes: int
    ground_truth: GroundTruth


def _manifest(run: RunReport, case_id: str, truth: GroundTruth) -> dict:
    cfg = run.config
    hosts = sorted({r.host for r in run.ranks})
    healthy, faulty = truth.run.get("step_ms_outside_window"), truth.run.get("step_ms_inside_window")
    if cfg.fault is FaultKind.NONE or faulty is None:
        symptom = (f"Routine check of a {cfg.world}-way tensor-parallel decode group: median step time "
                   f"{healthy} ms over {cfg.num_steps} profiled steps; is anything wrong?")
    else:
        symptom = (f"Decode step time of the {cfg.world}-way tensor-parallel group went from about {healthy} ms "
                   f"to {faulty} ms for a while around {iso(truth.window.start_ns) if truth.window else 'mid-run'}.")
    sh = cfg.shape
    return {
        "id": case_id,
        "title": f"real trace: {cfg.world}-rank gloo TP decode ({cfg.fault.value})" if cfg.fault is FaultKind.NONE
        else f"real trace: {cfg.world}-rank gloo TP decode, step time up",
        "symptom": symptom,
        "window": {"start": iso(run.start_ns), "end": iso(run.end_ns)},
        "model": f"tp-decode-toy ({sh.layers} layers, hidden {sh.hidden}, intermediate {sh.intermediate})",
        "framework": "torch.distributed (gloo, CPU) + torch.profiler",
        "generator": "kat realtrace",
        "topology": {
            "hosts": [{"name": h, "gpus": []} for h in hosts],
            "workers": [{"rank": r.rank, "host": r.host, "pid": r.pid, "cores": r.cores} for r in run.ranks],
            "groups": {"tp": [list(range(cfg.world))], "pp": [], "dp": []},
        },
    }


def write_bundle(run: RunReport, out: Path, case_id: str) -> GroundTruth:
    """incident.json + ground_truth.json beside the traces the ranks already wrote."""
    import orjson

    cfg = run.config
    spans = None
    if cfg.fault is not FaultKind.NONE:
        trace = out / "traces" / next(r.trace_file for r in run.ranks if r.rank == cfg.rank)
        spans = step_spans(trace)
    truth = build_ground_truth(run, case_id, spans)
    opts = orjson.OPT_INDENT_2
    (out / "incident.json").write_bytes(orjson.dumps(_manifest(run, case_id, truth), option=opts))
    (out / "ground_truth.json").write_bytes(orjson.dumps(truth.model_dump(mode="json"), option=opts))
    return truth


def generate_case(cfg: RealTraceConfig, out: Path | str) -> CaseResult:
    """Run one real multi-process case into `out` (a bundle dir with traces/) and describe it."""
    out = Path(out)
    t0 = time.monotonic()
    run = launch(cfg, out / "traces")
    truth = write_bundle(run, out, cfg.name())
    size = sum(p.stat().st_size for p in (out / "traces").iterdir() if p.is_file())
    return CaseResult(out=out, case_id=cfg.name(), seconds=round(time.monotonic() - t0, 2), trace_bytes=size,
                      ground_truth=truth)


__all__ = ["CaseResult", "generate_case", "write_bundle", "step_ms"]
