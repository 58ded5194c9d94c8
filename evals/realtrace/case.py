"""Generate one real-trace incident bundle: run the ranks, then write incident.json and truth."""
from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from evals.realtrace.launcher import launch
from evals.realtrace.models import FaultKind, GroundTruth, RealTraceConfig, RunReport
from evals.realtrace.signatures import SignatureCheck, check_signature
from evals.realtrace.trace_steps import step_spans
from evals.realtrace.truth import build_ground_truth, iso, step_ms


class CaseResult(BaseModel):
    """Where a generated case went and what it cost."""

    out: Path
    case_id: str
    seconds: float
    trace_bytes: int
    trace_events: dict[int, int]
    ground_truth: GroundTruth
    signature: SignatureCheck | None = None

    @property
    def signature_ok(self) -> bool:
        """The fault is visible (or, for `none`, no fault signature fired)."""
        if self.signature is None:
            return True
        return self.signature.present != (self.ground_truth.fault is FaultKind.NONE)


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


def _write_truth(out: Path, truth: GroundTruth) -> None:
    import orjson

    (out / "ground_truth.json").write_bytes(orjson.dumps(truth.model_dump(mode="json"), option=orjson.OPT_INDENT_2))


def write_bundle(run: RunReport, out: Path, case_id: str) -> GroundTruth:
    """incident.json + ground_truth.json beside the traces the ranks already wrote."""
    import orjson

    cfg = run.config
    spans = None
    if cfg.fault is not FaultKind.NONE:
        trace = out / "traces" / next(r.trace_file for r in run.ranks if r.rank == cfg.rank)
        spans = step_spans(trace)
    truth = build_ground_truth(run, case_id, spans)
    (out / "incident.json").write_bytes(orjson.dumps(_manifest(run, case_id, truth), option=orjson.OPT_INDENT_2))
    _write_truth(out, truth)
    return truth


def verify_case(out: Path, run: RunReport) -> tuple[SignatureCheck, dict[int, int]]:
    """Load the bundle the way every tool does and measure the injected signature in it."""
    from tools.telemetry import open_bundle

    bundle = open_bundle(out)
    events = bundle.all_events()
    counts = {int(r): int(n) for r, n in events.groupby("rank", observed=True).size().items()}
    return check_signature(events, run.config, run.pinning), counts


def generate_case(cfg: RealTraceConfig, out: Path | str, *, verify: bool = True) -> CaseResult:
    """Run one real multi-process case into `out` (a bundle dir with traces/) and describe it.

    With `verify`, the bundle is loaded with `open_bundle` and the fault's signature measured;
    the measurement goes into ground_truth.json (`run.signature`) so a case whose fault drowned
    in noise can be spotted (`CaseResult.signature_ok`).
    """
    out = Path(out)
    t0 = time.monotonic()
    run = launch(cfg, out / "traces")
    truth = write_bundle(run, out, cfg.name())
    seconds = round(time.monotonic() - t0, 2)
    sig, counts = None, {}
    if verify:
        sig, counts = verify_case(out, run)
        truth.run["signature"] = sig.model_dump(mode="json")
        truth.run["events_per_rank"] = counts
        _write_truth(out, truth)
    size = sum(p.stat().st_size for p in (out / "traces").iterdir() if p.is_file())
    return CaseResult(out=out, case_id=cfg.name(), seconds=seconds, trace_bytes=size, trace_events=counts,
                      ground_truth=truth, signature=sig)


__all__ = ["CaseResult", "generate_case", "verify_case", "write_bundle", "step_ms"]
