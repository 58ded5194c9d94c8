"""`make demo`: the main job end to end on data shipped in the repository.

Imports a real Kineto trace pair, then diagnoses a simulated incident (demo_data/incident, a
`kat simulate` bundle shipped as package data: the agent never imports evals/)
with the offline `rules` Analyzer, showing every tool call as it happens.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
SAMPLE_TRACES = DEMO_DATA / "sample-traces"
DEMO_INCIDENT = DEMO_DATA / "incident"


def run_demo(console: Console) -> int:
    from kat.tools.telemetry.summary import bundle_summary

    if SAMPLE_TRACES.exists():
        console.rule("KAT demo 1/2: import real Kineto traces (2 ranks of a 128-rank NCCL job)")
        summary = bundle_summary(SAMPLE_TRACES)
        for rank, s in summary["ranks"].items():
            console.print(
                f"rank {rank}: {s['events']:,} events, steps {s['steps']}, {s['collectives']} collective kernels, kinds {s['kinds']}"
            )
    console.rule("KAT demo 2/2: diagnose a simulated incident with the offline `rules` Analyzer")
    from kat.agent.render import print_diagnosis
    from kat.agent.session import ProgressEvent, Session

    t0 = time.time()
    s = Session(DEMO_INCIDENT, "rules")
    console.print(f"incident: {s.ctx.bundle.manifest.id}: {s.ctx.bundle.manifest.symptom}", highlight=False)

    def show(ev: ProgressEvent) -> None:
        if ev.kind in ("tool_call", "accepted", "rejected", "partial"):
            console.print(f"  {'->' if ev.kind == 'tool_call' else '  '} {ev.text}", highlight=False, markup=False)

    try:
        d = s.diagnose(on_event=show)
    finally:
        s.close()
    print_diagnosis(console, d)
    console.print(f"diagnosed in {time.time() - t0:.1f} s")
    return 0 if d.status != "partial" else 1
