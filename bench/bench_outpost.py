"""Import + detection end to end: KAT (open_bundle + Outpost) vs HTA (TraceAnalysis +
get_potential_stragglers) on the same simulated multi-rank Kineto traces at 1M, 3M and 10M
events, each tool in a fresh process. Shows cost per event (linearity) and the ratios."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.bench_import import hta
from bench.measure import measure, median_runs

WORK = Path(os.environ.get("KAT_BENCH_DIR", Path(tempfile.gettempdir()) / "kat-bench"))
TASK = "vllm-l70b-tp8-h100-decode-eager"
TARGETS = {"1M": 1_000_000, "3M": 3_000_000, "10M": 10_000_000}
REPEATS = int(os.environ.get("KAT_BENCH_OUTPOST_REPEATS", "3"))  # runs of each tool per case up to REPEAT_UP_TO events
REPEAT_UP_TO = 3_000_000


# HTA 0.5's straggler analysis only recognises NCCL kernels by the names NCCL printed before
# 2.19 (ncclKernel_*); the bench traces say they come from NCCL 2.18 so both tools can work.
NCCL_VERSION = "2.18.5"


# HTA's get_potential_stragglers only looks at communication kernels longer than 1% of an
# iteration; in LLM decode the all-reduces are a few microseconds unless a peer stalls, so the
# bench incident is a runtime stall (one worker pauses for tens of ms; its peers wait).
CATEGORY = "runtime_stall"


def make_case(label: str, target: int) -> tuple[Path, int]:
    """A runtime-stall incident of about `target` events (plain JSON traces), cached."""
    from kat.evals.simulate import generate_incident, load_ground_truth
    from kat.evals.simulate.sizes import SIZES, Size

    out = WORK / f"outpost-{CATEGORY}-{label}-nccl{NCCL_VERSION}"
    if (out / "ground_truth.json").exists():
        return out, load_ground_truth(out / "ground_truth.json").events_total
    name = f"bench-{label}"
    SIZES[name] = Size(name=name, max_layers=None, target_events=target, lead_s=30, tail_s=10, compress=False, nccl_version=NCCL_VERSION)
    gt = generate_incident(CATEGORY, TASK, 7, out, size=name)
    return out, gt.events_total


def kat_setup() -> None:
    # Library imports are not timed, for either tool (the package loads its detector lazily).
    import kat.tools.outpost.detector  # noqa: F401
    import kat.tools.telemetry.bundle  # noqa: F401


def kat_run(path: str) -> dict:
    from kat.tools.outpost import detect
    from kat.tools.telemetry.bundle import open_bundle

    cache = tempfile.mkdtemp(prefix="kat-bench-cache-")
    try:
        res = detect(open_bundle(path, cache_dir=cache))
        return {"suspects": res.suspect_ranks[:2], "anomalies": len(res.anomalies)}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run(labels: list[str] | None = None, with_hta: bool = True) -> dict:
    rows = []
    for label in labels or list(TARGETS):
        path, events = make_case(label, TARGETS[label])
        # Shared machines are noisy: the smaller cases are run several times, the two tools taking
        # turns (so a busy minute hits both), and the medians compared.
        repeats = REPEATS if TARGETS[label] <= REPEAT_UP_TO else 1
        ours_runs, their_runs = [], []
        for _ in range(repeats):
            ours_runs.append(measure(kat_run, str(path), setup=kat_setup))
            if with_hta:
                their_runs.append(hta("stragglers", str(path / "traces")))
        ours = median_runs(ours_runs)
        theirs = median_runs(their_runs) if with_hta else None
        row = {
            "case": label,
            "events": events,
            "repeats": repeats,
            "kat_s": round(ours.seconds, 2),
            "kat_peak_mb": round(ours.peak_mb),
            "kat_us_per_event": round(ours.seconds / events * 1e6, 3),
            "kat_result": ours.result,
            "kat_error": ours.error,
        }
        if theirs is not None:
            row.update(
                {
                    "hta_s": round(theirs.seconds, 2),
                    "hta_peak_mb": round(theirs.peak_mb),
                    "hta_result": theirs.result,
                    "hta_error": theirs.error,
                    "speedup": round(theirs.seconds / ours.seconds, 2) if not theirs.error else None,
                    "memory_ratio": round(ours.peak_mb / theirs.peak_mb, 3) if not theirs.error else None,
                }
            )
        rows.append(row)
        print(
            f"[outpost] {label}: {events:,} events, median of {repeats} | KAT import+detect {row['kat_s']} s "
            f"({row['kat_us_per_event']} us/event) {row['kat_peak_mb']} MB -> {row['kat_result'] or row['kat_error']}"
            + (
                f" | HTA load+stragglers {row['hta_s']} s {row['hta_peak_mb']} MB -> {row['hta_result'] or row['hta_error']}"
                f" | {row['speedup']}x faster, memory {row['memory_ratio']}x"
                if theirs is not None
                else ""
            ),
            flush=True,
        )
    return {"outpost": rows}


if __name__ == "__main__":
    run(sys.argv[1:] or None)
