"""Generate one real-trace incident bundle: run the ranks, then write incident.json and truth."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from pydantic import BaseModel

from kat.evals.realtrace.launcher import launch
from kat.evals.realtrace.models import FaultKind, RealTraceConfig, RunReport
from kat.evals.realtrace.signatures import SignatureCheck, check_signature
from kat.evals.realtrace.trace_steps import step_spans
from kat.evals.realtrace.truth import build_ground_truth, step_ms
from kat.evals.simulate.ground_truth import GroundTruth, rfc3339, write_ground_truth


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
    def fault(self) -> FaultKind:
        return FaultKind(self.ground_truth.parameters["fault"])

    @property
    def signature_ok(self) -> bool:
        """The fault is visible (or, for `none`, no fault signature fired)."""
        if self.signature is None:
            return True
        return self.signature.present != (self.fault is FaultKind.NONE)


def _symptom(run: RunReport, window_start_ns: int | None) -> str:
    """What an on-call engineer would file, from the measured step times (never names the cause)."""
    cfg = run.config
    fault_set = set(cfg.fault_steps)
    healthy = step_ms(run, fault_set, inside=False)
    if not fault_set:
        return (
            f"Routine profile of a {cfg.world}-way tensor-parallel decode group: median step time {healthy} ms "
            f"over {cfg.num_steps} profiled steps; is anything wrong?"
        )
    faulty = step_ms(run, fault_set, inside=True)
    when = rfc3339(window_start_ns)[11:23] if window_start_ns else "mid-run"
    return (
        f"Decode step time of the {cfg.world}-way tensor-parallel group went from about {healthy} ms to "
        f"{faulty} ms for a while from {when} UTC."
    )


def _manifest(run: RunReport, case_id: str, truth: GroundTruth) -> dict:
    cfg, sh = run.config, run.config.shape
    hosts = sorted({r.host for r in run.ranks})
    return {
        "id": case_id,
        "title": f"real trace: {cfg.world}-rank gloo TP decode" + ("" if cfg.fault is FaultKind.NONE else ", step time up"),
        "symptom": truth.symptom,
        "window": {"start": rfc3339(run.start_ns), "end": rfc3339(run.end_ns)},
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
    cfg = run.config
    spans = {r.rank: step_spans(out / "traces" / r.trace_file) for r in run.ranks}
    own = spans.get(cfg.rank, {})
    start = own.get(cfg.fault_steps[0], (None,))[0] if cfg.fault_steps else None
    truth = build_ground_truth(run, case_id, spans, _symptom(run, start))
    (out / "incident.json").write_bytes(orjson.dumps(_manifest(run, case_id, truth), option=orjson.OPT_INDENT_2))
    write_ground_truth(truth, out)
    return truth


def verify_case(out: Path, run: RunReport) -> tuple[SignatureCheck, dict[int, int]]:
    """Load the bundle the way every tool does and measure the injected signature in it."""
    from kat.tools.telemetry import open_bundle

    events = open_bundle(out).all_events()
    counts = {int(r): int(n) for r, n in events.groupby("rank", observed=True).size().items()}
    return check_signature(events, run.config, run.pinning), counts


def generate_case(cfg: RealTraceConfig, out: Path | str, *, verify: bool = True) -> CaseResult:
    """Run one real multi-process case into `out` (a bundle dir with traces/) and describe it.

    With `verify`, the bundle is loaded with `open_bundle` and the fault's signature measured;
    the measurement goes into ground_truth.json (`parameters.signature_*`) so a case whose
    fault drowned in noise can be spotted (`CaseResult.signature_ok`).
    """
    out = Path(out)
    t0 = time.monotonic()
    run = launch(cfg, out / "traces")
    truth = write_bundle(run, out, cfg.name())
    seconds = round(time.monotonic() - t0, 2)
    sig: SignatureCheck | None = None
    counts: dict[int, int] = {}
    if verify:
        sig, counts = verify_case(out, run)
        truth.parameters.update(
            {
                "signature_value": round(sig.value, 3),
                "signature_threshold": sig.threshold,
                "signature_present": int(sig.present),
                "signature_detail": sig.detail,
            }
        )
        truth.events_total = sum(counts.values())
        write_ground_truth(truth, out)
    size = sum(p.stat().st_size for p in (out / "traces").iterdir() if p.is_file())
    return CaseResult(
        out=out, case_id=cfg.name(), seconds=seconds, trace_bytes=size, trace_events=counts, ground_truth=truth, signature=sig
    )


__all__ = ["CaseResult", "generate_case", "verify_case", "write_bundle"]
